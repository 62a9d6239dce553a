"""``streamrec bench poll``: pages polling live recommendations, on the real path.

``shoppers`` simulated shoppers each poll ``GET /api/recommendations`` every
``poll_interval_s`` with ``If-None-Match`` (the ETag of the list they hold) and, about
every ``event_interval_s`` (uniform between half and one and a half times it), click an
item of that list through ``POST /api/events`` (with the list's ``rec_id``). Events go
the real way: the API produces them to Kafka (the embedded Tansu broker unless one is
configured), a consumer process applies them to Redis, which moves the shopper's state
version, so the next poll gets a fresh list instead of a 304. The API runs under gunicorn
(``streamrec serve``) with ``popularity_refresh_s`` as ``STREAMREC_POPULARITY_REFRESH_S``:
the popularity epoch, how long a list may ignore other shoppers' activity.

Phases, open loop (request ``i`` is due at its time whatever happened before; what is
still queued when a phase's time is up stays ``unsent``, so an overloaded server shows as
a lower achieved rate), from a load generator in its own process:

- warm-up: each shopper's first, unconditional poll, spread at ``warm_rate`` a second;
- the main phase: ``shoppers`` for ``duration`` seconds: ``polls_per_s``,
  ``not_modified_share``, ``server_p50_ms``/``server_p99_ms`` (the API's own latency
  histogram of the endpoint, scraped from ``/metrics`` before and after),
  ``event_to_visible_p50_ms``/``p99`` (a click posted -> the first poll whose list no
  longer holds the clicked item: seen items are never recommended) and ``errors``
  (any poll not 200/304, any event not 202, any connection error, in every phase);
- peak steps: ``shoppers`` times each of ``peak_steps`` (new shoppers warm up first),
  ``step_duration`` seconds each: upwards from the main phase until one misses when the
  main phase held its rate, else downwards until one holds;
  ``peak_polls_per_s`` is the most polls/s a phase held (at least 95 % of its target,
  no errors) with the server p99 <= 10 ms;
- then the bare Flask hello app under the same gunicorn settings, closed loop
  (``hello_peak_rps``, as ``streamrec bench api`` measures it): ``peak_ratio`` =
  ``peak_polls_per_s / hello_peak_rps``.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cli.bench.api import (
    KeepAliveConn,
    LoadGenerator,
    hello_peak_rps,
    latency_buckets,
    serve_env,
    served_run,
    server,
    tree_cpu_s,
)
from cli.bench.common import (
    machine_info,
    make_history_events,
    percentile_ms,
)
from cli.bench.freshness import histogram_quantile
from cli.bench.soak import _start_consumer, _stop, _warm_up_consumer
from core.settings import Settings
from infra.bootstrap import build_index, build_processor, build_state_store, ensure_catalog

__all__ = ["run_poll_bench"]

#: The server p99 a phase must keep for its rate to count as held.
P99_BOUND_MS = 10.0
#: A phase holds its rate when it achieves this share of its target.
HELD_SHARE = 0.95
_ENDPOINT = "/api/recommendations"


# --- the load generator's shoppers (in its own process) -------------------------------------
@dataclass
class _Shopper:
    user: str
    etag: str | None = None
    items: list[str] = field(default_factory=list)
    rec_id: str = ""
    #: (perf_counter when the click was posted, the clicked item) until a poll reflects it.
    pending: tuple[float, str] | None = None


@dataclass
class _Tally:
    """What one phase saw."""

    polls: int = 0
    not_modified: int = 0
    events: int = 0
    errors: int = 0
    visible_s: list[float] = field(default_factory=list)
    errors_by_kind: dict[str, int] = field(default_factory=dict)

    def error(self, kind: str) -> None:
        self.errors += 1
        self.errors_by_kind[kind] = self.errors_by_kind.get(kind, 0) + 1


class _Conn(KeepAliveConn):
    """A keep-alive connection that also sends headers and bodies and returns them."""

    async def request(self, method: str, path: str, headers: dict[str, str],
                      body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
        if self.reader is not None and self.reader.at_eof():
            await self.close()  # the server closed it while idle (gunicorn's keep-alive)
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        if body:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        self.writer.write(head.encode() + b"\r\n" + body)
        try:
            status_line = await self.reader.readline()
            if not status_line:
                raise ConnectionError("connection closed by the server")
            found: dict[str, str] = {}
            while (line := await self.reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                found[name.strip().lower()] = value.strip()
            data = await self.reader.readexactly(int(found.get("content-length", "0")))
        except BaseException:
            await self.close()
            raise
        if found.get("connection", "").lower() == "close":
            await self.close()
        return int(status_line.split()[1]), found, data


class _Crowd:
    """Shoppers polling and clicking on a pool of connections, phase after phase."""

    def __init__(self, port: int, users: Sequence[str], poll_interval_s: float,
                 event_interval_s: float, connections: int, seed: int = 3) -> None:
        self.port = port
        self.shoppers = [_Shopper(u) for u in users]
        self.poll_interval_s = poll_interval_s
        self.event_interval_s = event_interval_s
        self.connections = connections
        self.rng = random.Random(seed)

    async def poll(self, conn: _Conn, shopper: _Shopper, tally: _Tally) -> None:
        headers = {"If-None-Match": shopper.etag} if shopper.etag else {}
        path = f"{_ENDPOINT}?user_id={shopper.user}&k=10"
        try:
            try:
                status, found, body = await conn.request("GET", path, headers)
            except ConnectionError:  # closed by the server as the poll left: a browser
                status, found, body = await conn.request("GET", path, headers)  # retries
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            tally.error("poll connection")
            return
        tally.polls += 1
        if status == 304:
            tally.not_modified += 1
            return
        if status != 200:
            tally.error(f"poll {status}")
            return
        answer = json.loads(body)
        shopper.etag = found.get("etag")
        shopper.items = [item["item_id"] for item in answer["items"]]
        shopper.rec_id = answer["rec_id"]
        if shopper.pending is not None and shopper.pending[1] not in shopper.items:
            tally.visible_s.append(time.perf_counter() - shopper.pending[0])
            shopper.pending = None

    async def click(self, conn: _Conn, shopper: _Shopper, tally: _Tally) -> None:
        if not shopper.items or shopper.pending is not None:
            return  # nothing on screen yet, or the last click not visible yet
        item = self.rng.choice(shopper.items)
        body = json.dumps({"event_type": "click", "user_id": shopper.user, "item_id": item,
                           "rec_id": shopper.rec_id}).encode()
        posted = time.perf_counter()
        try:
            status, _, _ = await conn.request("POST", "/api/events", {}, body)
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            tally.error("event connection")
            return
        tally.events += 1
        if status != 202:
            tally.error(f"event {status}")
            return
        shopper.pending = (posted, item)

    async def run(self, active: int, duration: float, *, first_polls: int = 0,
                  warm_rate: float = 0.0) -> dict[str, Any]:
        """``active`` shoppers for ``duration`` s; or, with ``first_polls``, only the
        first polls of shoppers ``active - first_polls ..`` at ``warm_rate`` a second."""
        tally = _Tally()
        jobs: list[tuple[float, int, str]] = []
        if first_polls:
            jobs = [(j / warm_rate, active - first_polls + j, "poll")
                    for j in range(first_polls)]
            duration = first_polls / warm_rate
        else:
            for i in range(active):
                jobs.append((self.poll_interval_s * i / active, i, "poll"))
                jobs.append((self.rng.uniform(0, self.event_interval_s), i, "click"))
            heapq.heapify(jobs)
        queue: asyncio.Queue[tuple[int, str] | None] = asyncio.Queue()

        async def worker() -> None:
            conn = _Conn("127.0.0.1", self.port)
            while (job := await queue.get()) is not None:
                shopper = self.shoppers[job[0]]
                await (self.poll if job[1] == "poll" else self.click)(conn, shopper, tally)
            await conn.close()

        workers = [asyncio.create_task(worker()) for _ in range(self.connections)]
        start = time.perf_counter()
        while jobs:
            due, i, kind = heapq.heappop(jobs)
            if due >= duration:
                break
            delay = start + due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            queue.put_nowait((i, kind))
            if not first_polls:  # the shopper's next poll or click
                gap = (self.poll_interval_s if kind == "poll"
                       else self.event_interval_s * self.rng.uniform(0.5, 1.5))
                heapq.heappush(jobs, (due + gap, i, kind))
        unsent = 0
        if not first_polls:  # a phase lasts its duration: what the server did not get to
            while not queue.empty():  # by then stays unsent (and the rate shows it)
                queue.get_nowait()
                unsent += 1
        for _ in workers:
            queue.put_nowait(None)
        await asyncio.gather(*workers)
        elapsed = time.perf_counter() - start
        return {"shoppers": active, "target_polls_per_s": active / self.poll_interval_s,
                "polls": tally.polls, "polls_per_s": tally.polls / elapsed,
                "not_modified": tally.not_modified, "events": tally.events,
                "errors": tally.errors, "errors_by_kind": tally.errors_by_kind,
                "unsent": unsent,
                "visible_s": tally.visible_s, "elapsed_s": elapsed}


def _scrape(port: int) -> dict[float, float]:
    return latency_buckets(f"http://127.0.0.1:{port}/metrics")


def _server_ms(before: dict[float, float], after: dict[float, float]) -> tuple[float, float]:
    delta = {b: after.get(b, 0.0) - before.get(b, 0.0) for b in after}
    if delta.get(math.inf, 0.0) <= 0:
        return math.nan, math.nan
    return histogram_quantile(0.50, delta) * 1000, histogram_quantile(0.99, delta) * 1000


async def _shop(port: int, users: list[str], spec: dict[str, Any]) -> dict[str, Any]:
    """The load generator's whole run: warm-up, the main phase, the peak steps.

    Peak steps go up from the main phase while each holds its rate (p99 <= 10 ms), or,
    when the main phase does not, down until one does.
    """
    crowd = _Crowd(port, users, spec["poll_interval_s"], spec["event_interval_s"],
                   spec["connections"])
    shoppers, warm_rate = spec["shoppers"], spec["warm_rate"]
    warm_errors = (await crowd.run(shoppers, 0.0, first_polls=shoppers,
                                   warm_rate=warm_rate))["errors"]
    warmed = shoppers

    async def phase(active: int, duration: float) -> dict[str, Any]:
        nonlocal warm_errors, warmed
        if active > warmed:  # the new shoppers' first, unconditional polls
            warm_errors += (await crowd.run(active, 0.0, first_polls=active - warmed,
                                            warm_rate=warm_rate))["errors"]
            warmed = active
        before = await asyncio.to_thread(_scrape, port)
        server_cpu, own_cpu = tree_cpu_s(spec["api_pid"]), time.process_time()
        found = await crowd.run(active, duration)
        # CPU per request (polls and clicks) of the API's processes and of this load
        # generator, which shares the machine with them.
        requests = max(1, found["polls"] + found["events"])
        found["loadgen_cpu_us_per_request"] = (time.process_time() - own_cpu) / requests * 1e6
        server_after = tree_cpu_s(spec["api_pid"])
        found["server_cpu_us_per_request"] = (
            None if server_cpu is None or server_after is None
            else (server_after - server_cpu) / requests * 1e6)
        found["server_p50_ms"], found["server_p99_ms"] = _server_ms(
            before, await asyncio.to_thread(_scrape, port))
        return found

    phases = [await phase(shoppers, spec["duration"])]
    going_up = _held(phases[0])
    steps = sorted((n for n in spec["step_shoppers"] if (n > shoppers) == going_up),
                   reverse=not going_up)
    for active in steps:
        phases.append(await phase(active, spec["step_duration"]))
        if _held(phases[-1]) != going_up:
            break
    return {"warm_errors": warm_errors, "phases": phases}


def _held(phase: dict[str, Any]) -> bool:
    return (phase["errors"] == 0 and phase["server_p99_ms"] <= P99_BOUND_MS
            and phase["polls_per_s"] >= HELD_SHARE * phase["target_polls_per_s"])


def _shop_in_process(port: int, users: list[str], spec: dict[str, Any]) -> dict[str, Any]:
    """Entry point of the load-generator process."""
    return asyncio.run(_shop(port, users, spec))


# --- the benchmark --------------------------------------------------------------------------
def run_poll_bench(
    settings: Settings, *, shoppers: int = 3_000, poll_interval_s: float = 1.5,
    event_interval_s: float = 15.0, duration: float = 30.0,
    peak_steps: Sequence[float] = (0.25, 0.5, 0.75, 1.5, 2.0, 2.5, 3.0),
    step_duration: float = 10.0,
    popularity_refresh_s: float = 15.0, history_per_user: int = 5, workers: int = 2,
    threads: int = 4, connections: int = 64, warm_rate: float = 300.0,
    hello_duration: float = 10.0, hello_concurrency: Sequence[int] = (8, 16, 32),
    log: Any = None,
) -> dict[str, Any]:
    """Run the polling benchmark (see the module doc); the figures."""
    if shoppers < 1 or poll_interval_s <= 0 or event_interval_s <= 0 or duration <= 0:
        raise ValueError("shoppers >= 1; intervals and duration > 0")
    say = (lambda msg: print(msg, file=log, flush=True)) if log is not None else (lambda _: None)
    started = time.perf_counter()
    with served_run(settings, "poll", partitions=4,
                    popularity_refresh_s=popularity_refresh_s) as (services, run, tmp):
        step_shoppers = sorted({max(1, round(shoppers * step)) for step in peak_steps}
                               - {shoppers})
        users = [f"u{i}" for i in range(max([shoppers, *step_shoppers]))]
        _seed(run, len(users), history_per_user)
        say(f"seeded {history_per_user} events each of {len(users)} shoppers")
        spec = {"shoppers": shoppers, "poll_interval_s": poll_interval_s,
                "event_interval_s": event_interval_s, "duration": duration,
                "step_duration": step_duration, "connections": connections,
                "warm_rate": warm_rate, "step_shoppers": step_shoppers}
        env = {**serve_env(run), "STREAMREC_POPULARITY_REFRESH_S": str(popularity_refresh_s)}
        serve_args = ["cli.main", "serve", "--workers", str(workers), "--threads", str(threads)]
        consumer = _start_consumer(run)
        try:
            with LoadGenerator() as gen:
                with server(serve_args, env, tmp / "api.log",
                            f"http://127.0.0.1:{run.api_port}/healthz") as api_proc:
                    store = build_state_store(run)
                    try:  # the consumer joined its group and applies events
                        _warm_up_consumer(run, store, services.item_ids[0],
                                          lambda: consumer.poll() is None, 180.0)
                    finally:
                        store.client.close()
                    shop = gen.submit(_shop_in_process, run.api_port, users,
                                      {**spec, "api_pid": api_proc.pid})
                say(f"api phases: {[_brief(p) for p in shop['phases']]}")
                _stop(consumer)  # the hello app gets the machine as the API had it
                hello, hello_levels, hello_cpu = hello_peak_rps(
                    gen, env, tmp, workers=workers, threads=threads,
                    duration=hello_duration, concurrency=hello_concurrency)
                say(f"hello peak: {hello_levels}")
        finally:
            _stop(consumer)
    return _figures(shop, hello, hello_cpu=hello_cpu, shoppers=shoppers,
                    poll_interval_s=poll_interval_s,
                    popularity_refresh_s=popularity_refresh_s, workers=workers,
                    threads=threads, setup_s=time.perf_counter() - started)


def _seed(run: Settings, users: int, per_user: int) -> None:
    """Histories of every shopper, applied through the real stream processor into Redis."""
    catalog = ensure_catalog(run)
    index, _ = build_index(run, catalog)
    store = build_state_store(run)
    try:
        processor = build_processor(run, store, index, catalog)
        stream = make_history_events(users, per_user, sorted(catalog), seed=3, span_s=3600.0)
        for start in range(0, len(stream), 1000):
            processor.apply(stream[start:start + 1000])
    finally:
        store.client.close()


def _brief(phase: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in phase.items() if k != "visible_s"}


def _figures(shop: dict[str, Any], hello: float, **context: Any) -> dict[str, Any]:
    main = shop["phases"][0]
    held = [p["polls_per_s"] for p in shop["phases"] if _held(p)]
    peak = max(held) if held else 0.0
    visible = main["visible_s"]
    return {
        "shoppers": context["shoppers"],
        "poll_interval_s": context["poll_interval_s"],
        "polls_per_s": main["polls_per_s"],
        "peak_polls_per_s": peak,
        "hello_peak_rps": hello,
        "peak_ratio": peak / hello if hello else math.nan,
        "not_modified_share": main["not_modified"] / main["polls"] if main["polls"] else 0.0,
        "server_p50_ms": main["server_p50_ms"],
        "server_p99_ms": main["server_p99_ms"],
        "event_to_visible_p50_ms": percentile_ms(visible, 50),
        "event_to_visible_p99_ms": percentile_ms(visible, 99),
        "errors": shop["warm_errors"] + sum(p["errors"] for p in shop["phases"]),
        # Context of the run (not part of the goals).
        "popularity_refresh_s": context["popularity_refresh_s"],
        "workers": context["workers"], "threads": context["threads"],
        "events_posted": main["events"], "events_visible": len(visible),
        # CPU per request of the main phase (polls and clicks): the API's processes, the
        # load generator beside them, and the hello app's (its peak levels).
        "server_cpu_us_per_request": main.get("server_cpu_us_per_request"),
        "loadgen_cpu_us_per_request": main.get("loadgen_cpu_us_per_request"),
        "hello_server_cpu_us_per_request": context.get("hello_cpu"),
        "phases": [_brief(p) for p in shop["phases"]],
        "setup_s": context["setup_s"],
        "machine": machine_info(),
    }
