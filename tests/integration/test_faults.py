"""Faults on real services: Redis and the broker go down while the API and a consumer run.

Each test starts servers of its own (never the session's), stops one mid-run and
starts it again on the same port:

* Redis (with an append-only file, as a production Redis keeps its data): the API
  answers recommendations from the degraded path (200, ``degraded: true``), never a
  5xx; the consumer's batches fail and are redelivered (its handler-error counter
  rises); after the restart it catches up and every event produced is applied
  exactly once and archived once.
* The broker (Tansu, memory storage): ``POST /api/events`` answers 503 JSON within
  the publisher's timeout; after a restart the topics are gone (recreated here with
  ``ensure_kafka_topics``, as an operator would) and the publisher recovers.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from flask import Flask
from flask.testing import FlaskClient

from api import create_app
from core.settings import Settings
from infra.bootstrap import build_sql_store, build_state_store, ensure_kafka_topics
from infra.embedded import EmbeddedKafka, EmbeddedRedis, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]


class DurableRedis(EmbeddedRedis):
    """The embedded redis-server with an fsync'ed append-only file in ``log_dir``."""

    def command(self) -> list[str]:
        cmd = super().command()
        at = cmd.index("--appendonly")
        return [*cmd[:at], "--appendonly", "yes", "--appendfsync", "always", *cmd[at + 2:]]


def poll(check: Callable[[], Any], timeout_s: float = 60.0, every_s: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(every_s)


def consumer_process(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    """``streamrec consume`` in its own process, configured through the environment."""
    names = {"kafka_bootstrap", "redis_url", "database_url", "state_dir", "interactions_topic",
             "catalog_topic", "dead_letter_topic", "consumer_group", "redis_prefix",
             "topic_partitions", "consumer_metrics_port"}
    env = {**os.environ, **{f"STREAMREC_{k.upper()}": str(v)
                            for k, v in settings.model_dump().items() if k in names}}
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, "-m", "cli.main", "consume"], env=env,
                                stdout=out, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def handler_errors(port: int) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as answer:
            text = answer.read().decode()
    except OSError:
        return -1.0
    for line in text.splitlines():
        if line.startswith("streamrec_consumer_handler_errors_total "):
            return float(line.split()[1])
    return -1.0


def post_views(client: FlaskClient, items: list[str], tag: str, n: int) -> list[str]:
    ids = [f"{tag}-{i}" for i in range(n)]
    batch = [{"event_id": eid, "event_type": "view", "user_id": f"{tag}-user-{i % 7}",
              "item_id": items[i % len(items)]} for i, eid in enumerate(ids)]
    response = client.post("/api/events", json=batch)
    assert response.status_code == 202, response.get_json()
    return ids


@pytest.fixture
def durable_redis(tmp_path: Path) -> Iterator[DurableRedis]:
    server = DurableRedis(log_dir=tmp_path / "redis")
    server.start()
    yield server
    server.stop()


def test_redis_outage_degrades_the_api_and_the_consumer_catches_up_losing_nothing(
    live_settings: Settings, durable_redis: DurableRedis, tmp_path: Path,
) -> None:
    settings = live_settings.model_copy(update={
        "redis_url": durable_redis.url, "consumer_metrics_port": free_port()})
    app: Flask = create_app(settings)
    client = app.test_client()
    store = build_state_store(settings)
    consumer = consumer_process(settings, tmp_path / "consumer.log")
    port = settings.consumer_metrics_port
    try:
        items = list(app.extensions["streamrec"].catalog)[:50]
        before = post_views(client, items, "before", 200)
        assert poll(lambda: store.counters().get("events.total", 0) >= len(before), 90), \
            (tmp_path / "consumer.log").read_text()[-2000:]
        healthy = client.get("/api/recommendations?user_id=before-user-1&k=5").get_json()
        assert "degraded" not in healthy
        errors_before = handler_errors(port)

        durable_redis.stop()
        during = post_views(client, items, "during", 150)  # Kafka is up: accepted
        answers = [client.get(f"/api/recommendations?user_id=before-user-{n}&k=5")
                   for n in range(7)]
        assert [a.status_code for a in answers] == [200] * 7
        for answer in answers:
            body = answer.get_json()
            assert body["degraded"] is True and "unavailable" in body["reason"]
            assert len(body["items"]) == 5
        trending = client.get("/api/trending?k=3")
        assert trending.status_code == 200 and trending.get_json()["degraded"] is True
        health = client.get("/healthz")
        assert health.status_code == 503 and health.get_json()["checks"]["redis"] is False
        assert poll(lambda: handler_errors(port) >= errors_before + 2, 30), \
            "the consumer did not retry its failing batch"
        assert consumer.poll() is None, "the consumer died instead of retrying"

        durable_redis.start()  # same port, same append-only file
        assert poll(lambda: store.counters().get("events.total", 0)
                    >= len(before) + len(during), 90)
        time.sleep(1.0)  # anything applied twice would show up now
        counters = store.counters()
        assert counters["events.total"] == len(before) + len(during)
        assert counters["events.view"] == len(before) + len(during)
        recovered = client.get("/api/recommendations?user_id=during-user-1&k=5").get_json()
        assert "degraded" not in recovered
        assert client.get("/healthz").get_json()["checks"]["redis"] is True
        # The archive reads the same records in its own group, at its own pace.
        archive = build_sql_store(settings)
        try:
            want = set(before) | set(during)
            assert poll(lambda: want <= {e["event_id"] for e in archive.events()}, 60)
            assert archive.count_events() == len(want)  # once each, despite redeliveries
        finally:
            archive.close()
    finally:
        stop(consumer)
        app.extensions["streamrec"].close()


async def topic_event_ids(bootstrap: str, topic: str) -> set[str]:
    import json

    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    try:
        batches = await consumer.getmany(timeout_ms=3000)
        return {json.loads(r.value)["event_id"] for rs in batches.values() for r in rs
                if r.value is not None}
    finally:
        await consumer.stop()


def test_broker_outage_answers_503_within_the_timeout_and_the_publisher_recovers(
    live_settings: Settings, tmp_path: Path,
) -> None:
    broker = EmbeddedKafka(log_dir=tmp_path / "tansu")
    broker.start()
    settings = live_settings.model_copy(update={"kafka_bootstrap": broker.bootstrap})
    ensure_kafka_topics(settings)
    app = create_app(settings)
    client = app.test_client()
    publisher = app.extensions["streamrec"].publisher
    item = next(iter(app.extensions["streamrec"].catalog))

    def post(event_id: str) -> Any:
        return client.post("/api/events", json={
            "event_id": event_id, "event_type": "view", "user_id": "u1", "item_id": item})

    try:
        assert post("before-outage").status_code == 202

        broker.stop()
        started = time.monotonic()
        response = post("during-outage")
        elapsed = time.monotonic() - started
        assert response.status_code == 503
        assert response.get_json()["error"]["code"] in {"temporary_failure",
                                                         "service_unavailable"}
        assert elapsed <= publisher.timeout_s + 2.0
        assert client.get("/healthz").get_json()["checks"]["kafka"] is False
        assert client.get("/api/recommendations?user_id=u1").status_code == 200  # reads go on

        broker.start()  # same port; memory storage: every topic is gone
        ensure_kafka_topics(settings)
        assert poll(lambda: post("after-restart").status_code == 202, 60)
        seen = asyncio.run(topic_event_ids(broker.bootstrap, settings.interactions_topic))
        assert "after-restart" in seen
        # The documented cost of a memory-only broker: what it held before is lost.
        assert "before-outage" not in seen
    finally:
        app.extensions["streamrec"].close()
        broker.stop()
