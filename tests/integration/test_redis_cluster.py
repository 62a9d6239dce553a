"""The whole loop on a real local Redis Cluster (3 masters + 3 replicas), and a master kill.

One cluster serves the session (``tests/cluster_fixtures.py``); the state code is the one
that runs on a single Redis, chosen by asking the server (``INFO cluster``).
"""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import Iterator

import pytest
from flask import Flask
from redis.cluster import RedisCluster
from redis.crc import key_slot

from api import create_app
from core.settings import Settings
from infra.bootstrap import build_state_store
from infra.redis_keys import GLOBAL_TAG
from scripts.redis_cluster import LocalCluster
from tests.integration import test_end_to_end as end_to_end
from tests.integration.conftest import assert_same_state, consumer_for
from tests.integration.test_crash_recovery import N_USERS, produce, stream, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: Events of the master-kill test (a third of the crash-recovery stream: the test stays short).
N_EVENTS = 2_000


@pytest.fixture
def cluster_settings(
    live_settings: Settings, redis_cluster: LocalCluster, cluster_prefix: str
) -> Settings:
    """The test's topics and group, its state on the cluster."""
    return live_settings.model_copy(update={"redis_url": redis_cluster.url,
                                            "redis_prefix": cluster_prefix})


@pytest.fixture
def cluster_app(cluster_settings: Settings) -> Iterator[Flask]:
    app = create_app(cluster_settings)
    yield app
    app.extensions["streamrec"].close()


def test_views_on_a_cluster_turn_a_new_users_recommendations_toward_that_category(
    cluster_app: Flask, cluster_settings: Settings
) -> None:
    assert isinstance(cluster_app.extensions["streamrec"].state.client, RedisCluster)
    consumer = consumer_for(cluster_settings).start()
    try:
        end_to_end.test_views_posted_to_the_api_turn_a_new_users_recommendations_toward_that_category(
            cluster_app, consumer)
    finally:
        consumer.stop()


def test_a_master_killed_mid_stream_fails_over_and_the_state_equals_an_uninterrupted_run(
    live_settings: Settings, cluster_settings: Settings, redis_cluster: LocalCluster
) -> None:
    from offline.catalog import load_catalog

    item_ids = [i.item_id for i in load_catalog(live_settings.data_dir)][:400]
    events = stream(item_ids)[:N_EVENTS]
    events += events[:: N_EVENTS // 50]  # redelivered by producers: must count once
    distinct = len({e.event_id for e in events})
    asyncio.run(produce(live_settings, events))
    # Reference: the same events, never interrupted, on the single Redis.
    reference = live_settings.model_copy(update={
        "consumer_group": f"ref-{uuid.uuid4().hex[:8]}",
        "redis_prefix": live_settings.redis_prefix + "ref:"})
    on_cluster = cluster_settings.model_copy(update={"consumer_max_records": 200})
    ref_store, store = build_state_store(reference), build_state_store(on_cluster)
    assert isinstance(store.client, RedisCluster)
    # A master that holds none of the global keys: its groups fail mid-batch, after the
    # journal recorded them (the harder case for "applied once").
    global_slot = key_slot(GLOBAL_TAG.encode())
    global_port = store.client.nodes_manager.get_node_from_slot(global_slot).port
    victim = next(p for p in redis_cluster.masters() if p != global_port)
    ref_consumer = consumer_for(reference).start()
    consumer = consumer_for(on_cluster).start()
    started = time.monotonic()
    try:
        assert wait_for(lambda: store.counters().get("events.total", 0) >= distinct // 3, 60)
        redis_cluster.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        redis_cluster.wait_ok()  # the victim's replica took its slots over
        assert victim not in redis_cluster.masters()
        failover_at = time.monotonic()
        assert wait_for(lambda: store.counters().get("events.total", 0) >= distinct, 60), (
            store.counters())
        print(f"master killed after {killed_at - started:.1f} s, failover took "
              f"{failover_at - killed_at:.1f} s, caught up {time.monotonic() - failover_at:.1f}"
              " s later")
        assert wait_for(lambda: ref_store.counters().get("events.total", 0) >= distinct, 60)
        time.sleep(1.0)  # anything still in flight would show up as an excess now
    finally:
        consumer.stop()
        ref_consumer.stop()
    try:
        users = [f"u{n}" for n in range(0, N_USERS, 7)]
        assert_same_state(store, ref_store, users, distinct)
        histories, ref_histories = store.get_histories(users), ref_store.get_histories(users)
        assert histories.keys() == ref_histories.keys()
        for user, history in ref_histories.items():
            assert histories[user] == pytest.approx(history, rel=1e-12)
        assert store.client.hgetall(store.keys.journal) == {}
    finally:
        ref_store.clear()
        redis_cluster.start_node(victim)  # rejoins as a replica of its successor
        redis_cluster.wait_ok()
