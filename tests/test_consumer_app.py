"""The consumers' FastStream handler on FastStream's in-memory TestKafkaBroker.

Fast checks of the handler wiring; the same paths run on the real broker in
tests/integration.
"""

from __future__ import annotations

import time

import pytest
from faststream.kafka import KafkaMessage, TestKafkaBroker

from consumers.app import build_consumer_app
from consumers.handlers import InteractionBatchHandler
from consumers.metrics import ConsumerMetrics
from core.events import ItemViewed, dump_event
from core.settings import Settings
from infra.memory_store import InMemoryStateStore
from online_models.processor import StreamProcessor
from online_models.profile import ContentProfile
from tests.fakes import toy_catalog, toy_index

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def store() -> InMemoryStateStore:
    return InMemoryStateStore()


@pytest.fixture
def parts(store: InMemoryStateStore):
    settings = Settings(kafka_bootstrap="127.0.0.1:1", redis_url="redis://unused")
    catalog = toy_catalog()
    processor = StreamProcessor(store, toy_index(catalog),
                                {i: it.category for i, it in catalog.items()},
                                half_life_s=3600.0, profile=ContentProfile(0.3))
    metrics = ConsumerMetrics()
    _app, broker = build_consumer_app(
        settings, lambda sink, observe: InteractionBatchHandler(processor, sink, observe), metrics
    )
    dead: list[bytes] = []

    @broker.subscriber(settings.dead_letter_topic)
    async def collect(message: KafkaMessage) -> None:
        dead.append(message.body)

    return settings, broker, metrics, dead


async def test_a_valid_event_updates_state_and_counts_in_metrics(parts, store) -> None:
    settings, broker, metrics, _ = parts
    async with TestKafkaBroker(broker) as test_broker:
        event = ItemViewed(user_id="u1", item_id="bags-1")
        await test_broker.publish(dump_event(event), settings.interactions_topic, key=b"u1")
    assert store.recent_items("u1") == ["bags-1"]
    assert metrics.events.labels("view")._value.get() == 1


async def test_an_invalid_event_is_dead_lettered_and_the_batch_still_applies(parts, store):
    settings, broker, metrics, dead = parts
    async with TestKafkaBroker(broker) as test_broker:
        await test_broker.publish_batch(
            b'{"event_type": "view", "user_id": "u2"}',
            dump_event(ItemViewed(user_id="u2", item_id="mugs-1")),
            topic=settings.interactions_topic,
        )
    assert store.recent_items("u2") == ["mugs-1"]
    assert dead == [b'{"event_type": "view", "user_id": "u2"}']
    assert store.counters()["events.dead_letter"] == 1
    assert metrics.dead_letters._value.get() == 1


async def test_a_store_outage_fails_the_batch_so_it_is_redelivered(parts, store, monkeypatch):
    settings, broker, _, _ = parts
    import consumers.app

    monkeypatch.setattr(consumers.app, "RETRY_PAUSE_S", 0.0)

    def down(update: object) -> None:
        raise ConnectionError("redis down")

    monkeypatch.setattr(store, "apply", down)
    async with TestKafkaBroker(broker) as test_broker:
        with pytest.raises(Exception, match="redis down"):
            await test_broker.publish(dump_event(ItemViewed(user_id="u3", item_id="bags-2")),
                                      settings.interactions_topic)
    assert store.recent_items("u3") == []


async def test_the_archive_stores_valid_records_as_received_and_skips_invalid_ones(store):
    from consumers.handlers import ArchiveBatchHandler
    from infra.sql import SqlStore

    settings = Settings(kafka_bootstrap="127.0.0.1:1", redis_url="redis://unused")
    catalog = toy_catalog()
    processor = StreamProcessor(store, toy_index(catalog),
                                {i: it.category for i, it in catalog.items()},
                                half_life_s=3600.0, profile=ContentProfile(0.3))
    sql = SqlStore("sqlite://")
    sql.create_schema()
    _app, broker = build_consumer_app(
        settings, lambda sink, observe: InteractionBatchHandler(processor, sink, observe),
        archive_handler=ArchiveBatchHandler(sql.archive_events))
    # Epoch-seconds time and spaces: kept as sent, not re-serialised.
    sent_at = int(time.time()) - 60
    valid = (b'{"event_type": "view", "event_id": "w1", "user_id": "u5", '
             b'"item_id": "bags-1", "timestamp": %d}' % sent_at)
    invalid = b'{"event_type": "view", "user_id": "u5"}'
    try:
        async with TestKafkaBroker(broker) as test_broker:
            await test_broker.publish_batch(invalid, valid, topic=settings.interactions_topic)
            await test_broker.publish_batch(valid, topic=settings.interactions_topic)  # again
        assert sql.count_events() == 1
        with sql.engine.connect() as conn:
            stored = conn.exec_driver_sql("SELECT payload FROM events").scalar_one()
        assert stored == valid.decode()
        assert sql.events()[0]["timestamp"] == sent_at
    finally:
        sql.close()


def _groups(broker) -> list[str | None]:
    return sorted(s.group_id or "" for s in broker.subscribers)


def test_an_archive_only_app_subscribes_the_archive_group_alone(tmp_path) -> None:
    from consumers.app import create_consumer_app

    settings = Settings(kafka_bootstrap="127.0.0.1:1", redis_url="redis://unused",
                        database_url=f"sqlite:///{tmp_path / 'a.db'}", state_dir=tmp_path)
    app = create_consumer_app(settings, "archive")
    assert _groups(app.broker) == [f"{settings.consumer_group}.archive"]


def test_a_state_app_leaves_the_archive_to_its_own_process(parts, store) -> None:
    from consumers.app import build_consumer_app
    from consumers.handlers import ArchiveBatchHandler

    settings, broker, *_ = parts
    # The fixture's app: the state path only, as role "state" builds it.
    assert _groups(broker) == ["", settings.consumer_group]  # "": the dead-letter reader
    processor = StreamProcessor(store, toy_index(toy_catalog()), {}, half_life_s=3600.0,
                                profile=ContentProfile(0.3))
    _app, both = build_consumer_app(
        settings, lambda sink, observe: InteractionBatchHandler(processor, sink, observe),
        archive_handler=ArchiveBatchHandler(lambda events, wire: 0))
    assert _groups(both) == [settings.consumer_group, f"{settings.consumer_group}.archive"]


@pytest.mark.parametrize(("priority", "policy", "nice"), [
    ("idle", "SCHED_IDLE", 0), ("low", "SCHED_OTHER", 10), ("normal", "SCHED_OTHER", 0)])
def test_the_archive_process_lowers_its_own_cpu_priority(priority, policy, nice) -> None:
    import os
    import subprocess
    import sys

    if not hasattr(os, "sched_getscheduler"):
        pytest.skip("scheduling policies are Linux only")
    code = ("import os; from consumers.app import lower_priority; before = os.nice(0); "
            f"lower_priority({priority!r}); print(os.sched_getscheduler(0), "
            "os.nice(0) - before)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    got_policy, got_nice = map(int, out.stdout.split())
    assert got_policy == getattr(os, policy)
    assert got_nice == min(nice, 19 - os.nice(0))  # niceness stops at 19
