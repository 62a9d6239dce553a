"""``streamrec bench api``: recommendation latency and throughput under gunicorn.

The run builds a catalog of ``catalog_size`` items (the shipped catalog plus
generated variants of its products, embedded by the content embedder), seeds
shopper state through the real stream processor into Redis, then serves the
API with ``streamrec serve --workers W`` in a child process. A load generator
in its own process (asyncio, raw HTTP/1.1 keep-alive connections) measures:

- a **steady** phase: ``rate`` requests/s of ``GET /api/recommendations?k=K``
  over seeded users, open loop (a request's latency counts from its scheduled
  send time, so a stalled server cannot hide its queue); server-side latency
  comes from the API's own histogram ``streamrec_api_request_duration_seconds``
  (``/metrics`` scraped before and after, quantiles interpolated in its buckets
  as Prometheus does), client-side latency from the generator;
- a **peak** phase: closed loop at each concurrency, the best requests/s with
  zero errors;
- the same peak for a bare Flask JSON "hello" app under the same gunicorn
  worker and thread settings, in the same run: ``peak_rps / hello_peak_rps``
  says what the recommender costs over Flask itself.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import math
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from flask import Flask, jsonify
from prometheus_client.parser import text_string_to_metric_families

from cli.bench.common import (
    BenchEnv,
    bench_services,
    clear_prefix,
    machine_info,
    make_events,
    percentile_ms,
)
from cli.bench.freshness import histogram_quantile
from cli.bench.models import publish_bench_models
from cli.serve import worker_tmp_dir
from core.errors import ServiceUnavailable
from core.settings import Settings
from core.types import Item
from infra.accounts import AccountStore
from infra.bootstrap import (
    build_index,
    build_processor,
    build_sql_store,
    build_state_store,
    ensure_catalog,
)
from infra.models import ModelProvider

__all__ = ["KeepAliveConn", "LoadGenerator", "generated_items", "hello_app", "hello_peak_rps",
           "latency_buckets", "run_api_bench", "serve_env", "served_run", "server",
           "tree_cpu_s"]

_ENDPOINT = "/api/recommendations"
_LATENCY = "streamrec_api_request_duration_seconds"


def hello_app() -> Flask:
    """The baseline: one JSON route and nothing else (gunicorn ``cli.bench.api:hello_app()``)."""
    app = Flask("hello")

    @app.get("/hello")
    def hello() -> Any:
        return jsonify(hello="world")

    return app


def generated_items(base: Sequence[Item], n: int, *, seed: int = 11) -> list[Item]:
    """``n`` new products: variants of ``base`` items with words of other names added.

    Each keeps its model's category and a nearby price, so the content
    embedder places it among real products rather than in empty space.
    """
    rng = np.random.default_rng(seed)
    words = sorted({w for item in base for w in item.name.split() if len(w) > 3})
    items = []
    for j in range(n):
        model = base[int(rng.integers(len(base)))]
        extra = " ".join(words[int(i)] for i in rng.integers(len(words), size=2))
        items.append(Item(item_id=f"GEN{j:06d}", name=f"{model.name} {extra}",
                          category=model.category,
                          price=round(model.price * float(rng.uniform(0.8, 1.25)), 2)))
    return items


# --- load generator (runs in its own process) ----------------------------------------------
@dataclass
class KeepAliveConn:
    """One keep-alive HTTP/1.1 connection of a load generator."""

    host: str
    port: int
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None

    async def get(self, path: str) -> int:
        """One GET on this keep-alive connection (reconnecting if needed); the status."""
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode())
        try:
            status_line = await self.reader.readline()
            if not status_line:
                raise ConnectionError("connection closed by the server")
            length, close = 0, False
            while True:
                line = await self.reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                name = name.strip().lower()
                if name == "content-length":
                    length = int(value)
                elif name == "connection" and value.strip().lower() == "close":
                    close = True
            await self.reader.readexactly(length)
        except BaseException:
            await self.close()
            raise
        if close:
            await self.close()
        return int(status_line.split()[1])

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()
        self.reader = self.writer = None


async def _steady(host: str, port: int, paths: Sequence[str], rate: float, duration: float,
                  connections: int) -> dict[str, Any]:
    queue: asyncio.Queue[tuple[float, str] | None] = asyncio.Queue()
    latencies: list[float] = []
    errors = 0

    async def worker() -> None:
        nonlocal errors
        conn = KeepAliveConn(host, port)
        while (job := await queue.get()) is not None:
            scheduled, path = job
            try:
                ok = await conn.get(path) == 200
            except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
                ok = False
            if ok:
                latencies.append(time.perf_counter() - scheduled)
            else:
                errors += 1
        await conn.close()

    workers = [asyncio.create_task(worker()) for _ in range(connections)]
    total = max(1, int(rate * duration))
    start = time.perf_counter()
    for i in range(total):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait((scheduled, paths[i % len(paths)]))
    for _ in workers:
        queue.put_nowait(None)
    await asyncio.gather(*workers)
    elapsed = time.perf_counter() - start
    return {"sent": total, "ok": len(latencies), "errors": errors, "elapsed_s": elapsed,
            "achieved_rps": len(latencies) / elapsed,
            "p50_ms": percentile_ms(latencies, 50), "p99_ms": percentile_ms(latencies, 99)}


async def _closed(host: str, port: int, paths: Sequence[str], duration: float,
                  concurrency: int) -> dict[str, Any]:
    ok = errors = 0
    deadline = time.perf_counter() + duration

    async def worker(offset: int) -> None:
        nonlocal ok, errors
        conn, i = KeepAliveConn(host, port), offset
        while time.perf_counter() < deadline:
            try:
                good = await conn.get(paths[i % len(paths)]) == 200
            except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
                good = False
            ok, errors = (ok + 1, errors) if good else (ok, errors + 1)
            i += concurrency
        await conn.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in range(concurrency)))
    elapsed = time.perf_counter() - start
    return {"concurrency": concurrency, "ok": ok, "errors": errors, "rps": ok / elapsed}


def _load(kind: str, host: str, port: int, paths: list[str], **kw: Any) -> dict[str, Any]:
    """Entry point of the load-generator process."""
    if kind == "steady":
        return asyncio.run(_steady(host, port, paths, **kw))
    return asyncio.run(_closed(host, port, paths, **kw))


class LoadGenerator:
    """A separate process that runs load phases (the servers keep their CPU to themselves)."""

    def __init__(self) -> None:
        self._pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=1, mp_context=multiprocessing.get_context("spawn"))

    def __enter__(self) -> LoadGenerator:
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.shutdown()

    def run(self, kind: str, port: int, paths: list[str], **kw: Any) -> dict[str, Any]:
        return self.submit(_load, kind, "127.0.0.1", port, paths, **kw)

    def submit(self, fn: Callable[..., dict[str, Any]], *args: Any, **kw: Any) -> dict[str, Any]:
        """``fn(*args, **kw)`` in the load-generator process (a picklable module function)."""
        return self._pool.submit(fn, *args, **kw).result()

    def peak(self, port: int, paths: list[str], duration: float,
             concurrency: Sequence[int]) -> tuple[float, list[dict[str, Any]]]:
        """Best requests/s with zero errors over ``concurrency`` levels, and every level."""
        levels = [self.run("closed", port, paths, duration=duration, concurrency=c)
                  for c in concurrency]
        clean = [lv["rps"] for lv in levels if lv["errors"] == 0 and lv["ok"] > 0]
        return (max(clean) if clean else 0.0), levels


# --- servers ----------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def server(args: list[str], env: dict[str, str], log_path: Path, health_url: str,
            timeout_s: float = 120.0) -> Iterator[subprocess.Popen[bytes]]:
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", *args], env=env, stdin=subprocess.DEVNULL,
                                stdout=log_file, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                tail = log_path.read_text(errors="replace")[-2000:]
                raise ServiceUnavailable(
                    f"{' '.join(args)} exited with {proc.returncode}; its log ends:\n{tail}")
            last = ""
            try:
                with urllib.request.urlopen(health_url, timeout=2) as r:
                    if r.status == 200:
                        break
            except urllib.error.HTTPError as exc:  # up, but a health check fails
                last = exc.read().decode(errors="replace")
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise ServiceUnavailable(
                    f"{health_url} not healthy in {timeout_s:.0f} s: {last or 'no answer'}")
            time.sleep(0.3)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def latency_buckets(url: str) -> dict[float, float]:
    """Cumulative counts of the API's recommendation latency histogram (all workers)."""
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != _LATENCY:
            continue
        for sample in family.samples:
            if (sample.name == f"{_LATENCY}_bucket" and sample.labels.get("method") == "GET"
                    and sample.labels.get("endpoint", "").endswith("recommendations")):
                bound = float(sample.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
    return buckets


def tree_cpu_s(pid: int) -> float | None:
    """CPU seconds (user + system) of a process and its children; None off Linux."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    total, found = 0.0, False
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:  # the process ended meanwhile
            continue
        if stat.parent.name == str(pid) or fields[1] == str(pid):  # itself or a child
            total += (int(fields[11]) + int(fields[12])) / tick
            found = True
    return total if found else None


def _cpu_per_request_us(before: float | None, after: float | None,
                        levels: Sequence[dict[str, Any]]) -> float | None:
    served = sum(level["ok"] for level in levels)
    if before is None or after is None or not served:
        return None
    return (after - before) / served * 1e6


def hello_peak_rps(gen: LoadGenerator, env: dict[str, str], tmp: Path, *, workers: int,
                   threads: int, duration: float, concurrency: Sequence[int]
                   ) -> tuple[float, list[dict[str, Any]], float | None]:
    """The bare Flask :func:`hello_app` under gunicorn with the API's worker and thread
    settings: its closed-loop peak requests/s, every level, and server CPU us a request."""
    hello_port = _free_port()
    hello_args = ["gunicorn", "--workers", str(workers), "--threads", str(threads),
                  "--worker-class", "gthread", "--reuse-port",
                  "--bind", f"127.0.0.1:{hello_port}",
                  "--log-level", "warning", "cli.bench.api:hello_app()"]
    tmp_dir = worker_tmp_dir()  # the API's own gunicorn settings (cli/serve.py)
    if tmp_dir is not None:
        hello_args[1:1] = ["--worker-tmp-dir", tmp_dir]
    hello_url = f"http://127.0.0.1:{hello_port}/hello"
    with server(hello_args, env, tmp / "hello.log", hello_url) as hello_proc:
        gen.run("closed", hello_port, ["/hello"], duration=min(3.0, duration), concurrency=4)
        cpu_before = tree_cpu_s(hello_proc.pid)
        peak, levels = gen.peak(hello_port, ["/hello"], duration, concurrency)
        cpu = _cpu_per_request_us(cpu_before, tree_cpu_s(hello_proc.pid), levels)
    return peak, levels, cpu


def serve_env(live: Settings) -> dict[str, str]:
    """The environment of ``streamrec serve`` on ``live``'s services, rate limit off."""
    return {**os.environ,
            "STREAMREC_KAFKA_BOOTSTRAP": live.kafka_bootstrap,
            "STREAMREC_REDIS_URL": live.redis_url,
            "STREAMREC_REDIS_PREFIX": live.redis_prefix,
            "STREAMREC_API_HOST": live.api_host,
            "STREAMREC_API_PORT": str(live.api_port),
            "STREAMREC_DATABASE_URL": live.database_url,
            "STREAMREC_STATE_DIR": str(live.state_dir),
            "STREAMREC_DATA_DIR": str(live.data_dir.resolve()),
            "STREAMREC_INTERACTIONS_TOPIC": live.interactions_topic,
            "STREAMREC_CATALOG_TOPIC": live.catalog_topic,
            "STREAMREC_DEAD_LETTER_TOPIC": live.dead_letter_topic,
            "PROMETHEUS_MULTIPROC_DIR": live.prometheus_multiproc_dir,
            "STREAMREC_PROMETHEUS_MULTIPROC_DIR": live.prometheus_multiproc_dir,
            # The load generator is one client: the per-client rate limit would refuse it.
            "STREAMREC_RATE_LIMIT_PER_S": "0"}


# --- the benchmark ----------------------------------------------------------------------------
def run_api_bench(
    settings: Settings, *, catalog_size: int = 20_000, users: int = 3_000,
    events: int = 60_000, k: int = 20, rate: float = 200.0, duration: float = 30.0,
    peak_duration: float = 10.0, concurrency: Sequence[int] = (8, 16, 32),
    workers: int = 2, threads: int = 4, log: Any = None, with_models: bool = True,
) -> dict[str, Any]:
    """Serve the API over a ``catalog_size`` catalog and measure it; the figures.

    ``with_models``: the API serves batch models trained on the seeded events
    (:func:`cli.bench.models.publish_bench_models`), as a trained API does; without
    them, only the online sources.
    """
    say = (lambda msg: print(msg, file=log, flush=True)) if log is not None else (lambda _: None)
    with served_run(settings, "api", partitions=1) as (_, live, tmp):
        return _bench(live, tmp, say, catalog_size=catalog_size, users=users, events=events,
                      k=k, rate=rate, duration=duration, peak_duration=peak_duration,
                      concurrency=concurrency, workers=workers, threads=threads,
                      with_models=with_models)


@contextlib.contextmanager
def served_run(settings: Settings, label: str, *, partitions: int, **update: Any
               ) -> Iterator[tuple[BenchEnv, Settings, Path]]:
    """Services up (:func:`bench_services`), a temporary folder, and the settings of one
    run (``update`` applied) whose API serves on a free loopback port with its multiprocess
    metrics in that folder; the run's Redis keys are deleted at the end."""
    with bench_services(settings, label=label, partitions=partitions) as env, \
            tempfile.TemporaryDirectory(prefix=f"streamrec-bench-{label}-") as tmp_name:
        tmp = Path(tmp_name)
        prom_dir = tmp / "prom"
        prom_dir.mkdir()
        live = env.run(label).model_copy(update={
            "state_dir": tmp / "state", "api_host": "127.0.0.1", "api_port": _free_port(),
            "prometheus_multiproc_dir": str(prom_dir), **update,
        })
        try:
            yield env, live, tmp
        finally:
            clear_prefix(live)


def _bench(live: Settings, tmp: Path, say: Any, *, catalog_size: int, users: int, events: int,
           k: int, rate: float, duration: float, peak_duration: float,
           concurrency: Sequence[int], workers: int, threads: int, with_models: bool = True
           ) -> dict[str, Any]:
    started = time.perf_counter()
    shipped = ensure_catalog(live)
    missing = catalog_size - len(shipped)
    if missing > 0:
        sql = build_sql_store(live)
        try:
            sql.upsert_products(generated_items(list(shipped.values()), missing))
        finally:
            sql.close()
    catalog = ensure_catalog(live)
    t0 = time.perf_counter()
    index, _ = build_index(live, catalog)  # the API workers load this snapshot
    index_s = time.perf_counter() - t0
    # Two workers creating the tables of a fresh SQLite file at once race
    # ("table orders already exists"): create them before the workers start.
    accounts = AccountStore.from_settings(live)
    accounts.create_schema()
    accounts.close()
    say(f"catalog: {len(catalog)} items, index built in {index_s:.1f} s")

    stream = make_events(events, users, sorted(catalog), seed=3, span_s=3600.0)
    t0 = time.perf_counter()
    trained = publish_bench_models(live, stream, catalog, say=say) if with_models else {}
    say(f"bench models published in {time.perf_counter() - t0:.1f} s: {trained}")
    store = build_state_store(live)
    try:
        processor = build_processor(live, store, index, catalog,
                                    ModelProvider(live.artifacts_dir) if with_models else None)
        t0 = time.perf_counter()
        for start in range(0, len(stream), 1000):
            processor.apply(stream[start:start + 1000])
        seed_s = time.perf_counter() - t0
    finally:
        store.client.close()
    say(f"seeded {events} events of {users} users in {seed_s:.1f} s")

    rng = np.random.default_rng(5)
    paths = [f"{_ENDPOINT}?user_id={u}&k={k}"
             for u in sorted({e.user_id for e in stream})]
    paths = [paths[int(i)] for i in rng.permutation(len(paths))]
    # Every request recomputed (issue 18's bar for this bench): no per-worker list cache,
    # which would answer a repeated user within a popularity epoch for a version read.
    env = {**serve_env(live), "STREAMREC_REC_CACHE_SIZE": "0"}
    base = f"http://127.0.0.1:{live.api_port}"
    figures: dict[str, Any] = {"catalog_items": len(catalog), "k": k, "workers": workers,
                               "threads": threads, "rec_cache_size": 0,
                               "seeded_users": len(paths),
                               "seeded_events": events, "models": trained or None}
    with LoadGenerator() as gen:
        api_args = ["cli.main", "serve", "--workers", str(workers), "--threads", str(threads)]
        with server(api_args, env, tmp / "api.log", f"{base}/healthz") as api_proc:
            # Warm-up: every worker loads its index and opens its Redis pool.
            gen.run("closed", live.api_port, paths, duration=min(3.0, peak_duration),
                    concurrency=4)
            before = latency_buckets(f"{base}/metrics")
            steady = gen.run("steady", live.api_port, paths, rate=rate, duration=duration,
                             connections=32)
            after = latency_buckets(f"{base}/metrics")
            delta = {b: after.get(b, 0.0) - before.get(b, 0.0) for b in after}
            say(f"steady: {steady}")
            cpu_before = tree_cpu_s(api_proc.pid)
            peak, levels = gen.peak(live.api_port, paths, peak_duration, concurrency)
            api_cpu = _cpu_per_request_us(cpu_before, tree_cpu_s(api_proc.pid), levels)
            say(f"api peak: {levels}")
        hello_peak, hello_levels, hello_cpu = hello_peak_rps(
            gen, env, tmp, workers=workers, threads=threads, duration=peak_duration,
            concurrency=concurrency)
        say(f"hello peak: {hello_levels}")

    server_requests = delta.get(math.inf, 0.0)
    figures.update({
        "rate": rate,
        "p50_ms": histogram_quantile(0.50, delta) * 1000,
        "p99_ms": histogram_quantile(0.99, delta) * 1000,
        "server_requests": server_requests,
        "client_p50_ms": steady["p50_ms"],
        "client_p99_ms": steady["p99_ms"],
        "steady_errors": steady["errors"],
        "steady_achieved_rps": steady["achieved_rps"],
        "peak_rps": peak,
        "hello_peak_rps": hello_peak,
        "peak_ratio": peak / hello_peak if hello_peak else math.nan,
        # CPU of the server (gunicorn and its workers) per request during the peak phases:
        # unlike requests/s, hardly moved by other work on the machine.
        "server_cpu_us_per_request": api_cpu,
        "hello_server_cpu_us_per_request": hello_cpu,
        "peak_levels": levels,
        "hello_levels": hello_levels,
        "setup_s": time.perf_counter() - started,
        "machine": machine_info(),
    })
    return figures
