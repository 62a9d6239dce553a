"""``streamrec demo``: every part running on this machine, fed by real history."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import click

from core.errors import ServiceUnavailable
from core.settings import Settings
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
from infra.replay import ReplayProgress, purchase_events, replay

__all__ = ["API_TOKEN_FILE", "demo_api_token", "run_demo"]

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


def _wait_healthy(url: str, procs: list[subprocess.Popen[bytes]], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                raise ServiceUnavailable(f"a child process exited with {proc.returncode}")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"{url}/healthz", timeout=2) as response,
        ):
            if response.status == 200:
                return
        time.sleep(0.3)
    raise ServiceUnavailable(f"the API at {url} did not become healthy in {timeout_s:.0f} s")


def run_demo(
    settings: Settings, *, rate: float, limit: int | None, workers: int, status_every: float
) -> None:
    """Start the whole loop and replay purchases until Ctrl-C (or the history ends)."""
    log_dir = settings.state_dir / "logs"
    click.echo("starting services ...")
    with embedded_services(settings, persist_redis=True) as live:
        catalog = ensure_catalog(live)
        index, _ = build_index(live, catalog)
        click.echo(f"catalog: {len(catalog)} products; item index: {len(index)} vectors")
        click.echo(f"collaborative model (ALS): version {ensure_trained(live)}")
        store = build_state_store(live)
        metrics_port = free_port()
        procs = [
            _spawn(["consume"], live, log_dir / "consumer.log",
                   STREAMREC_CONSUMER_METRICS_PORT=str(metrics_port)),
            _spawn(["serve", "--workers", str(workers)], live, log_dir / "api.log"),
        ]
        url = f"http://{live.api_host}:{live.api_port}"
        write_runtime(live)
        try:
            _wait_healthy(url, procs, timeout_s=60)
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
    settings: Settings, store: object, rate: float, limit: int | None, status_every: float,
    procs: list[subprocess.Popen[bytes]],
) -> None:
    from core.ports import StateStore

    assert isinstance(store, StateStore)
    progress = ReplayProgress()
    stop = asyncio.Event()
    task = asyncio.create_task(
        replay(settings, purchase_events(settings.data_dir, limit), rate, progress, stop)
    )
    last_applied, last_t = 0, time.monotonic()
    try:
        while True:
            await asyncio.sleep(status_every)
            for proc in procs:
                if proc.poll() is not None:
                    raise ServiceUnavailable(f"a child process exited with {proc.returncode}")
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
