"""The FastStream application of the consumers: routers, ack policy, dead letters.

Delivery: at-least-once. Offsets are committed only after a batch is applied
(``AckPolicy.NACK_ON_ERROR``: success commits, an exception rewinds the batch's
partitions so it is read again). Invalid records go to the dead-letter topic and
never stop the consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from multiprocessing.connection import wait
from typing import Any, Literal

from aiokafka import ConsumerRebalanceListener, TopicPartition
from faststream import AckPolicy, FastStream
from faststream.kafka import KafkaBroker, KafkaMessage, KafkaRouter
from prometheus_client import start_http_server

from consumers.handlers import (
    ArchiveBatchHandler,
    CatalogBatchHandler,
    DeadLetter,
    InteractionBatchHandler,
    Record,
)
from consumers.metrics import ConsumerMetrics
from core.errors import TemporaryFailure
from core.events import EventTimeWindow
from core.settings import ArchivePriority, Settings
from infra.process import die_with_parent
from online_models.catalog import CatalogUpdater

__all__ = [
    "BackgroundConsumer",
    "ConsumerRole",
    "build_consumer_app",
    "create_consumer_app",
    "lower_priority",
    "records_of",
    "run_consumer_processes",
    "tune_gc",
    "tuned_gc",
]

log = logging.getLogger(__name__)

BatchHandle = Callable[[Sequence[Record]], Awaitable[object]]
#: Which subscribers a consumers' app runs (see :func:`create_consumer_app`).
ConsumerRole = Literal["all", "state", "archive"]

#: Pause before a failed batch is redelivered, so an outage is not a busy loop.
RETRY_PAUSE_S = 1.0

#: Allocations between young-generation collections in a consumer (CPython: 700).
GC_YOUNG_THRESHOLD = 50_000


def tune_gc() -> tuple[int, int, int]:
    """Fewer cyclic-GC passes, none over what start-up built (catalog, index, models).

    A batch allocates tens of thousands of short-lived objects that reference
    counting frees; with CPython's default threshold the cyclic collector ran dozens
    of times per batch and took about a quarter of the consumers' CPU. Call it once
    the long-lived objects exist. Returns the thresholds it replaced.
    """
    before = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *before[1:])
    return before


@contextlib.contextmanager
def tuned_gc() -> Iterator[None]:
    """:func:`tune_gc` for a block (consumers run inside a longer-lived process)."""
    before = tune_gc()
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()


def records_of(message: KafkaMessage) -> list[Record]:
    raw = message.raw_message
    batch: Sequence[Any] = raw if isinstance(raw, tuple | list) else (raw,)
    return [
        Record(r.topic, r.partition, r.offset, r.key, r.value, r.timestamp) for r in batch
    ]


async def _raw_values(message: Any) -> list[bytes | None]:
    # Keep the bytes: each record is validated on its own so one bad record can be
    # dead-lettered without failing the batch.
    return [r.value for r in message.raw_message]


def build_consumer_app(
    settings: Settings,
    handler_factory: Any,
    metrics: ConsumerMetrics | None = None,
    catalog_handler_factory: Any = None,
    archive_handler: ArchiveBatchHandler | None = None,
    listener: ConsumerRebalanceListener | None = None,
) -> tuple[FastStream, KafkaBroker]:
    """The consumers' FastStream app.

    ``handler_factory(dead_letter_sink, observe)`` returns the
    :class:`InteractionBatchHandler` (and ``catalog_handler_factory(dead_letter_sink)``
    the :class:`CatalogBatchHandler`, when given), built with the state store, index
    and models that bootstrap made; None: no state path (an archive-only process).
    ``listener`` hears the partition assignments of the interactions subscriber (of
    the archive's, in an archive-only app).
    """
    metrics = metrics or ConsumerMetrics()
    broker = KafkaBroker(
        settings.kafka_bootstrap,
        enable_idempotence=settings.kafka_idempotence,
        # One "Received"/"Processed" line per batch is debugging detail, not operations.
        log_level=logging.DEBUG,
    )
    router = KafkaRouter()

    async def send_dead_letters(letters: Sequence[DeadLetter]) -> None:
        for letter in letters:
            await broker.publish(
                letter.record.value or b"",
                settings.dead_letter_topic,
                key=letter.record.key,
                headers=letter.headers(),
            )

    def subscribe(
        what: str, topic: str, group: str, handle: BatchHandle, *, max_wait_ms: int,
        description: str, after: Callable[[KafkaMessage, list[Record]], None] | None = None,
        listener: ConsumerRebalanceListener | None = None,
    ) -> None:
        """A batch subscriber that commits after ``handle`` and redelivers on failure."""

        @router.subscriber(
            topic,
            batch=True,
            group_id=group,
            auto_offset_reset="earliest",
            ack_policy=AckPolicy.NACK_ON_ERROR,
            fetch_max_wait_ms=max_wait_ms,
            max_records=settings.consumer_max_records,
            batch_timeout_ms=max_wait_ms,
            decoder=_raw_values,
            listener=listener,
            title=what,
            description=description,
        )
        async def on_batch(body: list[bytes | None], message: KafkaMessage) -> None:
            records = records_of(message)
            try:
                await handle(records)
            except Exception as exc:
                metrics.observe_handler_error()
                if isinstance(exc, TemporaryFailure):
                    log.error("%s batch of %d records will be retried: %s",
                              what, len(records), exc)
                    await asyncio.sleep(RETRY_PAUSE_S)
                raise
            if after is not None:
                after(message, records)

    if handler_factory is not None:
        handler: InteractionBatchHandler = handler_factory(send_dead_letters,
                                                           metrics.observe_batch)
        subscribe(
            "interactions", settings.interactions_topic, settings.consumer_group,
            handler.handle, max_wait_ms=settings.fetch_max_wait_ms,
            description="Shopper interactions: validate, learn, update state.",
            after=lambda message, records: _observe_lag(message, records, metrics),
            listener=listener,
        )
    if catalog_handler_factory is not None:
        catalog_handler: CatalogBatchHandler = catalog_handler_factory(send_dead_letters)
        # Each subscriber has its own group: members of one group with different
        # subscriptions would rebalance each other every time either joins.
        subscribe(
            "catalog", settings.catalog_topic, f"{settings.consumer_group}.catalog",
            catalog_handler.handle, max_wait_ms=settings.fetch_max_wait_ms,
            description="Product upserts: embed, record in the catalog log, index.",
        )
    if archive_handler is not None:
        # The archive reads the same records at its own pace, off the state path.
        subscribe(
            "archive", settings.interactions_topic, f"{settings.consumer_group}.archive",
            archive_handler.handle, max_wait_ms=200,
            description="Every valid interaction into the SQL events archive.",
            listener=listener if handler_factory is None else None,
        )

    broker.include_router(router)
    app = FastStream(broker, logger=log)
    return app, broker


def _observe_lag(
    message: KafkaMessage, records: Sequence[Record], metrics: ConsumerMetrics
) -> None:
    # The high-water mark rides on every fetch response (Tansu's ListOffsets is not
    # reliable), so lag = highwater - (last offset read + 1), per partition. Lag in
    # seconds: how old the last applied record is while records still wait behind it.
    highwater_of = getattr(getattr(message, "consumer", None), "highwater", None)
    if highwater_of is None:  # FastStream's test broker has no fetch responses
        return
    last: dict[tuple[str, int], Record] = {}
    for r in records:
        seen = last.get((r.topic, r.partition))
        if seen is None or r.offset > seen.offset:
            last[(r.topic, r.partition)] = r
    now_ms = time.time() * 1000
    for (topic, partition), record in last.items():
        highwater = highwater_of(TopicPartition(topic, partition))
        if highwater is not None:
            behind = max(0, highwater - record.offset - 1)
            metrics.observe_lag(topic, partition, behind)
            seconds = (now_ms - record.timestamp_ms) / 1000 if behind else 0.0
            metrics.observe_lag_seconds(topic, partition, seconds)


def create_consumer_app(settings: Settings, role: ConsumerRole = "all") -> FastStream:
    """The consumers' app with its state store, index and models wired by infra.

    ``role``: ``"all"`` subscribes every handler; ``"state"`` the interactions and
    catalog ones (the state path, no archive); ``"archive"`` only the SQL archive's
    (nothing when ``archive_events`` is off), as :func:`run_consumer_processes` splits them.
    """
    from infra import bootstrap

    archive = bootstrap.build_sql_store(settings)
    metrics = ConsumerMetrics()
    archive.on_rejected = lambda _event_id, _reason: metrics.archive_rejected.inc()
    window = EventTimeWindow.from_settings(settings)
    archive_handler = (ArchiveBatchHandler(archive.archive_events, window)
                       if settings.archive_events and role != "state" else None)
    if role == "archive":
        app, _broker = build_consumer_app(settings, None, metrics,
                                          archive_handler=archive_handler)
    else:
        catalog = bootstrap.ensure_catalog(settings)
        index, embedder = bootstrap.build_index(settings, catalog)
        replica = bootstrap.build_replica(settings, catalog, index)
        store = bootstrap.build_state_store(settings)
        models = bootstrap.build_model_provider(settings)
        processor = bootstrap.build_processor(settings, store, index, catalog, models)
        updater = CatalogUpdater(embedder, replica.log)
        app, _broker = build_consumer_app(
            settings,
            lambda sink, observe: InteractionBatchHandler(processor, sink, observe,
                                                          replica=replica, window=window),
            metrics,
            lambda sink: CatalogBatchHandler(
                updater, sink, save_products=archive.upsert_products, replica=replica
            ),
            archive_handler,
        )
    app.on_shutdown(archive.close)

    @app.on_startup
    def collect_less() -> None:  # the long-lived objects are built by now
        tune_gc()

    @app.on_startup
    def create_missing_topics() -> None:
        # With their partitions: a topic auto-created by the first produce would get one
        # (and a memory-only broker that restarted has none).
        bootstrap.ensure_kafka_topics(settings)

    if settings.consumer_metrics_port:

        @app.on_startup
        def serve_metrics() -> None:
            start_http_server(
                settings.consumer_metrics_port, addr=settings.api_host, registry=metrics.registry
            )
            log.info("consumer metrics on :%d/metrics", settings.consumer_metrics_port)

    return app


#: Niceness of an archive process at priority "low" (and "idle" where SCHED_IDLE is missing).
LOW_PRIORITY_NICE = 10


def lower_priority(priority: ArchivePriority) -> None:
    """Make this process give the CPU to the state path's processes when the cores are busy.

    ``"idle"``: Linux ``SCHED_IDLE``, the process runs only on CPU time nobody else
    wants (elsewhere: nice 19); ``"low"``: nice 10 (CFS gives it about a tenth of a
    core beside busy nice-0 processes); ``"normal"``: unchanged. Threads started
    later inherit it. Under a burst the state is updated first and the archive lags,
    catching up when the burst ends (its consumer group's lag shows by how much).
    """
    if priority == "normal":
        return
    if priority == "idle" and hasattr(os, "sched_setscheduler"):
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    elif hasattr(os, "nice"):
        os.nice(LOW_PRIORITY_NICE if priority == "low" else 19)


def _consume(settings_json: str, parent_pid: int, role: ConsumerRole = "all") -> None:
    """One consumer process of :func:`run_consumer_processes` (a fresh interpreter)."""
    die_with_parent(parent_pid)
    logging.basicConfig(level=logging.INFO)
    settings = Settings.model_validate_json(settings_json)
    if role == "archive":
        lower_priority(settings.archive_priority)
    asyncio.run(create_consumer_app(settings, role).run())


def run_consumer_processes(settings: Settings, processes: int) -> int:
    """Run ``processes`` copies of the state consumers in one group, plus the archive's
    own process; return an exit code.

    Each topic's partitions are shared out among the processes (more processes than
    partitions leave some idle), so they use several cores where one process and its
    GIL use one. Per-user state stays with one process (records are keyed by user);
    shared increments (popularity, co-visitation, counters) are atomic in the store.
    The models kept whole and replaced per batch (the online blender, the rating
    model's global mean and item parameters) are last-writer-wins between processes:
    some of their learning steps are lost when two batches overlap. The SQL archive
    (when ``archive_events``) runs in one more process, its own consumer group, at
    ``archive_priority`` (see :func:`lower_priority`): on busy cores it gives way to
    the state path and catches up later. Process ``i`` serves metrics on
    ``consumer_metrics_port + i`` (the archive's is the last). SIGTERM/SIGINT stop
    them all gracefully; when one dies the others are stopped and its exit code
    returned, so a supervisor restarts the set; if this process is killed outright,
    the children get SIGTERM from the kernel (Linux, :func:`die_with_parent`).
    """
    if processes < 1:
        raise ValueError("processes must be >= 1")
    context = multiprocessing.get_context("spawn")  # no forked Kafka or Redis sockets
    roles: list[ConsumerRole] = ["state"] * processes
    if settings.archive_events:
        roles.append("archive")
    children = []
    for i, role in enumerate(roles):
        port = settings.consumer_metrics_port + i if settings.consumer_metrics_port else 0
        child_settings = settings.model_copy(update={"consumer_metrics_port": port})
        child = context.Process(target=_consume,
                                args=(child_settings.model_dump_json(), os.getpid(), role),
                                name=f"streamrec-consumer-{i}" if role == "state"
                                else "streamrec-archive")
        child.start()
        children.append(child)

    stopping = False

    def stop(*_: object) -> None:
        # Once only: a second SIGTERM would hit a child whose graceful shutdown already
        # put the default handler back, and kill it mid-commit (exit code -15).
        nonlocal stopping
        if stopping:
            return
        stopping = True
        for child in children:
            if child.is_alive() and child.pid is not None:
                child.terminate()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        wait([child.sentinel for child in children])  # the first one to end
        first = [c.exitcode for c in children if c.exitcode is not None]
        stop()
        for child in children:
            child.join()
        # The first one's code says why the set stopped (negative: killed by a signal).
        return next((abs(c) for c in [*first, *(c.exitcode for c in children)] if c), 0)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class BackgroundConsumer:
    """A consumers' app running on its own event loop in a daemon thread.

    For callers that are not async themselves (replays, benchmarks, tests); the
    ``streamrec consume`` command runs the app on the main thread instead.
    """

    def __init__(self, app: FastStream) -> None:
        if app.broker is None:
            raise TypeError("the app has no broker")
        self.app = app
        self.broker = app.broker
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                       name="streamrec-consumer")

    def start(self, timeout_s: float = 60.0) -> BackgroundConsumer:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.broker.start(), self.loop).result(timeout_s)
        return self

    def stop(self, timeout_s: float = 60.0) -> None:
        asyncio.run_coroutine_threadsafe(self.broker.stop(), self.loop).result(timeout_s)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def __enter__(self) -> BackgroundConsumer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
