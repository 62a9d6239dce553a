"""Consumer lag in seconds of event time, per partition.

For a partition with pending records, the lag in seconds is the event time of the
newest record (offset ``highwater - 1``) minus the event time of the oldest record
the group has not consumed yet (offset ``committed``, or the log start without a
commit): how much *event time* the group is behind. It is 0 when nothing is pending.
Event time is the ``timestamp`` field of the JSON event; records without one use
the Kafka record timestamp.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from core.errors import TemporaryFailure
from infra.kafka import PartitionLag

__all__ = ["event_time", "lag_seconds"]


def event_time(value: bytes | None, record_timestamp_ms: int) -> float:
    """Unix seconds of an event record: its ``timestamp`` field, else the record's.

    >>> event_time(b'{"timestamp": "2011-01-01T00:00:00+00:00"}', 0)
    1293840000.0
    >>> event_time(b'not json', 5_000)
    5.0
    """
    try:
        raw: Any = json.loads(value or b"").get("timestamp")
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            return float(raw)
        if isinstance(raw, str):
            return datetime.fromisoformat(raw).timestamp()
    except (ValueError, AttributeError):
        pass
    return record_timestamp_ms / 1000


async def lag_seconds(
    bootstrap: str, topic: str, lags: Sequence[PartitionLag], timeout_s: float = 10.0
) -> dict[int, float]:
    """Event-time lag of each partition in ``lags`` (see the module docstring)."""
    try:
        return await asyncio.wait_for(_lag_seconds(bootstrap, topic, lags), timeout_s)
    except (TimeoutError, KafkaError, OSError) as exc:
        raise TemporaryFailure(f"could not read record times of {topic!r}: {exc!r}") from exc


async def _lag_seconds(
    bootstrap: str, topic: str, lags: Sequence[PartitionLag]
) -> dict[int, float]:
    out = {row.partition: 0.0 for row in lags}
    pending = [row for row in lags if row.lag > 0]
    if not pending:
        return out
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
        fetch_max_wait_ms=10, max_partition_fetch_bytes=64 * 1024,
        client_id=f"streamrec-lag-{uuid.uuid4().hex[:8]}",
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, row.partition) for row in pending]
        consumer.assign(tps)
        for row, tp in zip(pending, tps, strict=True):
            oldest_offset = row.highwater - row.lag
            oldest = await _time_at(consumer, tp, oldest_offset)
            newest = await _time_at(consumer, tp, row.highwater - 1)
            out[row.partition] = max(0.0, newest - oldest)
    finally:
        await consumer.stop()
    return out


async def _time_at(consumer: AIOKafkaConsumer, tp: TopicPartition, offset: int) -> float:
    consumer.seek(tp, offset)
    while True:
        batches = await consumer.getmany(tp, timeout_ms=200, max_records=1)
        for record in batches.get(tp, []):
            return event_time(record.value, record.timestamp)
