"""Freshness benchmark: produce -> readable by the API, at a steady event rate.

The consumers run as their own process (``create_consumer_app``, as ``streamrec
consume`` runs them, metrics served on a free port). This process produces
events at ``rate`` per second for ``duration`` seconds; every ``probe_every``-th
event is a probe: a view by a user never seen before. A poller thread reads each
outstanding probe user's recent items every ``poll_s`` with the call the API makes
(``RedisStateStore.recent_items``) and records the wall time from just before the
probe's ``send`` to the first read that sees it.

Resolution: a probe becomes visible at some moment between two reads, so a
latency is over-stated by at most one poll period plus one read (both measured
and reported: ``poll_period_ms``, ``poll_read_ms``). The poller itself uses CPU
on the same machine (reported as ``cpu_cores.bench_process``).

The consumers' own histogram ``streamrec_freshness_seconds`` (record timestamp ->
batch applied) is scraped from their /metrics before and after the steady phase;
its quantiles are estimated from the bucket counts as Prometheus'
``histogram_quantile`` does.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import queue
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry, Histogram, write_to_textfile
from prometheus_client.parser import text_string_to_metric_families

from cli.bench.common import (
    bench_services,
    clear_prefix,
    cpu_seconds,
    machine_info,
    make_events,
    percentile_ms,
    process_cpu_seconds,
    redis_for,
)
from consumers.metrics import FRESHNESS_BUCKETS
from core.errors import TemporaryFailure
from core.events import ItemViewed, dump_event
from core.settings import Settings
from infra.bootstrap import build_state_store
from infra.embedded import free_port
from infra.redis_store import RedisStateStore

__all__ = [
    "ProbePoller", "consume_from_stdin", "histogram_quantile", "produce_steady", "run_freshness",
]

log = logging.getLogger(__name__)

FRESHNESS_METRIC = "streamrec_freshness_seconds"


# --- the consumers, in their own process ----------------------------------------------------
def consume_from_stdin() -> None:
    """Child process: the consumers' app on the settings read as JSON from stdin.

    Runs until SIGTERM, on which FastStream stops gracefully.
    """
    from consumers.app import create_consumer_app

    logging.basicConfig(level=logging.WARNING)
    settings = Settings(**json.loads(sys.stdin.read()))
    asyncio.run(create_consumer_app(settings).run(log_level=logging.WARNING))


def _start_consumer(settings: Settings) -> subprocess.Popen[bytes]:
    # A fresh interpreter, as `streamrec consume` would be: not a fork of this process.
    child = subprocess.Popen(
        [sys.executable, "-c", "from cli.bench.freshness import consume_from_stdin as c; c()"],
        stdin=subprocess.PIPE,
    )
    assert child.stdin is not None
    child.stdin.write(settings.model_dump_json().encode())
    child.stdin.close()
    return child


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def _buckets(text: str, metric: str = FRESHNESS_METRIC) -> dict[float, float]:
    """Cumulative bucket counts of histogram ``metric`` (upper bound -> count)."""
    for family in text_string_to_metric_families(text):
        if family.name == metric:
            return {float(s.labels["le"]): s.value
                    for s in family.samples if s.name == f"{metric}_bucket"}
    return {}


def histogram_quantile(q: float, buckets: Mapping[float, float]) -> float:
    """Quantile ``q`` (0-1) of a cumulative histogram, interpolated as Prometheus does.

    >>> histogram_quantile(0.5, {0.1: 50, 0.2: 100, math.inf: 100})
    0.1
    >>> round(histogram_quantile(0.75, {0.1: 50, 0.2: 100, math.inf: 100}), 3)
    0.15
    """
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return math.nan
    rank = q * buckets[bounds[-1]]
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):  # beyond the last finite bucket: its bound is all we know
                return lower
            return lower + (bound - lower) * (rank - below) / max(count - below, 1e-12)
        lower, below = bound, count
    return lower


# --- probes -----------------------------------------------------------------------------------
class ProbePoller(threading.Thread):
    """Reads probe users' recent items every ``poll_s`` until each one shows up.

    :meth:`expect` registers a probe (user, wall time sent); :attr:`latencies_s`
    collects sent -> first seen, in seconds.
    """

    def __init__(self, store: RedisStateStore, poll_s: float = 0.001) -> None:
        super().__init__(name="bench-probe-poller", daemon=True)
        self.store = store
        self.poll_s = poll_s
        self.latencies_s: list[float] = []
        self.polls = 0
        self.reads = 0
        self.read_s = 0.0
        self._incoming: queue.SimpleQueue[tuple[str, float]] = queue.SimpleQueue()
        self._pending: dict[str, float] = {}
        self._stop_at: float | None = None
        self._started_at = 0.0
        self._stopped_at = 0.0
        self.error: BaseException | None = None

    def expect(self, user_id: str, sent_at: float) -> None:
        self._incoming.put((user_id, sent_at))

    @property
    def pending(self) -> int:
        return len(self._pending) + self._incoming.qsize()

    @property
    def poll_period_s(self) -> float:
        return (self._stopped_at - self._started_at) / max(self.polls, 1)

    def finish(self, timeout_s: float) -> None:
        """Stop once every probe was seen, or after ``timeout_s``."""
        self._stop_at = time.monotonic() + timeout_s
        self.join(timeout_s + 5)

    def run(self) -> None:
        self._started_at = time.monotonic()
        try:
            while True:
                while not self._incoming.empty():
                    user, sent_at = self._incoming.get_nowait()
                    self._pending[user] = sent_at
                if self._stop_at is not None and (
                    not self._pending or time.monotonic() > self._stop_at
                ):
                    break
                for user, sent_at in list(self._pending.items()):
                    started = time.perf_counter()
                    seen = self.store.recent_items(user, 1)
                    self.read_s += time.perf_counter() - started
                    self.reads += 1
                    if seen:
                        self.latencies_s.append(time.time() - sent_at)
                        del self._pending[user]
                self.polls += 1
                time.sleep(self.poll_s)
        except BaseException as exc:  # surfaced by run_freshness
            self.error = exc
        finally:
            self._stopped_at = time.monotonic()


# --- producing at a steady rate -------------------------------------------------------------
async def produce_steady(
    settings: Settings, plan: Sequence[tuple[bytes, bytes, str | None]], rate: float,
    on_probe: Callable[[str, float], None],
) -> tuple[float, int]:
    """Send ``plan`` (key, value, probe user or None) at ``rate``/s; return (seconds, acked).

    Sends are spread over time by a 1 ms ticker; a probe's time is taken just before
    its ``send``. The producer lingers 2 ms, as the API's publisher does.
    """
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, acks="all",
        enable_idempotence=settings.kafka_idempotence, linger_ms=2,
    )
    await producer.start()
    try:
        futures = []
        started = time.perf_counter()
        sent = 0
        while sent < len(plan):
            due = min(len(plan), int((time.perf_counter() - started) * rate) + 1)
            while sent < due:
                key, value, probe_user = plan[sent]
                if probe_user is not None:
                    on_probe(probe_user, time.time())
                futures.append(await producer.send(settings.interactions_topic, value, key=key))
                sent += 1
            await asyncio.sleep(0.001)
        seconds = time.perf_counter() - started
        results = await asyncio.gather(*futures, return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            raise TemporaryFailure(f"{len(failed)} of {len(plan)} sends failed: {failed[0]!r}")
        return seconds, len(results)
    finally:
        await producer.stop()


def _plan(
    settings: Settings, item_ids: list[str], n: int, users: int, probe_every: int, tag: str,
    duration: float,
) -> list[tuple[bytes, bytes, str | None]]:
    events = make_events(n, users, item_ids, start_ts=time.time(), span_s=duration)
    plan: list[tuple[bytes, bytes, str | None]] = []
    for i, event in enumerate(events):
        if probe_every and i % probe_every == probe_every - 1:
            probe = ItemViewed(user_id=f"probe-{tag}-{i}", item_id=event.item_id,
                               timestamp=event.timestamp)
            plan.append((probe.user_id.encode(), dump_event(probe), probe.user_id))
        else:
            plan.append((event.user_id.encode(), dump_event(event), None))
    return plan


def _wait_until(check: Callable[[], bool], timeout_s: float, what: str,
                alive: Callable[[], bool]) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if not alive():
            raise TemporaryFailure(f"the consumer process died while waiting for {what}")
        if time.monotonic() > deadline:
            raise TemporaryFailure(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.05)


# --- the benchmark -----------------------------------------------------------------------------
def run_freshness(
    settings: Settings, *, rate: float = 1000.0, duration: float = 30.0, users: int = 100_000,
    partitions: int = 4, probe_every: int = 20, poll_s: float = 0.001,
    startup_timeout_s: float = 120.0, drain_timeout_s: float = 60.0,
    prom_path: Path | None = None,
) -> dict[str, Any]:
    """Run the freshness benchmark on ``settings``' services (embedded where none).

    Keys: ``rate`` (achieved events/s), ``p50_ms``, ``p99_ms``, ``max_ms`` of the
    probes, the consumers' own histogram quantiles (``consumer_p50_ms``...), the
    poll resolution and the CPU cores each part used. ``prom_path``: the probe
    latencies as a Prometheus histogram in text format.
    """
    if rate <= 0 or duration <= 0 or probe_every < 1:
        raise ValueError("rate and duration must be > 0, probe_every >= 1")
    n = max(1, round(rate * duration))
    with bench_services(settings, label="freshness", partitions=partitions) as env:
        run = env.run("freshness").model_copy(update={"consumer_metrics_port": free_port()})
        tag = uuid.uuid4().hex[:6]
        plan = _plan(run, env.item_ids, n, users, probe_every, tag, duration)
        store = build_state_store(run)
        client = redis_for(run)
        consumer = _start_consumer(run)
        try:
            figures = _measure(run, env.broker_pid, consumer, store, client, plan, rate,
                               poll_s, startup_timeout_s, drain_timeout_s, prom_path,
                               env.item_ids[0])
        finally:
            consumer.terminate()
            try:
                consumer.wait(30)
            except subprocess.TimeoutExpired:
                consumer.kill()
                consumer.wait(5)
            clear_prefix(run)
            store.client.close()
            client.close()
    figures.update({
        "rate_target": rate,
        "duration_s_target": duration,
        "partitions": partitions,
        "fetch_max_wait_ms": run.fetch_max_wait_ms,
        "consumer_max_records": run.consumer_max_records,
        "machine": machine_info(),
    })
    return figures


def _measure(
    run: Settings, broker_pid: int | None, consumer: subprocess.Popen[bytes],
    store: RedisStateStore, client: Any, plan: list[tuple[bytes, bytes, str | None]],
    rate: float, poll_s: float,
    startup_timeout_s: float, drain_timeout_s: float, prom_path: Path | None,
    warm_item: str,
) -> dict[str, Any]:
    port = run.consumer_metrics_port

    def alive() -> bool:
        return consumer.poll() is None

    def metrics_up() -> bool:
        try:
            _scrape(port)
        except OSError:
            return False
        return True

    _wait_until(metrics_up, startup_timeout_s, "the consumer's metrics endpoint",
                alive)
    # Warm up: the consumer has joined its group and applies events when a probe lands.
    warm = f"probe-warm-{uuid.uuid4().hex[:6]}"
    warmups = 0
    deadline = time.monotonic() + startup_timeout_s
    while not store.recent_items(warm, 1):
        if not alive() or time.monotonic() > deadline:
            raise TemporaryFailure("the consumer never applied the warm-up event")
        asyncio.run(produce_steady(run, [(warm.encode(), dump_event(
            ItemViewed(user_id=warm, item_id=warm_item)), None)], 1.0, lambda u, t: None))
        warmups += 1
        time.sleep(0.5)
    applied_before = store.counters().get("events.total", 0)
    before = _buckets(_scrape(port))

    poller = ProbePoller(store, poll_s)
    poller.start()
    cpu_before, cpu_from = _cpu(client, broker_pid, consumer.pid), time.monotonic()
    seconds, acked = asyncio.run(produce_steady(run, plan, rate, poller.expect))
    target = applied_before + acked
    _wait_until(lambda: store.counters().get("events.total", 0) >= target, drain_timeout_s,
                "the consumer to apply every event", alive)
    cpu_after, wall = _cpu(client, broker_pid, consumer.pid), time.monotonic() - cpu_from
    poller.finish(drain_timeout_s)
    if poller.error is not None:
        raise TemporaryFailure(f"the probe poller failed: {poller.error!r}")
    after = _buckets(_scrape(port))

    latencies = poller.latencies_s
    probes = sum(1 for *_, probe in plan if probe is not None)
    consumer_hist = {le: after[le] - before.get(le, 0.0) for le in after}
    if prom_path is not None:
        _write_prom(prom_path, latencies)
    return {
        "rate": acked / seconds,
        "events": acked,
        "duration_s": seconds,
        "probes": probes,
        "probes_seen": len(latencies),
        "p50_ms": percentile_ms(latencies, 50),
        "p90_ms": percentile_ms(latencies, 90),
        "p99_ms": percentile_ms(latencies, 99),
        "max_ms": max(latencies) * 1000 if latencies else math.nan,
        "poll_period_ms": poller.poll_period_s * 1000,
        "poll_read_ms": poller.read_s / max(poller.reads, 1) * 1000,
        "consumer_p50_ms": histogram_quantile(0.50, consumer_hist) * 1000,
        "consumer_p99_ms": histogram_quantile(0.99, consumer_hist) * 1000,
        "consumer_histogram": {("+Inf" if math.isinf(le) else f"{le:g}"): int(c)
                               for le, c in sorted(consumer_hist.items())},
        "cpu_cores": {k: (cpu_after[k] - v) / wall for k, v in cpu_before.items()
                      if k in cpu_after},
        "warmup_sends": warmups,
    }


def _cpu(client: Any, broker_pid: int | None, consumer_pid: int | None) -> dict[str, float]:
    out = cpu_seconds(client, broker_pid)
    if consumer_pid is not None:
        consumer = process_cpu_seconds(consumer_pid)
        if consumer is not None:
            out["consumer"] = consumer
    return out


def _write_prom(path: Path, latencies: Sequence[float]) -> None:
    registry = CollectorRegistry()
    histogram = Histogram(
        "streamrec_bench_freshness_seconds",
        "Benchmark probes: event produced -> readable through the API's state read",
        buckets=FRESHNESS_BUCKETS, registry=registry,
    )
    for seconds in latencies:
        histogram.observe(seconds)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), registry)
