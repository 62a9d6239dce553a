"""What the interactions handler does with one batch, free of FastStream.

Validate each record; send the invalid ones to the dead-letter topic with the
reason; apply the valid ones through the stream processor (one atomic state
update); report metrics. Any exception raised out of :meth:`handle` means
"nothing was committed": the batch is redelivered, and event-id dedupe keeps the
retry from counting anything twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from core.errors import InvalidEvent, StreamrecError, TemporaryFailure
from core.events import (
    EventTimeWindow,
    InteractionEvent,
    ItemUpserted,
    parse_catalog_event,
    parse_interaction,
)
from core.ports import StateUpdate
from core.types import Item
from online_models.catalog import CatalogReplica, CatalogUpdater, UpsertResult, item_of
from online_models.processor import StreamProcessor

__all__ = [
    "ArchiveBatchHandler",
    "BatchResult",
    "CatalogBatchHandler",
    "DeadLetter",
    "InteractionBatchHandler",
    "Record",
    "parse_records",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Record:
    """The parts of a Kafka record the handler needs."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record that can never be applied, and why."""

    record: Record
    reason: str

    def headers(self) -> dict[str, str]:
        return {
            "x-dead-letter-reason": self.reason[:1000],
            "x-original-topic": self.record.topic,
            "x-original-partition": str(self.record.partition),
            "x-original-offset": str(self.record.offset),
        }


@dataclass(frozen=True, slots=True)
class BatchResult:
    applied: int
    duplicates: int
    dead_letters: int
    update: StateUpdate


DeadLetterSink = Callable[[Sequence[DeadLetter]], Awaitable[None]]
BatchObserver = Callable[[Sequence[Record], BatchResult, float], None]
#: Writes events to the archive (idempotent by event id), given each one's wire bytes in
#: the same order; returns how many were new.
Archive = Callable[[Sequence[InteractionEvent], Sequence[bytes]], int]


def parse_records(
    records: Sequence[Record], window: EventTimeWindow | None = None,
) -> tuple[list[InteractionEvent], list[bytes], list[DeadLetter]]:
    """Valid events, the wire bytes of each (same order), and the invalid records.

    An event whose time lies outside ``window`` (default: the default settings'),
    measured on this process's clock, is invalid too: a producer that bypassed the
    API's check must not move shared decay state into the future.
    """
    window = window or EventTimeWindow()
    now = time.time()
    events: list[InteractionEvent] = []
    wire: list[bytes] = []
    bad: list[DeadLetter] = []
    for record in records:
        if record.value is None:
            bad.append(DeadLetter(record, "empty message (tombstone)"))
            continue
        try:
            event = parse_interaction(record.value)
        except InvalidEvent as exc:
            bad.append(DeadLetter(record, exc.message))
            continue
        problem = window.problem(event.ts, now)
        if problem is not None:
            bad.append(DeadLetter(record, f"invalid interaction event: {problem}"))
            continue
        events.append(event)
        wire.append(record.value)
    return events, wire, bad


class InteractionBatchHandler:
    """Validate -> learn -> state for one batch of interaction records."""

    def __init__(
        self,
        processor: StreamProcessor,
        dead_letters: DeadLetterSink,
        observe: BatchObserver | None = None,
        replica: CatalogReplica | None = None,
        window: EventTimeWindow | None = None,
    ) -> None:
        self.processor = processor
        self.dead_letters = dead_letters
        self.observe = observe
        self.replica = replica
        self.window = window

    def validate(
        self, records: Sequence[Record],
    ) -> tuple[list[InteractionEvent], list[DeadLetter]]:
        events, _, bad = parse_records(records, self.window)
        return events, bad

    async def handle(self, records: Sequence[Record]) -> BatchResult:
        started = time.perf_counter()
        events, bad = self.validate(records)
        if bad:
            log.warning("%d invalid record(s) sent to the dead-letter topic", len(bad))
            await self.dead_letters(bad)
        try:
            if self.replica is not None:
                # New products (from any consumer) get their embeddings before we learn.
                await asyncio.to_thread(self.replica.refresh)
            # Redis calls block: run them off the loop so the consumer keeps its heartbeat.
            counters = {"events.dead_letter": len(bad)} if bad else None
            update = await asyncio.to_thread(self.processor.apply, events, counters)
        except StreamrecError:
            raise
        except Exception as exc:  # an adapter bug or outage must not lose the batch
            raise TemporaryFailure(f"applying {len(events)} events failed: {exc}") from exc
        result = BatchResult(
            applied=len(update.event_ids),
            duplicates=update.counters.get("events.duplicate", 0),
            dead_letters=len(bad),
            update=update,
        )
        if self.observe is not None:
            self.observe(records, result, time.perf_counter() - started)
        return result


class ArchiveBatchHandler:
    """Writes the valid events of a batch to the archive (its own consumer group).

    Off the state path: the archive's speed does not slow recommendations down.
    Invalid records are skipped here (the interactions handler dead-letters them).
    Idempotent by event id, so a redelivered batch inserts nothing twice. The archive
    gets the records' wire bytes too: it stores them rather than serialise each event.
    """

    def __init__(self, archive: Archive, window: EventTimeWindow | None = None) -> None:
        self.archive = archive
        self.window = window

    async def handle(self, records: Sequence[Record]) -> int:
        events, wire, _ = parse_records(records, self.window)
        if not events:
            return 0
        try:
            return await asyncio.to_thread(self.archive, events, wire)
        except StreamrecError:
            raise
        except Exception as exc:
            raise TemporaryFailure(f"archiving {len(events)} events failed: {exc}") from exc


class CatalogBatchHandler:
    """Validate -> embed -> record in the catalog log (and the SQL products) per batch."""

    def __init__(
        self,
        updater: CatalogUpdater,
        dead_letters: DeadLetterSink,
        save_products: Callable[[Sequence[Item]], object] | None = None,
        replica: CatalogReplica | None = None,
    ) -> None:
        self.updater = updater
        self.dead_letters = dead_letters
        self.save_products = save_products
        self.replica = replica

    async def handle(self, records: Sequence[Record]) -> UpsertResult:
        events: list[ItemUpserted] = []
        bad: list[DeadLetter] = []
        for record in records:
            try:
                if record.value is None:
                    raise InvalidEvent("empty message (tombstone)")
                events.append(parse_catalog_event(record.value))
            except InvalidEvent as exc:
                bad.append(DeadLetter(record, exc.message))
        if bad:
            await self.dead_letters(bad)
        try:
            if self.save_products is not None and events:
                await asyncio.to_thread(self.save_products, [item_of(e) for e in events])
            result = await asyncio.to_thread(self.updater.apply, events)
            if self.replica is not None:
                await asyncio.to_thread(self.replica.refresh, True)
        except StreamrecError:
            raise
        except Exception as exc:
            raise TemporaryFailure(f"applying {len(events)} catalog events failed: {exc}") from exc
        return result
