"""A consumer killed mid-stream and restarted ends in the same state as one never stopped."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from core.events import AddedToCart, InteractionEvent, ItemViewed, Purchased, dump_event
from core.settings import Settings
from infra.bootstrap import build_state_store
from infra.kafka import produce_batch
from tests.integration.conftest import assert_same_state, consumer_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N_EVENTS = 6_000
N_USERS = 300
#: The consumer is killed this many times, after a seeded random count of applied events.
KILLS = 2
KILL_SEED = 20261124
#: Event time of the first event: recent, as the consumers refuse events over 2 years old.
START = int(time.time()) - 7 * 24 * 3600


def stream(item_ids: list[str], seed: int = 7) -> list[InteractionEvent]:
    """Events of many users in time order, a few duplicated ids (client retries)."""
    rng = random.Random(seed)
    kinds = (ItemViewed, ItemViewed, ItemViewed, AddedToCart, Purchased)
    events: list[InteractionEvent] = []
    for n in range(N_EVENTS):
        kind = rng.choice(kinds)
        events.append(kind(user_id=f"u{rng.randrange(N_USERS)}", item_id=rng.choice(item_ids),
                           timestamp=START + n * 5))  # type: ignore[arg-type]
    events += rng.sample(events, 100)  # redelivered by producers: must count once
    return events


async def produce(settings: Settings, events: list[InteractionEvent]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        await produce_batch(producer, settings.interactions_topic,
                            [(e.user_id.encode(), dump_event(e)) for e in events])
    finally:
        await producer.stop()


def consumer_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a ``streamrec consume`` process on ``settings``' services."""
    return {**os.environ, **{
        f"STREAMREC_{name.upper()}": str(value)
        for name, value in settings.model_dump().items()
        if name in {"kafka_bootstrap", "redis_url", "database_url", "state_dir",
                    "interactions_topic", "catalog_topic", "dead_letter_topic",
                    "consumer_group", "redis_prefix", "topic_partitions"}
    }, "STREAMREC_CONSUMER_MAX_RECORDS": "200", **extra}


def consumer_process(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    env = consumer_env(settings)
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "cli.main", "consume"], env=env,
                                stdout=out, stderr=subprocess.STDOUT)


def wait_for(check, timeout_s: float = 90.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


def test_killing_the_consumer_mid_stream_loses_nothing_and_counts_nothing_twice(
    live_settings: Settings, tmp_path: Path
) -> None:
    from offline.catalog import load_catalog

    item_ids = [i.item_id for i in load_catalog(live_settings.data_dir)][:400]
    events = stream(item_ids)
    distinct = len({e.event_id for e in events})
    asyncio.run(produce(live_settings, events))

    # Reference: a consumer group that is never interrupted, on its own Redis keys.
    reference = live_settings.model_copy(update={
        "consumer_group": f"ref-{uuid.uuid4().hex[:8]}",
        "redis_prefix": live_settings.redis_prefix + "ref:",
    })
    crashed = live_settings
    ref_store, store = build_state_store(reference), build_state_store(crashed)
    try:
        ref_consumer = consumer_for(reference).start()
        try:
            # Kill points: seeded random counts of applied events, mid-batch or not.
            kill_points = sorted(random.Random(KILL_SEED).sample(
                range(distinct // 10, distinct * 9 // 10), KILLS))
            for target in kill_points:
                proc = consumer_process(crashed, tmp_path / "consumer.log")
                wait_for(lambda t=target: store.counters().get("events.total", 0) >= t)
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
            proc = consumer_process(crashed, tmp_path / "consumer.log")
            try:
                assert wait_for(lambda: store.counters().get("events.total", 0) >= distinct), (
                    store.counters(), (tmp_path / "consumer.log").read_text()[-2000:])
                assert wait_for(
                    lambda: ref_store.counters().get("events.total", 0) >= distinct)
                time.sleep(1.0)  # anything still in flight would show up as an excess now
            finally:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    raise
        finally:
            ref_consumer.stop()

        assert_same_state(store, ref_store, [f"u{n}" for n in range(0, N_USERS, 7)], distinct)
        got, want = store.counters(), ref_store.counters()
        assert got.get("events.duplicate", 0) >= want.get("events.duplicate", 0)
    finally:
        ref_store.clear()
