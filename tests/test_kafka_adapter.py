"""Kafka adapter: topics, the sync publisher, batch producing and consumer lag."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from core.errors import ConfigurationError, TemporaryFailure
from core.events import ItemUpserted, ItemViewed, Purchased, parse_catalog_event, parse_interaction
from core.settings import Settings
from infra.embedded import free_port
from infra.kafka import (
    KafkaEventPublisher,
    PartitionLag,
    compute_lag,
    ensure_topics,
    partition_lag,
    produce_batch,
    topics_from_settings,
)

MakeTopic = Callable[..., str]


# --- lag arithmetic (Apache Kafka semantics) ------------------------------------------------
def test_lag_is_highwater_minus_the_committed_next_offset() -> None:
    # A group that consumed offsets 0..6 commits 7, the next offset it will read.
    assert compute_lag(0, committed=7, highwater=10) == PartitionLag(0, 7, 10, 3)


def test_lag_is_zero_when_the_group_has_read_everything() -> None:
    assert compute_lag(2, committed=10, highwater=10).lag == 0


def test_lag_without_a_commit_is_the_whole_partition() -> None:
    assert compute_lag(1, committed=None, highwater=10).lag == 10
    assert compute_lag(1, committed=None, highwater=10, log_start=4).lag == 6
    assert compute_lag(1, committed=None, highwater=0).lag == 0


def test_lag_never_goes_negative() -> None:
    # A commit ahead of the mark we read (the mark is older than the commit) means no lag.
    assert compute_lag(0, committed=12, highwater=10).lag == 0


# --- configuration and failures, no broker needed ------------------------------------------
def test_publisher_needs_a_bootstrap_address() -> None:
    with pytest.raises(ConfigurationError):
        KafkaEventPublisher("")


def test_publisher_from_settings_takes_topics_and_idempotence() -> None:
    settings = Settings(kafka_bootstrap="127.0.0.1:1", interactions_topic="i2",
                        catalog_topic="c2", kafka_idempotence=True)
    publisher = KafkaEventPublisher.from_settings(settings, timeout_s=1.0)
    assert (publisher.bootstrap, publisher.interactions_topic, publisher.catalog_topic,
            publisher.idempotence, publisher.timeout_s) == ("127.0.0.1:1", "i2", "c2", True, 1.0)


def test_topics_from_settings_lists_every_topic_with_its_partitions() -> None:
    settings = Settings(topic_partitions=6, dead_letter_topic="dlq")
    assert topics_from_settings(settings) == {"interactions": 6, "catalog": 6, "dlq": 1}


def test_publisher_raises_temporary_failure_in_bounded_time_when_kafka_is_down() -> None:
    publisher = KafkaEventPublisher(f"127.0.0.1:{free_port()}", timeout_s=1.0)
    started = time.monotonic()
    with pytest.raises(TemporaryFailure, match="Kafka"):
        publisher.publish([ItemViewed(user_id="u1", item_id="i1")])
    assert time.monotonic() - started < 5
    publisher.close()


def test_ensure_topics_refuses_zero_partitions() -> None:
    with pytest.raises(ConfigurationError, match="at least 1 partition"):
        ensure_topics("127.0.0.1:1", {"t": 0})


def test_ensure_topics_raises_temporary_failure_when_kafka_is_down() -> None:
    with pytest.raises(TemporaryFailure, match="could not create topics"):
        ensure_topics(f"127.0.0.1:{free_port()}", {"t": 1}, timeout_s=1.0)


# --- against the real broker ---------------------------------------------------------------
async def _consume(bootstrap: str, topic: str, expected: int,
                   timeout_s: float = 15.0) -> list[ConsumerRecord[bytes, bytes]]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest", fetch_max_wait_ms=20)
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        deadline = time.monotonic() + timeout_s
        while len(records) < expected and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for part in batch.values():
                records.extend(part)
    finally:
        await consumer.stop()
    return records


def consume(bootstrap: str, topic: str, expected: int) -> list[ConsumerRecord[bytes, bytes]]:
    return asyncio.run(_consume(bootstrap, topic, expected))


@pytest.mark.integration
def test_ensure_topics_creates_partitions_and_accepts_existing_topics(
    kafka_bootstrap: str,
) -> None:
    a, b = f"ens-{uuid.uuid4().hex[:8]}", f"ens-{uuid.uuid4().hex[:8]}"
    assert ensure_topics(kafka_bootstrap, {a: 4, b: 1}) == {a: 4, b: 1}
    assert ensure_topics(kafka_bootstrap, {a: 4, b: 1}) == {a: 4, b: 1}


@pytest.mark.integration
def test_kafka_topics_fixture_makes_distinct_topics(kafka_topics: MakeTopic) -> None:
    assert kafka_topics(2) != kafka_topics(2)


@pytest.mark.integration
def test_publish_sends_wire_events_keyed_by_user(
    kafka_bootstrap: str, kafka_topics: MakeTopic
) -> None:
    interactions, catalog = kafka_topics(3, name="interactions"), kafka_topics(1, name="cat")
    publisher = KafkaEventPublisher(kafka_bootstrap, interactions_topic=interactions,
                                    catalog_topic=catalog)
    try:
        events = [ItemViewed(user_id="17850", item_id="85123A"),
                  Purchased(user_id="13047", item_id="22423", quantity=2)]
        publisher.publish(events)
        publisher.publish_catalog([ItemUpserted(item_id="85123A", name="Heart")])
        publisher.publish([])  # nothing to send is not an error
    finally:
        publisher.close()
    records = consume(kafka_bootstrap, interactions, 2)
    by_key = {r.key: parse_interaction(r.value) for r in records if r.value is not None}
    assert by_key == {b"17850": events[0], b"13047": events[1]}
    (item,) = consume(kafka_bootstrap, catalog, 1)
    assert item.key == b"85123A" and item.value is not None
    assert parse_catalog_event(item.value).name == "Heart"


@pytest.mark.integration
def test_publisher_is_thread_safe_and_restarts_after_close(
    kafka_bootstrap: str, kafka_topics: MakeTopic
) -> None:
    topic = kafka_topics(2)
    publisher = KafkaEventPublisher(kafka_bootstrap, interactions_topic=topic)
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(25):
                publisher.publish([ItemViewed(user_id=f"u{n}", item_id=f"i{i}")])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    publisher.close()
    publisher.publish_raw(topic, None, b"after-close")  # lazily started again
    publisher.close()
    publisher.close()
    records = consume(kafka_bootstrap, topic, 101)
    assert len(records) == 101
    assert sum(r.value == b"after-close" for r in records) == 1


@pytest.mark.integration
def test_produce_batch_delivers_every_record(
    kafka_bootstrap: str, kafka_topics: MakeTopic
) -> None:
    topic, n = kafka_topics(4), 20_000

    async def produce() -> tuple[int, float]:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all",
                                    linger_ms=5, max_batch_size=256 * 1024)
        await producer.start()
        try:
            started = time.perf_counter()
            sent = await produce_batch(
                producer, topic, ((f"u{i % 97}".encode(), b"x" * 200) for i in range(n)))
            return sent, time.perf_counter() - started
        finally:
            await producer.stop()

    sent, seconds = asyncio.run(produce())
    print(f"produce_batch: {n / seconds:,.0f} records/s (200-byte values, acks=all)")
    assert sent == n
    lags = asyncio.run(partition_lag(kafka_bootstrap, "nobody", topic))
    assert sum(p.highwater for p in lags) == n


async def _produce_to_partitions(bootstrap: str, topic: str, counts: dict[int, int]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(topic, b"v", partition=p)
                   for p, n in counts.items() for _ in range(n)]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def _commit(bootstrap: str, group: str, offsets: dict[TopicPartition, int]) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        await consumer.commit(offsets)
    finally:
        await consumer.stop()


@pytest.mark.integration
def test_partition_lag_matches_produced_and_committed_counts(
    kafka_bootstrap: str, kafka_topics: MakeTopic
) -> None:
    topic, group = kafka_topics(3), f"g-{uuid.uuid4().hex[:8]}"
    asyncio.run(_produce_to_partitions(kafka_bootstrap, topic, {0: 5, 1: 7}))
    before = asyncio.run(partition_lag(kafka_bootstrap, group, topic))
    assert before == [PartitionLag(0, None, 5, 5), PartitionLag(1, None, 7, 7),
                      PartitionLag(2, None, 0, 0)]
    asyncio.run(_commit(kafka_bootstrap, group,
                        {TopicPartition(topic, 0): 2, TopicPartition(topic, 1): 7}))
    after = asyncio.run(partition_lag(kafka_bootstrap, group, topic))
    assert after == [PartitionLag(0, 2, 5, 3), PartitionLag(1, 7, 7, 0),
                     PartitionLag(2, None, 0, 0)]
    # Reading lag commits nothing: a second read sees the same offsets.
    assert asyncio.run(partition_lag(kafka_bootstrap, group, topic)) == after


@pytest.mark.integration
def test_partition_lag_reads_the_true_end_of_a_long_partition(
    kafka_bootstrap: str, kafka_topics: MakeTopic
) -> None:
    # Tansu's ListOffsets answers below the end of long partitions; the fetch mark does not.
    topic = kafka_topics(1)
    asyncio.run(_produce_to_partitions(kafka_bootstrap, topic, {0: 3000}))
    (lag,) = asyncio.run(partition_lag(kafka_bootstrap, "fresh-group", topic))
    assert lag == PartitionLag(0, None, 3000, 3000)


@pytest.mark.integration
def test_partition_lag_of_an_unknown_topic_is_a_temporary_failure(kafka_bootstrap: str) -> None:
    with pytest.raises(TemporaryFailure, match="could not read lag"):
        asyncio.run(partition_lag(kafka_bootstrap, "g", f"missing-{uuid.uuid4().hex}",
                                  timeout_s=1.0))


@pytest.mark.integration
def test_produce_batch_keeps_per_key_order_on_the_partition_send_would_pick(
    kafka_bootstrap: str, kafka_topics: MakeTopic
) -> None:
    topic = kafka_topics(4)
    keys = [f"user{k}".encode() for k in range(12)]

    async def produce() -> dict[bytes, int]:
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        await producer.start()
        try:
            records: list[tuple[bytes | None, bytes]] = [
                (keys[i % len(keys)], str(i).encode()) for i in range(600)]
            records.append((None, b"no-key"))
            assert await produce_batch(producer, topic, records) == 601
            # Where the producer's own send() puts each key.
            return {k: (await producer.send_and_wait(topic, b"probe", key=k)).partition
                    for k in keys}
        finally:
            await producer.stop()

    send_partition = asyncio.run(produce())
    records = consume(kafka_bootstrap, topic, 601 + len(keys))
    by_key: dict[bytes, list[int]] = {}
    for r in sorted(records, key=lambda r: (r.partition, r.offset)):
        if r.key is not None and r.value != b"probe":
            assert r.partition == send_partition[r.key]
            by_key.setdefault(r.key, []).append(int(r.value or b"-1"))
    assert all(values == sorted(values) and len(values) == 50 for values in by_key.values())
    assert sum(r.value == b"no-key" for r in records) == 1
