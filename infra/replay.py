"""Replays real purchase history as live events, at a steady rate, into Kafka."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from aiokafka import AIOKafkaProducer

from core.events import Purchased, dump_event
from core.settings import Settings
from infra.kafka import produce_batch
from offline.catalog import load_purchases

__all__ = ["ReplayProgress", "purchase_events", "replay"]

#: How often the replayer sends a slice of events; small slices keep the rate smooth.
TICK_S = 0.05


@dataclass
class ReplayProgress:
    produced: int = 0
    started: float = 0.0
    done: bool = False


def purchase_events(
    data_dir: Path, limit: int | None = None, end_at: float | None = None,
) -> Iterator[Purchased]:
    """The shipped purchase history as events, in time order, with stable event ids.

    The event id is derived from the invoice line, so a second replay of the same
    history is recognised as duplicates by the consumers. Times are rebased: the
    replayed purchases (2010-2011) are moved, gaps kept, so that the last of them
    lies at ``end_at`` (default: now). A replay is no trusted producer: its events
    pass the consumers' event-time window like any other, and live events posted
    meanwhile (at today's time) decay against it consistently.
    """
    frame = load_purchases(data_dir)
    if limit is not None:
        frame = frame.head(limit)
    if frame.empty:
        return
    shift = (time.time() if end_at is None else end_at) - float(frame["timestamp"].max())
    for n, row in enumerate(frame.itertuples(index=False)):
        yield Purchased(
            event_id=f"or-{row.invoice}-{row.item_id}-{n}",
            user_id=str(row.user_id),
            item_id=str(row.item_id),
            session_id=str(row.invoice),
            quantity=max(1, min(int(row.quantity), 100_000)),
            price=float(row.price),
            timestamp=datetime.fromtimestamp(float(row.timestamp) + shift, UTC),
        )


async def replay(
    settings: Settings,
    events: Iterator[Purchased],
    rate: float,
    progress: ReplayProgress,
    stop: asyncio.Event,
    on_tick: Callable[[ReplayProgress], None] | None = None,
) -> None:
    """Produce ``events`` at ``rate`` events/s until they run out or ``stop`` is set."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all",
        enable_idempotence=settings.kafka_idempotence, linger_ms=5,
    )
    await producer.start()
    progress.started = time.monotonic()
    try:
        while not stop.is_set():
            due = int((time.monotonic() - progress.started) * rate) - progress.produced
            batch = []
            for event in events:
                batch.append((event.user_id.encode(), dump_event(event)))
                if len(batch) >= max(due, 1):
                    break
            if not batch:
                progress.done = True
                break
            progress.produced += await produce_batch(producer, settings.interactions_topic, batch)
            if on_tick is not None:
                on_tick(progress)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), TICK_S)
    finally:
        await producer.stop()
