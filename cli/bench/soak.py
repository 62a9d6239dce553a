"""Load and soak runs: the API under steady load, and the consumers over minutes.

``run_api_load``: the API served by gunicorn (``cli.serve``, its own process, rate
limit off: one loopback client stands in for a crowd) answers ``rate`` requests/s
for ``duration`` seconds while this process streams ``event_rate`` events/s into
Kafka and a consumer process applies them. Requests are open-loop: request ``i``
is due at ``start + i / rate`` whatever happened before, sent by a pool of
keep-alive connections; a request that waits for a free connection counts that
wait in ``corrected_p99_ms`` (coordinated omission), while ``p99_ms`` is the
service time alone. Any status other than 200/202 or any connection error is an
error. The mix: 60 % recommendations of known users, 15 % trending, 15 % similar
items, 10 % ``POST /api/events``.

``run_consumer_soak``: ``rate`` events/s for ``duration`` seconds into a consumer
process whose resident memory (RSS) is sampled every ``sample_s``; reports RSS at
start, end and max, the least-squares slope (MB/min) over the whole run and after
the first minute (warm-up: caches, the group join), the consumer's backlog at each
sample and at the end, and Redis memory (which grows by design: dedupe ids and
state for new users).

Both run on the services the settings name or on embedded ones (``bench_services``),
on loopback only, with their own topic, group and Redis prefix.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import math
import queue
import random
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import psutil
from aiokafka import AIOKafkaProducer

from cli.bench.common import (
    bench_services,
    clear_prefix,
    machine_info,
    make_events,
    percentile_ms,
    redis_for,
    used_memory,
)
from core.errors import TemporaryFailure
from core.events import ItemViewed, dump_event
from core.settings import Settings
from infra.bootstrap import build_state_store
from infra.embedded import free_port
from infra.redis_store import RedisStateStore

__all__ = [
    "EventStreamer",
    "rss_slope_mb_per_min",
    "run_api_load",
    "run_consumer_soak",
    "serve_from_stdin",
]

log = logging.getLogger(__name__)

MB = 1024 * 1024
OK_STATUSES = frozenset({200, 202})


# --- child processes ---------------------------------------------------------------------
def serve_from_stdin() -> None:
    """Child process: the API under gunicorn on the settings read as JSON from stdin.

    stdin: ``{"settings": {...}, "workers": N, "threads": M}``. The rate limit is
    turned off (one loopback client plays every shopper).
    """
    from cli.serve import serve

    spec = json.loads(sys.stdin.read())
    settings = Settings(**spec["settings"]).model_copy(update={"rate_limit_per_s": 0.0})
    serve(settings, workers=int(spec["workers"]), threads=int(spec["threads"]))


def _start_child(entry: str, payload: str) -> subprocess.Popen[bytes]:
    # A fresh interpreter, as the `streamrec` commands would be: not a fork of this process.
    child = subprocess.Popen([sys.executable, "-c", entry], stdin=subprocess.PIPE,
                             stdout=subprocess.DEVNULL)
    assert child.stdin is not None
    child.stdin.write(payload.encode())
    child.stdin.close()
    return child


def _start_consumer(settings: Settings) -> subprocess.Popen[bytes]:
    return _start_child("from cli.bench.freshness import consume_from_stdin as c; c()",
                        settings.model_dump_json())


def _start_api(settings: Settings, workers: int, threads: int) -> subprocess.Popen[bytes]:
    payload = json.dumps({"settings": json.loads(settings.model_dump_json()),
                          "workers": workers, "threads": threads})
    return _start_child("from cli.bench.soak import serve_from_stdin as s; s()", payload)


def _stop(child: subprocess.Popen[bytes]) -> None:
    child.terminate()
    try:
        child.wait(30)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait(5)


def _wait_until(check: Callable[[], bool], timeout_s: float, what: str,
                alive: Callable[[], bool]) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if not alive():
            raise TemporaryFailure(f"a child process died while waiting for {what}")
        if time.monotonic() > deadline:
            raise TemporaryFailure(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.2)


def _warm_up_consumer(run: Settings, store: RedisStateStore, item_id: str,
                      alive: Callable[[], bool], timeout_s: float) -> None:
    """Wait until the consumer joined its group and applies events."""
    warm = f"warm-{uuid.uuid4().hex[:6]}"
    deadline = time.monotonic() + timeout_s

    async def send_one() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=run.kafka_bootstrap, acks="all")
        await producer.start()
        try:
            await producer.send_and_wait(run.interactions_topic, dump_event(
                ItemViewed(user_id=warm, item_id=item_id)), key=warm.encode())
        finally:
            await producer.stop()

    while not store.recent_items(warm, 1):
        if not alive() or time.monotonic() > deadline:
            raise TemporaryFailure("the consumer never applied the warm-up event")
        asyncio.run(send_one())
        time.sleep(1.0)


# --- streaming events at a steady rate ----------------------------------------------------
class EventStreamer(threading.Thread):
    """Produces ``rate`` events/s to the interactions topic for ``duration`` seconds.

    Events are made one second's worth at a time (never the whole run in memory);
    sends are spread over each second by a 5 ms ticker and acks (acks=all) are
    checked once a second. ``sent`` and ``failed`` count as it goes.
    """

    def __init__(self, settings: Settings, item_ids: Sequence[str], *, rate: float,
                 duration: float, users: int, seed: int = 11) -> None:
        super().__init__(name="bench-event-streamer", daemon=True)
        self.settings = settings
        self.item_ids = list(item_ids)
        self.rate = rate
        self.duration = duration
        self.users = users
        self.seed = seed
        self.sent = 0
        self.failed = 0
        self.seconds = 0.0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._stream())
        except BaseException as exc:  # surfaced by the caller
            self.error = exc

    async def _stream(self) -> None:
        settings = self.settings
        producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap, acks="all",
            enable_idempotence=settings.kafka_idempotence, linger_ms=5,
        )
        await producer.start()
        try:
            total = max(1, round(self.rate * self.duration))
            per_second = max(1, round(self.rate))
            started = time.perf_counter()
            futures: list[asyncio.Future[Any]] = []
            second = -1
            records: list[tuple[bytes, bytes]] = []
            while self.sent < total:
                due = min(total, int((time.perf_counter() - started) * self.rate) + 1)
                while self.sent < due:
                    if self.sent // per_second != second:
                        second = self.sent // per_second
                        self.failed += await _settle(futures)
                        futures = []
                        records = [(e.user_id.encode(), dump_event(e)) for e in make_events(
                            per_second, self.users, self.item_ids, seed=self.seed + second,
                            span_s=1.0)]
                    key, value = records[self.sent % per_second]
                    futures.append(await producer.send(settings.interactions_topic, value,
                                                       key=key))
                    self.sent += 1
                await asyncio.sleep(0.005)
            self.failed += await _settle(futures)
            self.seconds = time.perf_counter() - started
        finally:
            await producer.stop()


async def _settle(futures: list[asyncio.Future[Any]]) -> int:
    results = await asyncio.gather(*futures, return_exceptions=True)
    return sum(1 for r in results if isinstance(r, BaseException))


# --- the HTTP load --------------------------------------------------------------------------
class _Load:
    """Open-loop requests at a fixed rate over a pool of keep-alive connections."""

    def __init__(self, port: int, requests: list[tuple[str, str, bytes | None]], rate: float,
                 connections: int) -> None:
        self.port = port
        self.requests = requests
        self.rate = rate
        self.connections = connections
        self.service_s: list[float] = []
        self.corrected_s: list[float] = []
        self.statuses: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[tuple[float, int] | None] = queue.SimpleQueue()

    def run(self) -> float:
        workers = [threading.Thread(target=self._worker, daemon=True)
                   for _ in range(self.connections)]
        for worker in workers:
            worker.start()
        started = time.perf_counter()
        for i in range(len(self.requests)):
            due = started + i / self.rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            self._queue.put((due, i))
        for _ in workers:
            self._queue.put(None)
        for worker in workers:
            worker.join(60)
        return time.perf_counter() - started

    def _worker(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        while (job := self._queue.get()) is not None:
            due, i = job
            method, path, body = self.requests[i]
            sent = time.perf_counter()
            try:
                headers = {"Content-Type": "application/json"} if body is not None else {}
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                status = str(response.status)
            except (OSError, http.client.HTTPException) as exc:
                status = type(exc).__name__
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            done = time.perf_counter()
            with self._lock:
                self.statuses[status] += 1
                self.service_s.append(done - sent)
                self.corrected_s.append(done - due)
        conn.close()


def _request_mix(n: int, users: int, item_ids: Sequence[str], seed: int = 5
                 ) -> list[tuple[str, str, bytes | None]]:
    rng = random.Random(seed)
    out: list[tuple[str, str, bytes | None]] = []
    for _ in range(n):
        pick = rng.random()
        item = item_ids[min(len(item_ids) - 1, int(rng.paretovariate(1.2)) - 1)]
        if pick < 0.60:
            out.append(("GET", f"/api/recommendations?user_id=u{rng.randrange(users)}&k=10",
                        None))
        elif pick < 0.75:
            out.append(("GET", "/api/trending?k=10", None))
        elif pick < 0.90:
            out.append(("GET", f"/api/items/{item}/similar?k=10", None))
        else:
            body = json.dumps({"event_type": "view", "user_id": f"u{rng.randrange(users)}",
                               "item_id": item}).encode()
            out.append(("POST", "/api/events", body))
    return out


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as answer:
            return bool(answer.status == 200)
    except (OSError, urllib.error.HTTPError):
        return False


def _tree_rss(pid: int) -> int:
    """RSS of a process and its children (gunicorn master + workers), in bytes."""
    try:
        proc = psutil.Process(pid)
        return int(sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]))
    except psutil.Error:
        return 0


def run_api_load(
    settings: Settings, *, rate: float = 500.0, duration: float = 60.0,
    event_rate: float = 1000.0, users: int = 20_000, partitions: int = 4, workers: int = 2,
    threads: int = 8, connections: int = 32, startup_timeout_s: float = 180.0,
) -> dict[str, Any]:
    """The API at ``rate`` requests/s while events stream at ``event_rate``/s (see module doc)."""
    if rate <= 0 or duration <= 0 or event_rate < 0:
        raise ValueError("rate and duration must be > 0, event_rate >= 0")
    with bench_services(settings, label="load", partitions=partitions) as env:
        run = env.run("load").model_copy(update={"api_port": free_port()})
        store = build_state_store(run)
        consumer = _start_consumer(run)
        api = _start_api(run, workers, threads)
        try:
            def alive() -> bool:
                return consumer.poll() is None and api.poll() is None

            _wait_until(lambda: _healthy(run.api_port), startup_timeout_s, "the API", alive)
            _warm_up_consumer(run, store, env.item_ids[0], alive, startup_timeout_s)
            # Some history first, so recommendations take their personalised path.
            applied_before = store.counters().get("events.total", 0)
            history = EventStreamer(run, env.item_ids, rate=max(event_rate, 1.0) * 5,
                                    duration=2.0, users=users, seed=1)
            history.run()
            applied_before += history.sent
            _wait_until(lambda: store.counters().get("events.total", 0) >= applied_before,
                        120.0, "the consumer to apply the history", alive)
            n = max(1, round(rate * duration))
            load = _Load(run.api_port, _request_mix(n, users, env.item_ids), rate, connections)
            streamer = EventStreamer(run, env.item_ids, rate=event_rate, duration=duration,
                                     users=users) if event_rate > 0 else None
            rss_before = _tree_rss(api.pid)
            if streamer is not None:
                streamer.start()
            seconds = load.run()
            if streamer is not None:
                streamer.join(duration + 60)
                if streamer.error is not None:
                    raise TemporaryFailure(f"the event streamer failed: {streamer.error!r}")
            rss_after = _tree_rss(api.pid)
            streamed = streamer.sent if streamer is not None else 0
            api_events = sum(1 for m, *_ in load.requests if m == "POST")
            target = applied_before + streamed + api_events
            drained_from = time.monotonic()
            _wait_until(lambda: store.counters().get("events.total", 0) >= target, 120.0,
                        "the consumer to apply every event", alive)
            drain_s = time.monotonic() - drained_from
        finally:
            _stop(api)
            _stop(consumer)
            clear_prefix(run)
            store.client.close()
    errors = {s: c for s, c in load.statuses.items() if not s.isdigit() or
              int(s) not in OK_STATUSES}
    return {
        "requests": len(load.requests),
        "rate": len(load.requests) / seconds,
        "duration_s": seconds,
        "errors": sum(errors.values()),
        "statuses": dict(load.statuses),
        "p50_ms": percentile_ms(load.service_s, 50),
        "p95_ms": percentile_ms(load.service_s, 95),
        "p99_ms": percentile_ms(load.service_s, 99),
        "max_ms": max(load.service_s) * 1000,
        "corrected_p99_ms": percentile_ms(load.corrected_s, 99),
        "events_streamed": streamed,
        "event_rate": streamed / streamer.seconds if streamer and streamer.seconds else 0.0,
        "event_send_failures": streamer.failed if streamer is not None else 0,
        "events_via_api": api_events,
        "consumer_drain_s_after_load": drain_s,
        "api_rss_mb": {"before": rss_before / MB, "after": rss_after / MB},
        "rate_target": rate,
        "event_rate_target": event_rate,
        "workers": workers,
        "threads": threads,
        "connections": connections,
        "machine": machine_info(),
    }


# --- the consumer soak ----------------------------------------------------------------------
def rss_slope_mb_per_min(samples: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of ``(seconds, bytes)`` samples, in MB per minute.

    >>> rss_slope_mb_per_min([(0, 100 * MB), (60, 101 * MB), (120, 102 * MB)])
    1.0
    >>> math.isnan(rss_slope_mb_per_min([(0, 1.0)]))
    True
    """
    if len(samples) < 2:
        return math.nan
    n = len(samples)
    mean_t = sum(t for t, _ in samples) / n
    mean_v = sum(v for _, v in samples) / n
    var = sum((t - mean_t) ** 2 for t, _ in samples)
    if var == 0:
        return math.nan
    cov = sum((t - mean_t) * (v - mean_v) for t, v in samples)
    return round(cov / var * 60 / MB, 6)


def run_consumer_soak(
    settings: Settings, *, rate: float = 5000.0, duration: float = 300.0,
    sample_s: float = 5.0, users: int = 100_000, partitions: int = 4,
    warmup_s: float = 60.0, startup_timeout_s: float = 120.0, drain_timeout_s: float = 120.0,
) -> dict[str, Any]:
    """A consumer process under ``rate`` events/s for ``duration`` s, RSS every ``sample_s``."""
    if rate <= 0 or duration <= 0 or sample_s <= 0:
        raise ValueError("rate, duration and sample_s must be > 0")
    with bench_services(settings, label="soak", partitions=partitions) as env:
        run = env.run("soak")
        store = build_state_store(run)
        client = redis_for(run)
        consumer = _start_consumer(run)
        samples: list[dict[str, float]] = []
        try:
            def alive() -> bool:
                return consumer.poll() is None

            _warm_up_consumer(run, store, env.item_ids[0], alive, startup_timeout_s)
            proc = psutil.Process(consumer.pid)
            applied_before = store.counters().get("events.total", 0)
            redis_before = used_memory(client)
            streamer = EventStreamer(run, env.item_ids, rate=rate, duration=duration,
                                     users=users)
            started = time.monotonic()
            streamer.start()
            drain_from: float | None = None
            drained = False
            while True:
                elapsed = time.monotonic() - started
                applied = store.counters().get("events.total", 0) - applied_before
                samples.append({"t_s": round(elapsed, 1), "rss_mb": proc.memory_info().rss / MB,
                                "produced": streamer.sent, "applied": applied,
                                "backlog": streamer.sent - applied})
                if not alive():
                    raise TemporaryFailure("the consumer process died during the soak")
                if not streamer.is_alive():
                    if streamer.error is not None:
                        raise TemporaryFailure(f"the event streamer failed: {streamer.error!r}")
                    # Producing is over: keep sampling while the consumer drains its backlog.
                    drain_from = drain_from or time.monotonic()
                    drained = applied >= streamer.sent
                    if drained or time.monotonic() - drain_from > drain_timeout_s:
                        break
                time.sleep(max(0.0, sample_s - (time.monotonic() - started - elapsed)))
            drain_s = time.monotonic() - (drain_from or time.monotonic())
            rss_end = proc.memory_info().rss / MB
            redis_after = used_memory(client)
            applied_total = store.counters().get("events.total", 0) - applied_before
        finally:
            _stop(consumer)
            clear_prefix(run)
            store.client.close()
            client.close()
    rss = [(s["t_s"], s["rss_mb"] * MB) for s in samples]
    steady = [(t, v) for t, v in rss if t >= warmup_s]
    return {
        "events": streamer.sent,
        "rate": streamer.sent / streamer.seconds,
        "duration_s": streamer.seconds,
        "send_failures": streamer.failed,
        "applied": applied_total,
        "max_backlog": max(s["backlog"] for s in samples),
        "backlog_at_end_of_producing": next(
            (s["backlog"] for s in samples if s["produced"] >= streamer.sent), math.nan),
        "drained": drained,
        "drain_s": drain_s,
        "rss_mb_start": samples[0]["rss_mb"],
        "rss_mb_end": rss_end,
        "rss_mb_max": max(max(s["rss_mb"] for s in samples), rss_end),
        "rss_slope_mb_per_min": rss_slope_mb_per_min(rss),
        "rss_slope_mb_per_min_after_warmup": rss_slope_mb_per_min(steady),
        "redis_used_mb": {"before": redis_before / MB, "after": redis_after / MB},
        "samples": samples,
        "rate_target": rate,
        "duration_s_target": duration,
        "sample_s": sample_s,
        "warmup_s": warmup_s,
        "partitions": partitions,
        "consumer_max_records": run.consumer_max_records,
        "archive_events": run.archive_events,
        "machine": machine_info(),
    }
