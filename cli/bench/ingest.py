"""Ingest benchmark: events/s from Kafka through the consumers into Redis state.

N realistic events are produced into a fresh topic first; then, in the same run,

1. a bare aiokafka consumer reads them (``getmany`` loop, no processing): the baseline;
2. the real consumer pipeline (FastStream app, :class:`InteractionBatchHandler`,
   :class:`StreamProcessor`, :class:`RedisStateStore`, SQL archive) applies them;
3. the same pipeline with the SQL archive off, so the archive's share is visible;
4. with ``profile``, once more under cProfile (figures of that run are not reported).

Steady state: before the N timed events, each pipeline run applies a warm-up of
``warmup_per_user`` events for every user of the N (default :data:`WARMUP_PER_USER`, or
``covisit_window`` if that is larger), so
the timed events meet what a long-running pipeline meets: users whose recent lists
fill the co-visitation window, co-visitation sets at their cap, a large archive.
The warm-up is timed too (``events_per_s_fresh``: state filling from empty), but
``events_per_s`` is the steady figure.

Each pipeline run has its own consumer group and Redis prefix. Times run from the
start of the first timed batch to the end of the batch that completes N (group
join and warm-up are excluded); the baseline's from its first non-empty fetch to
its last. Both read with the consumers' ``fetch_max_wait_ms`` and
``consumer_max_records``, so the ratio is the cost of processing alone.

With ``processes`` > 1 each pipeline run is that many consumer processes in one
group, plus the SQL archive's own process at its CPU priority when the archive is on
(what ``streamrec consume --processes N`` runs); the warm-up is then archived too
before the timed events are produced. A group that is joined while
it consumes stops for a rebalance (seconds on Tansu), so these runs read a fresh
topic: the members join first, and the N events are produced once every partition
is assigned; the warm-up first, then, once the state counts it all, the N. The
clock is the same: first batch start to last batch end, over all members.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import io
import logging
import math
import multiprocessing
import pstats
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener

from cli.bench.common import (
    BenchEnv,
    bench_services,
    clear_prefix,
    cpu_seconds,
    event_mix,
    machine_info,
    make_events,
    make_history_events,
    process_cpu_seconds,
    redis_for,
    used_memory,
)
from consumers.app import build_consumer_app, lower_priority, tuned_gc
from consumers.handlers import (
    ArchiveBatchHandler,
    BatchResult,
    InteractionBatchHandler,
    Record,
)
from consumers.metrics import ConsumerMetrics
from core.errors import TemporaryFailure
from core.events import dump_event
from core.settings import Settings
from infra.bootstrap import (
    build_index,
    build_processor,
    build_sql_store,
    build_state_store,
    ensure_catalog,
)
from infra.kafka import ensure_topics, produce_batch
from infra.redis_store import RedisStateStore

__all__ = [
    "PipelineRun", "bare_consume", "pipeline_member", "produce_all", "run_ingest", "run_pipeline",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Users per memory figure.
MEMORY_UNIT_USERS = 100_000
#: Default warm-up events per user: fills the co-visitation window (3 by default) with
#: room to spare and, over 100k users, brings the co-visitation sets to their cap; it
#: was the window (5) when the steady-state figures of earlier sessions were taken.
WARMUP_PER_USER = 5
#: A run's batches hold at most ``events / MIN_TIMED_BATCHES`` records (the configured
#: ``consumer_max_records`` unless the run is small), so a small run is timed over
#: several batches too.
MIN_TIMED_BATCHES = 10


async def produce_all(settings: Settings, records: Sequence[tuple[bytes, bytes]]) -> float:
    """Produce ``records`` to the interactions topic with acks=all; return seconds."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all",
        enable_idempotence=settings.kafka_idempotence, linger_ms=5,
        max_batch_size=256 * 1024, request_timeout_ms=30_000,
    )
    await producer.start()
    try:
        started = time.perf_counter()
        chunk = 20_000  # bounds the producer's buffered bytes
        for i in range(0, len(records), chunk):
            await produce_batch(producer, settings.interactions_topic, records[i:i + chunk])
        return time.perf_counter() - started
    finally:
        await producer.stop()


async def bare_consume(settings: Settings, n: int, timeout_s: float) -> tuple[float, int]:
    """Read ``n`` records with a bare aiokafka consumer; return (seconds, records)."""
    consumer = AIOKafkaConsumer(
        settings.interactions_topic,
        bootstrap_servers=settings.kafka_bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
    )
    await consumer.start()
    try:
        count, first = 0, None
        deadline = time.monotonic() + timeout_s
        while count < n:
            if time.monotonic() > deadline:
                raise TemporaryFailure(f"bare consumer read {count} of {n} records in time")
            batches = await consumer.getmany(
                timeout_ms=1000, max_records=settings.consumer_max_records
            )
            got = sum(len(records) for records in batches.values())
            if got and first is None:
                first = time.perf_counter()
            count += got
        assert first is not None
        return time.perf_counter() - first, count
    finally:
        await consumer.stop()


#: A clock's reading: (first batch start, last batch end, events applied, batches).
ClockReading = tuple[float | None, float | None, int, int]


@dataclass
class PipelineRun:
    """Batch clock of one pipeline run: first batch start, last batch end, events applied.

    The batches that apply the first ``warmup`` events (the one that reaches it
    included) are not timed: once they are done the clock restarts, and
    :attr:`warmup_clock` keeps what it read until then. ``target`` counts all
    events, warm-up included. ``cpu`` (a :func:`cpu_seconds` reader) is read at the
    end of the first timed batch and of the last one; :attr:`cores` is what each
    part used over that window.
    """

    target: int
    cpu: Callable[[], dict[str, float]] | None = None
    warmup: int = 0
    first: float | None = None
    first_end: float | None = None
    last: float | None = None
    applied: int = 0
    batches: int = 0
    total: int = 0
    warmup_clock: ClockReading | None = None
    cpu_first: dict[str, float] = field(default_factory=dict)
    cpu_last: dict[str, float] = field(default_factory=dict)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def reading(self) -> ClockReading:
        return self.first, self.last, self.applied, self.batches

    def restart(self) -> None:
        """End the warm-up: keep its reading, time the next batches afresh."""
        self.warmup_clock = self.reading()
        self.first = self.first_end = self.last = None
        self.applied = self.batches = 0
        self.warmup = 0

    @property
    def seconds(self) -> float:
        if self.first is None or self.last is None:
            return float("nan")
        return self.last - self.first

    @property
    def cores(self) -> dict[str, float]:
        """CPU seconds per wall second of each part, between the first and last batch."""
        if self.first_end is None or self.last is None or self.last <= self.first_end:
            return {}
        wall = self.last - self.first_end
        return {k: (self.cpu_last[k] - v) / wall for k, v in self.cpu_first.items()
                if k in self.cpu_last}

    def wrap(self, observe: Callable[[Sequence[Record], BatchResult, float], None] | None
             ) -> Callable[[Sequence[Record], BatchResult, float], None]:
        def timed(records: Sequence[Record], result: BatchResult, seconds: float) -> None:
            now = time.perf_counter()
            self.total += result.applied
            warming = self.total - result.applied < self.warmup  # began before its end
            if self.first is None:
                self.first = now - seconds  # the handler's own start of the first batch
                self.first_end = now
                if self.cpu is not None:
                    self.cpu_first = self.cpu()
            self.last = now
            self.applied += result.applied
            self.batches += 1
            if observe is not None:
                observe(records, result, seconds)
            if warming and self.total >= self.warmup:
                self.restart()
            if self.total >= self.target and not self.done.is_set():
                if self.cpu is not None:
                    self.cpu_last = self.cpu()
                self.done.set()

        return timed


class _ProfiledExecutor(ThreadPoolExecutor):
    """One worker whose every call runs under ``profiler`` (the handler's to_thread work)."""

    def __init__(self, profiler: cProfile.Profile) -> None:
        super().__init__(max_workers=1, thread_name_prefix="bench-profiled")
        self.profiler = profiler

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        return super().submit(self.profiler.runcall, fn, *args, **kwargs)


@contextlib.asynccontextmanager
async def _pipeline(
    settings: Settings, clock: PipelineRun, *, archive: bool, state: bool = True,
    listener: ConsumerRebalanceListener | None = None,
) -> AsyncIterator[RedisStateStore]:
    """The consumers' FastStream app, started, with the batch clock around its observer.

    Wired as :func:`consumers.app.create_consumer_app` wires it: the state path
    (unless ``state`` is false: an archive-only member) and the archive optional.
    Yields the state store; stops the app on exit.
    """
    store = build_state_store(settings)
    sql = build_sql_store(settings) if archive else None
    handler_factory: Callable[[Any, Any], InteractionBatchHandler] | None = None
    if state:
        catalog = ensure_catalog(settings)
        index, _ = build_index(settings, catalog)
        processor = build_processor(settings, store, index, catalog)

        def handler_factory(sink: Any, observe: Any) -> InteractionBatchHandler:
            return InteractionBatchHandler(processor, sink, clock.wrap(observe))

    archive_handler = ArchiveBatchHandler(sql.archive_events) if sql is not None else None
    _app, broker = build_consumer_app(
        settings, handler_factory, ConsumerMetrics(), archive_handler=archive_handler,
        listener=listener,
    )
    with tuned_gc():  # as `streamrec consume` does once it is built
        try:
            await broker.start()
            yield store
        finally:
            await broker.stop()
            store.client.close()
            if sql is not None:
                sql.close()


async def run_pipeline(
    settings: Settings, n: int, *, archive: bool, timeout_s: float,
    profilers: tuple[cProfile.Profile, cProfile.Profile] | None = None,
    cpu: Callable[[], dict[str, float]] | None = None, warmup: int = 0,
) -> tuple[PipelineRun, dict[str, int]]:
    """Run the consumers' FastStream app in this process until ``warmup + n`` are applied.

    The clock times the batches after the first ``warmup`` events (see
    :class:`PipelineRun`). ``profilers`` (loop thread, worker thread) profile the
    run. Returns the clock and the store's counters.
    """
    clock = PipelineRun(warmup + n, cpu, warmup)
    loop = asyncio.get_running_loop()
    if profilers is not None:
        loop.set_default_executor(_ProfiledExecutor(profilers[1]))
        profilers[0].enable()
    try:
        async with _pipeline(settings, clock, archive=archive) as store:
            try:
                await asyncio.wait_for(clock.done.wait(), timeout_s)
            finally:
                counters = store.counters()
    except TimeoutError as exc:
        raise TemporaryFailure(f"the pipeline applied {clock.total} of {warmup + n} events "
                               f"in {timeout_s:g} s") from exc
    finally:
        if profilers is not None:
            profilers[0].disable()
    return clock, counters


class _AssignmentReporter(ConsumerRebalanceListener):
    """Tells the bench process which interactions partitions this member holds."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    async def on_partitions_revoked(self, revoked: Any) -> None:
        self.conn.send(("assigned", []))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.conn.send(("assigned", sorted(tp.partition for tp in assigned)))


def pipeline_member(settings_json: str, archive: bool, conn: Connection,
                    state: bool = True) -> None:
    """Child process: one member of a multi-process pipeline run, until told to stop.

    ``state`` false: an archive-only member, at the archive's CPU priority (as
    ``streamrec consume --processes N`` runs it). Reports its partition assignments;
    on ``"restart"`` (the warm-up is applied) restarts its batch clock and reports the
    warm-up's reading
    ``("warmup", first, last, applied, batches)``; on ``"stop"`` reports its clock
    ``("clock", first, last, applied, batches)``.
    """
    logging.basicConfig(level=logging.WARNING)
    settings = Settings.model_validate_json(settings_json)
    if not state:
        lower_priority(settings.archive_priority)

    async def member() -> ClockReading:
        clock = PipelineRun(sys.maxsize)  # the bench process decides when all are done
        loop = asyncio.get_running_loop()
        async with _pipeline(settings, clock, archive=archive, state=state,
                             listener=_AssignmentReporter(conn)):
            # Back on the loop after each message: the clock is never touched mid-batch.
            while await loop.run_in_executor(None, conn.recv) == "restart":
                clock.restart()
                assert clock.warmup_clock is not None
                conn.send(("warmup", *clock.warmup_clock))
        return clock.reading()

    conn.send(("clock", *asyncio.run(member())))


@dataclass
class _Members:
    """The child processes of a multi-process pipeline run and what they reported."""

    processes: list[Any]
    conns: list[Connection]
    assigned: list[list[int] | None]

    @classmethod
    def start(cls, settings: Settings, count: int, *, archive: bool,
              state: bool = True) -> _Members:
        context = multiprocessing.get_context("spawn")  # fresh interpreters, as in production
        processes, conns = [], []
        for i in range(count):
            mine, theirs = context.Pipe()
            child = context.Process(target=pipeline_member,
                                    name=f"bench-{'member' if state else 'archive'}-{i}",
                                    args=(settings.model_dump_json(), archive, theirs, state))
            child.start()
            processes.append(child)
            conns.append(mine)
        return cls(processes, conns, [None] * count)

    def pids(self) -> list[int]:
        return [p.pid for p in self.processes if p.pid is not None]

    def wait_assigned(self, partitions: int, timeout_s: float) -> None:
        """Until every member holds partitions and together they hold all, once each."""
        deadline = time.monotonic() + timeout_s
        while not self._settled(partitions):
            if time.monotonic() > deadline:
                raise TemporaryFailure(f"the consumer group did not settle: {self.assigned}")
            for i, conn in enumerate(self.conns):
                if not self.processes[i].is_alive():
                    raise TemporaryFailure(f"pipeline member {i} exited")
                while conn.poll(0.05):
                    message = conn.recv()
                    if message[0] == "assigned":
                        self.assigned[i] = message[1]

    def _settled(self, partitions: int) -> bool:
        held = [p for mine in self.assigned if mine for p in mine]
        return all(self.assigned) and sorted(held) == list(range(partitions))

    def _ask(self, request: str, answer: str) -> list[ClockReading]:
        """Send ``request`` to every member; their ``answer`` readings (others skipped)."""
        for conn in self.conns:
            conn.send(request)
        readings = []
        for conn in self.conns:
            while (message := conn.recv())[0] != answer:
                pass
            readings.append(message[1:])
        return readings

    def restart(self) -> list[ClockReading]:
        """Restart every member's clock (the warm-up is applied); their warm-up readings."""
        return self._ask("restart", "warmup")

    def stop(self) -> list[ClockReading]:
        """Stop every member; their clocks (first, last, applied, batches)."""
        clocks = self._ask("stop", "clock")
        for child in self.processes:
            child.join(60)
        return clocks

    def kill(self) -> None:
        for child in self.processes:
            if child.is_alive():
                child.kill()
                child.join(10)


class _Progress(threading.Thread):
    """Polls the state's event count; reads the CPU clocks past ``start`` and at ``start + n``."""

    def __init__(self, store: RedisStateStore, n: int,
                 cpu: Callable[[], dict[str, float]], start: int = 0) -> None:
        super().__init__(daemon=True, name="bench-progress")
        self.store, self.n, self.cpu, self.start_count = store, n + start, cpu, start
        self.started: tuple[float, dict[str, float]] | None = None
        self.finished: tuple[float, dict[str, float]] | None = None
        self.done = threading.Event()
        self.stopping = threading.Event()

    def applied(self) -> int:
        return self.store.counters().get("events.total", 0)

    def run(self) -> None:
        while not self.stopping.wait(0.005):
            applied = self.applied()
            if applied > self.start_count and self.started is None:
                self.started = (time.perf_counter(), self.cpu())
            if applied >= self.n:
                self.finished = (time.perf_counter(), self.cpu())
                self.done.set()
                return

    def cores(self) -> dict[str, float]:
        if self.started is None or self.finished is None:
            return {}
        (t0, first), (t1, last) = self.started, self.finished
        return {k: (last[k] - v) / (t1 - t0) for k, v in first.items() if k in last}


@dataclass(frozen=True)
class _Timed:
    """What one pipeline run measured: timed phase, warm-up (from empty state), archive."""

    seconds: float
    applied: int
    batches: int
    cores: dict[str, float]
    counters: dict[str, int]
    warmup_seconds: float
    warmup_applied: int
    #: Rows in the archive when the state had counted every event (None: archive off).
    archived: int | None
    #: From the first timed event applied to the archive holding every event (None:
    #: archive off, or in the state's process).
    archive_seconds: float | None = None


def _span(readings: Sequence[ClockReading]) -> tuple[float, int, int]:
    """(seconds from the first batch start to the last end, applied, batches) of members."""
    firsts = [r[0] for r in readings if r[0] is not None]
    lasts = [r[1] for r in readings if r[1] is not None]
    seconds = max(lasts) - min(firsts) if firsts and lasts else math.nan
    return seconds, sum(r[2] for r in readings), sum(r[3] for r in readings)


def _archived(settings: Settings, archive: bool) -> int | None:
    if not archive:
        return None
    sql = build_sql_store(settings)
    try:
        return sql.count_events()
    finally:
        sql.close()


def _wait_applied(store: RedisStateStore, n: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while (applied := store.counters().get("events.total", 0)) < n:
        if time.monotonic() > deadline:
            raise TemporaryFailure(f"the warm-up applied {applied} of {n} events "
                                   f"in {timeout_s:g} s")
        time.sleep(0.02)


def _wait_archived(settings: Settings, n: int, timeout_s: float) -> None:
    """Until the archive holds ``n`` events (polled: a count is a table scan on SQLite)."""
    deadline = time.monotonic() + timeout_s
    while (archived := _archived(settings, True) or 0) < n:
        if time.monotonic() > deadline:
            raise TemporaryFailure(f"the archive holds {archived} of {n} events "
                                   f"after {timeout_s:g} s")
        time.sleep(0.25)


def _multi_process_run(
    settings: Settings, warmup_records: Sequence[tuple[bytes, bytes]],
    records: Sequence[tuple[bytes, bytes]], processes: int, *, archive: bool,
    timeout_s: float, broker_pid: int | None, client: Any,
) -> _Timed:
    """``processes`` state members on a fresh topic and, with ``archive``, the archive's
    own member at its CPU priority (as ``streamrec consume --processes N`` runs them): the
    warm-up (until state and archive hold it all), then the timed records."""
    ensure_topics(settings.kafka_bootstrap, {settings.interactions_topic:
                                             settings.topic_partitions})
    # Built once here: members that all find no index snapshot would race to write it.
    build_index(settings, ensure_catalog(settings))
    members = _Members.start(settings, processes, archive=False)
    archivist = _Members.start(settings, 1, archive=True, state=False) if archive else None
    groups = [members] if archivist is None else [members, archivist]
    store = build_state_store(settings)
    warmup, n = len(warmup_records), len(records)
    try:
        for group in groups:
            group.wait_assigned(settings.topic_partitions, timeout_s)

        def cpu() -> dict[str, float]:
            out = cpu_seconds(client, broker_pid)
            out["consumers"] = sum(process_cpu_seconds(pid) or 0.0 for pid in members.pids())
            if archivist is not None:
                out["archive"] = sum(process_cpu_seconds(pid) or 0.0
                                     for pid in archivist.pids())
            return out

        warm: list[ClockReading] = []
        if warmup:
            asyncio.run(produce_all(settings, warmup_records))
            _wait_applied(store, warmup, timeout_s)
            if archive:
                _wait_archived(settings, warmup, timeout_s)
            warm = members.restart()
        progress = _Progress(store, n, cpu, start=warmup)
        progress.start()
        asyncio.run(produce_all(settings, records))
        if not progress.done.wait(timeout_s):
            progress.stopping.set()
            raise TemporaryFailure(f"the pipeline applied {progress.applied()} of "
                                   f"{warmup + n} events in {timeout_s:g} s")
        archived = _archived(settings, archive)
        archive_seconds = None
        if archive and progress.started is not None:
            _wait_archived(settings, warmup + n, timeout_s)
            archive_seconds = time.perf_counter() - progress.started[0]
        clocks = members.stop()
        if archivist is not None:
            archivist.stop()
        counters = store.counters()
    except BaseException:
        for group in groups:
            group.kill()
        raise
    finally:
        store.client.close()
    seconds, applied, batches = _span(clocks)
    warm_seconds, warm_applied, _ = _span(warm)
    return _Timed(seconds, applied, batches, progress.cores(), counters, warm_seconds,
                  warm_applied, archived, archive_seconds)


def _single_process_run(
    settings: Settings, warmup: int, n: int, *, archive: bool, timeout_s: float,
    broker_pid: int | None, client: Any,
) -> _Timed:
    """One consumer in this process over the bench topic (warm-up records first)."""
    clock, counters = asyncio.run(run_pipeline(
        settings, n, archive=archive, timeout_s=timeout_s, warmup=warmup,
        cpu=lambda: cpu_seconds(client, broker_pid)))
    warm_seconds, warm_applied, _ = _span(
        [clock.warmup_clock] if clock.warmup_clock is not None else [])
    return _Timed(clock.seconds, clock.applied, clock.batches, clock.cores, counters,
                  warm_seconds, warm_applied, _archived(settings, archive))


def _pipeline_figures(
    env: BenchEnv, label: str, n: int, users: int, *, archive: bool, timeout_s: float,
    memory: bool, processes: int = 1, records: Sequence[tuple[bytes, bytes]] = (),
    warmup_records: Sequence[tuple[bytes, bytes]] = (), warmup: int = 0,
) -> dict[str, Any]:
    """One pipeline run's figures. Several processes read a fresh topic (``warmup_records``
    then ``records`` are produced there); one reads the bench topic (``warmup`` events
    there, then ``n``)."""
    settings = env.run(label)
    if processes > 1:  # a fresh topic of the same partitions, produced once all have joined
        settings = settings.model_copy(update={
            "interactions_topic": f"{settings.interactions_topic}-{uuid.uuid4().hex[:8]}"})
    client = redis_for(settings)
    try:
        before_mem = used_memory(client)
        if processes > 1:
            run = _multi_process_run(
                settings, warmup_records, records, processes, archive=archive,
                timeout_s=timeout_s, broker_pid=env.broker_pid, client=client)
        else:
            run = _single_process_run(settings, warmup, n, archive=archive,
                                      timeout_s=timeout_s, broker_pid=env.broker_pid,
                                      client=client)
        after_mem = used_memory(client)
        total = run.counters.get("events.total", 0)
        if total != warmup + n:
            raise TemporaryFailure(f"state counts {total} events applied, {warmup + n} expected")
        figures: dict[str, Any] = {
            "events_per_s": run.applied / run.seconds,
            "seconds": run.seconds,
            "batches": run.batches,
            "cpu_cores": run.cores,
            "events_per_s_fresh": (run.warmup_applied / run.warmup_seconds
                                   if run.warmup_applied else None),
        }
        if run.archived is not None:
            figures["archived_when_applied"] = run.archived
        if run.archive_seconds is not None:
            figures["archive_events_per_s"] = n / run.archive_seconds
            figures["archive_caught_up_after_s"] = max(0.0, run.archive_seconds - run.seconds)
        if memory:
            figures.update(_memory_figures(client, settings, after_mem - before_mem, users))
        return figures
    finally:
        clear_prefix(settings)
        client.close()


def _memory_figures(client: Any, settings: Settings, delta: int, users: int) -> dict[str, Any]:
    # The dedupe sets grow with events, not users: report them apart.
    dedupe = sum(int(client.memory_usage(key, samples=0) or 0)
                 for key in client.scan_iter(match=f"{settings.redis_prefix}seen:*"))
    per_unit = delta / users * MEMORY_UNIT_USERS
    state = (delta - dedupe) / users * MEMORY_UNIT_USERS
    return {
        "memory_users": users,
        "memory_used_delta_bytes": delta,
        "memory_dedupe_bytes": dedupe,
        "memory_per_100k_users_bytes": round(per_unit),
        "memory_per_100k_users_mb": per_unit / 2**20,
        "memory_per_100k_users_without_dedupe_mb": state / 2**20,
    }


def _profile(env: BenchEnv, n: int, timeout_s: float, top: int, out: Any) -> None:
    settings = env.run("profile")
    # thread_time: CPU of each thread, so waits for Redis, Kafka and SQLite do not count.
    loop_profiler = cProfile.Profile(time.thread_time)
    worker_profiler = cProfile.Profile(time.thread_time)
    try:
        asyncio.run(run_pipeline(settings, n, archive=True, timeout_s=timeout_s,
                                 profilers=(loop_profiler, worker_profiler)))
    finally:
        clear_prefix(settings)
    text = io.StringIO()
    stats = pstats.Stats(loop_profiler, stream=text)
    stats.add(worker_profiler)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    print(f"cProfile of the pipeline ({n} events, archive on; CPU time of the event-loop "
          f"thread and the handler's worker thread, merged)", file=out)
    print(text.getvalue(), file=out)


def run_ingest(
    settings: Settings, *, events: int = 200_000, users: int = 100_000, partitions: int = 4,
    archive_off: bool = True, profile: bool = False, profile_top: int = 15,
    timeout_s: float = 600.0, seed: int = 7, profile_out: Any = None, processes: int = 1,
    warmup_per_user: int | None = None,
) -> dict[str, Any]:
    """Run the ingest benchmark on ``settings``' services (embedded where none); return figures.

    Keys: ``events_per_s`` (pipeline with the archive, steady state: after a warm-up
    of ``warmup_per_user`` events per user, default the larger of :data:`WARMUP_PER_USER`
    and ``covisit_window``; 0: none),
    ``events_per_s_fresh`` (the warm-up, from empty state), ``baseline_events_per_s``
    (bare consume loop), ``ratio``, ``events_per_s_archive_off``, memory per 100k
    users (after warm-up and timed events), produce rate, ``consumer_processes``,
    ``archived_when_applied`` (archive rows when the state had every event: the
    archive keeping up or not) and the CPU cores each part used in the timed phase
    (``pipeline_cpu_cores``; ``consumers`` is the member processes' sum when there
    are several, and ``bench_process`` then the producer). With several processes
    the archive runs as ``streamrec consume --processes N`` runs it, in its own
    process at ``archive_priority`` (CPU key ``archive``); ``archive_events_per_s`` (the
    timed events over the time from the first one applied to the archive holding
    all) and ``archive_caught_up_after_s`` (how long after the state it did) say
    how it kept up.
    """
    if events < 1 or users < 1:
        raise ValueError("events and users must be >= 1")
    if not 1 <= processes <= partitions:
        raise ValueError("processes must be between 1 and the number of partitions")
    per_user = (max(WARMUP_PER_USER, settings.covisit_window) if warmup_per_user is None
                else warmup_per_user)
    if per_user < 0:
        raise ValueError("warmup_per_user must be >= 0")
    # A small run read in one batch would have no timed span: keep its batches smaller.
    settings = settings.model_copy(update={"consumer_max_records": min(
        settings.consumer_max_records, max(1, events // MIN_TIMED_BATCHES))})
    with bench_services(settings, label="ingest", partitions=partitions) as env:
        now = time.time()
        generated = make_events(events, users, env.item_ids, seed=seed, start_ts=now - 60.0)
        distinct_users = len({e.user_id for e in generated})
        records = [(e.user_id.encode(), dump_event(e)) for e in generated]
        mix = event_mix(generated)
        # The warm-up's events lie before the timed ones (10 minutes' worth).
        history = make_history_events(users, per_user, env.item_ids, seed=seed + 1,
                                      start_ts=now - 660.0, span_s=600.0)
        warmup_records = [(e.user_id.encode(), dump_event(e)) for e in history]
        state_users = users if per_user else distinct_users
        del generated, history
        log.info("producing %d warm-up and %d timed events for %d users",
                 len(warmup_records), events, state_users)
        produce_s = asyncio.run(produce_all(env.settings, warmup_records + records))
        produce_s *= events / (events + len(warmup_records))  # the rate's time for N
        warmup = len(warmup_records)
        if processes == 1:
            records, warmup_records = [], []  # memory: only multi-process runs produce again

        log.info("baseline: bare aiokafka consume loop")
        base_s, _ = asyncio.run(bare_consume(env.settings, events, timeout_s))
        log.info("pipeline with the SQL archive")
        on = _pipeline_figures(env, "archive-on", events, state_users, archive=True,
                               timeout_s=timeout_s, memory=True, processes=processes,
                               records=records, warmup_records=warmup_records, warmup=warmup)
        off = None
        if archive_off:
            log.info("pipeline with the SQL archive off")
            off = _pipeline_figures(env, "archive-off", events, state_users, archive=False,
                                    timeout_s=timeout_s, memory=False, processes=processes,
                                    records=records, warmup_records=warmup_records,
                                    warmup=warmup)
        if profile:
            log.info("pipeline under cProfile")
            _profile(env, events, timeout_s, profile_top, profile_out or sys.stderr)

    baseline = events / base_s
    figures: dict[str, Any] = {
        "events": events,
        "users": distinct_users,
        "warmup_per_user": per_user,
        "warmup_events": warmup,
        "partitions": partitions,
        "consumer_processes": processes,
        "event_mix": mix,
        "events_per_s": on.pop("events_per_s"),
        "baseline_events_per_s": baseline,
        "pipeline_seconds": on.pop("seconds"),
        "baseline_seconds": base_s,
        "produce_events_per_s": events / produce_s,
        "fetch_max_wait_ms": settings.fetch_max_wait_ms,
        "consumer_max_records": settings.consumer_max_records,
        "archive_database": "configured" if settings.database_url else "sqlite (temporary)",
        "pipeline_batches": on.pop("batches"),
        "pipeline_cpu_cores": on.pop("cpu_cores"),
        **on,
    }
    figures["ratio"] = figures["events_per_s"] / baseline
    if off is not None:
        figures["events_per_s_archive_off"] = off["events_per_s"]
        figures["ratio_archive_off"] = off["events_per_s"] / baseline
        figures["pipeline_cpu_cores_archive_off"] = off["cpu_cores"]
        figures["events_per_s_archive_off_fresh"] = off["events_per_s_fresh"]
    figures["machine"] = machine_info()
    return figures
