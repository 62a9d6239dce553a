"""``streamrec demo``: every part running on this machine, fed by real history."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import click

from core.errors import DataNotFound, ServiceUnavailable
from core.ports import StateStore
from core.settings import Settings
from core.types import Item
from infra.accounts import load_or_create_secret
from infra.bootstrap import (
    build_index,
    build_state_store,
    clear_runtime,
    embedded_services,
    ensure_catalog,
    ensure_trained,
    write_runtime,
)
from infra.embedded import free_port
from infra.popularity_seed import history_digest, seed_popularity
from infra.process import preexec_die_with_parent
from infra.replay import ReplayProgress, purchase_events, replay
from offline.catalog import load_purchases

__all__ = ["API_TOKEN_FILE", "PROBE_USER", "demo_api_token", "run_demo"]

#: The user of the demo's start-up probe event.
PROBE_USER = "streamrec-probe"

#: The demo's generated API token, in its state folder (mode 0600).
API_TOKEN_FILE = "api_token"


def demo_api_token(settings: Settings) -> str:
    """``STREAMREC_API_TOKEN`` when set, else one generated once into the state folder:
    the operator endpoints (catalog writes) are never open, not even in the demo."""
    return settings.api_token or load_or_create_secret(settings.state_dir, API_TOKEN_FILE)


def _token_hint(settings: Settings, url: str) -> str:
    """How to post to the catalog (the demo's token lives in a file, never on screen)."""
    token = ("$STREAMREC_API_TOKEN" if settings.api_token
             else f"$(cat {(settings.state_dir / API_TOKEN_FILE).resolve()})")
    return (f'catalog writes need the API token: curl -H "Authorization: Bearer {token}" '
            f"-H 'Content-Type: application/json' -d '{{\"event_type\": \"item_upsert\", "
            f"...}}' {url}/api/catalog")


def _child_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "STREAMREC_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "STREAMREC_REDIS_URL": settings.redis_url,
        "STREAMREC_DATABASE_URL": settings.database_url,
        "STREAMREC_STATE_DIR": str(settings.state_dir.resolve()),
        "STREAMREC_DATA_DIR": str(settings.data_dir.resolve()),
        "STREAMREC_API_PORT": str(settings.api_port),
        "STREAMREC_API_HOST": settings.api_host,
        "STREAMREC_API_TOKEN": demo_api_token(settings),
    })
    return env


def _spawn(
    args: list[str], settings: Settings, log_path: Path, **env: str
) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log_file:
        return subprocess.Popen(
            [sys.executable, "-m", "cli.main", *args],
            env={**_child_env(settings), **env}, stdin=subprocess.DEVNULL, stdout=log_file,
            stderr=subprocess.STDOUT, start_new_session=True,
            preexec_fn=preexec_die_with_parent(),  # SIGKILL of the demo: children stop too
        )


def _stop(procs: list[subprocess.Popen[bytes]], grace_s: float = 8.0) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _check_children(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is not None:
            raise ServiceUnavailable(f"a child process exited with {proc.returncode}")


def _wait_ready(url: str, procs: list[subprocess.Popen[bytes]], timeout_s: float) -> None:
    """Wait for ``/readyz``: the API answers and the consumers have joined their group."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        _check_children(procs)
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"{url}/readyz", timeout=5) as response,
        ):
            if response.status == 200:
                return
        time.sleep(0.3)
    raise ServiceUnavailable(f"the API at {url} was not ready in {timeout_s:.0f} s")


def _wait_for_a_round_trip(
    url: str, store: StateStore, item_id: str, procs: list[subprocess.Popen[bytes]],
    timeout_s: float,
) -> None:
    """Post one view through the API and wait until the consumers applied it to the state.

    Only then do a shopper's events flow: "up" means that. The probe is one view of one
    item by the user ``streamrec-probe``.
    """
    before = store.counters().get("events.total", 0)
    request = urllib.request.Request(
        f"{url}/api/events", method="POST", headers={"Content-Type": "application/json"},
        data=json.dumps({"event_type": "view", "user_id": PROBE_USER,
                         "item_id": item_id}).encode())
    with urllib.request.urlopen(request, timeout=10):
        pass
    deadline = time.monotonic() + timeout_s
    while store.counters().get("events.total", 0) <= before:
        _check_children(procs)
        if time.monotonic() >= deadline:
            raise ServiceUnavailable(
                f"a probe event was not applied within {timeout_s:.0f} s: see the consumer log")
        time.sleep(0.2)


def _seed_popularity(settings: Settings, store: StateStore, catalog: dict[str, Item]) -> None:
    """The first visitors see the history's best sellers, not an empty state."""
    try:
        purchases = load_purchases(settings.data_dir)
    except DataNotFound:
        return
    seeded = seed_popularity(
        store, purchases, {i: item.category for i, item in catalog.items()},
        settings.popularity_half_life_s, time.time(), history_digest(settings.data_dir))
    click.echo(f"popularity: seeded from {len(purchases):,} purchases of the shipped history"
               if seeded else "popularity: this state was seeded before")


def _stop_on_termination() -> None:
    """SIGTERM and SIGHUP stop the demo as Ctrl-C does: through the clean-up below.

    Python's default for SIGTERM (what docker, systemd and supervisors send) ends the
    process at once, without ``finally`` blocks: the broker, Redis, the consumers and
    the API would be left running.
    """

    def interrupt(signum: int, frame: object) -> None:
        signal.signal(signum, signal.SIG_IGN)  # a second signal must not cut the clean-up
        raise KeyboardInterrupt(signal.Signals(signum).name)

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, interrupt)


def run_demo(
    settings: Settings, *, rate: float, limit: int | None, workers: int, status_every: float
) -> None:
    """Start the whole loop and replay purchases until stopped (Ctrl-C, SIGTERM, SIGHUP)
    or the history ends; every process it started stops with it."""
    _stop_on_termination()
    log_dir = settings.state_dir / "logs"
    click.echo("starting services ...")
    with embedded_services(settings, persist_redis=True) as live:
        catalog = ensure_catalog(live)
        index, _ = build_index(live, catalog)
        click.echo(f"catalog: {len(catalog)} products; item index: {len(index)} vectors")
        click.echo(f"collaborative model (ALS): version {ensure_trained(live)}")
        store = build_state_store(live)
        _seed_popularity(live, store, catalog)
        metrics_port = free_port()
        procs: list[subprocess.Popen[bytes]] = []
        url = f"http://{live.api_host}:{live.api_port}"
        try:
            procs.append(_spawn(["consume"], live, log_dir / "consumer.log",
                                STREAMREC_CONSUMER_METRICS_PORT=str(metrics_port)))
            procs.append(_spawn(["serve", "--workers", str(workers)], live,
                                log_dir / "api.log"))
            write_runtime(live)
            _wait_ready(url, procs, timeout_s=90)
            _wait_for_a_round_trip(url, store, next(iter(catalog)), procs, timeout_s=60)
            click.echo(f"streamrec is up: {url}  (API: {url}/api/recommendations?user_id=17850)")
            click.echo(f"consumer metrics: http://{live.api_host}:{metrics_port}/metrics")
            click.echo(_token_hint(live, url))
            click.echo(f"logs in {log_dir}; Ctrl-C stops everything")
            asyncio.run(_replay_with_status(live, store, rate, limit, status_every, procs))
        except KeyboardInterrupt:
            click.echo("\nstopping ...")
        finally:
            clear_runtime(live)
            _stop(procs)
    click.echo("stopped.")


async def _replay_with_status(
    settings: Settings, store: StateStore, rate: float, limit: int | None, status_every: float,
    procs: list[subprocess.Popen[bytes]],
) -> None:
    progress = ReplayProgress()
    stop = asyncio.Event()
    task = asyncio.create_task(
        replay(settings, purchase_events(settings.data_dir, limit), rate, progress, stop)
    )
    last_applied, last_t = 0, time.monotonic()
    try:
        while True:
            await asyncio.sleep(status_every)
            _check_children(procs)
            counters = await asyncio.to_thread(store.counters)
            applied = counters.get("events.total", 0) + counters.get("events.duplicate", 0)
            now = time.monotonic()
            eps = (applied - last_applied) / (now - last_t)
            last_applied, last_t = applied, now
            lag = max(0, progress.produced - applied - counters.get("events.dead_letter", 0))
            click.echo(
                f"[{time.strftime('%H:%M:%S')}] produced {progress.produced:,} | "
                f"applied {applied:,} | {eps:,.0f} events/s | consumer lag {lag:,} | "
                f"dead letters {counters.get('events.dead_letter', 0)}"
                + (" | replay finished" if progress.done else "")
            )
            if task.done():
                task.result()  # surfaces a replay error
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await task
