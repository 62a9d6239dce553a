"""Stopping `streamrec demo` in any way stops every process it started (and "up" means up).

The real command runs on a small extract of the shipped data (so it starts in seconds):
it starts the Tansu broker, redis-server, `consume` and `serve` (a gunicorn master and
its worker). SIGTERM (what docker, systemd and supervisors send) must stop them all,
and so must SIGKILL of the demo itself, which can clean up nothing: the kernel then
signals the children (PR_SET_PDEATHSIG). `serve` alone killed outright takes its
workers with it too.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from infra.embedded import free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's"),
]

ROOT = Path(__file__).resolve().parents[1]
#: Purchase lines of the extract (their items make the catalog).
LINES = 400


def _small_data(folder: Path) -> Path:
    folder.mkdir()
    with gzip.open(ROOT / "data" / "purchases.csv.gz", "rt") as source:
        purchases = [next(source) for _ in range(LINES + 1)]
    with gzip.open(folder / "purchases.csv.gz", "wt") as target:
        target.writelines(purchases)
    items = {line.split(",")[2] for line in purchases[1:]}
    catalog = (ROOT / "data" / "catalog.csv").read_text().splitlines(keepends=True)
    (folder / "catalog.csv").write_text(
        catalog[0] + "".join(line for line in catalog[1:] if line.split(",")[0] in items))
    (folder / "categories.json").write_text((ROOT / "data" / "categories.json").read_text())
    return folder


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("STREAMREC_") and k not in {"REDIS_URL", "DATABASE_URL",
                                                            "KAFKA_BOOTSTRAP_SERVERS"}}
    env.update(STREAMREC_STATE_DIR=str(tmp_path / "state"),
               STREAMREC_DATA_DIR=str(_small_data(tmp_path / "data")),
               PYTHONPATH=str(ROOT))
    return env


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _wait_for_line(proc: subprocess.Popen[str], needle: str, timeout_s: float) -> None:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    seen = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        seen.append(line)
        if needle in line:
            return
    pytest.fail(f"no {needle!r} within {timeout_s:.0f} s:\n{''.join(seen[-30:])}")


def _assert_all_end(pids: list[int], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = {p: " ".join(psutil.Process(p).cmdline()[:4]) for p in pids if _alive(p)}
    assert not left, f"still running {timeout_s:.0f} s after the parent stopped: {left}"


@pytest.fixture
def reap() -> Iterator[list[int]]:
    """Pids this test started; whatever a failed test left running is killed."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_stopping_the_demo_stops_every_process_it_started(
    tmp_path: Path, how: signal.Signals, reap: list[int]
) -> None:
    port = free_port()
    demo = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "demo", "--port", str(port), "--rate", "50",
         "--status-every", "1"],
        env=_env(tmp_path), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )
    reap.append(demo.pid)
    _wait_for_line(demo, "streamrec is up", timeout_s=120)
    started = [p.pid for p in psutil.Process(demo.pid).children(recursive=True)]
    reap.extend(started)
    names = " ".join(" ".join(psutil.Process(p).cmdline()) for p in started)
    for part in ("tansu", "redis-server", "cli.main consume", "cli.main serve"):
        assert part in names, f"{part} is not among the demo's children: {names}"
    # "up" means ready (consumers joined), with the history's best sellers already scored.
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as ready:
        assert ready.status == 200
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/trending?k=5", timeout=5) as r:
        trending = json.load(r)["items"]
    assert len(trending) == 5 and all(entry["score"] > 0 for entry in trending)

    demo.send_signal(how)

    _assert_all_end([demo.pid, *started], timeout_s=25)


def test_serve_killed_outright_takes_its_workers_with_it(
    tmp_path: Path, reap: list[int], redis_url: str, kafka_bootstrap: str
) -> None:
    port = free_port()
    env = {**_env(tmp_path), "STREAMREC_REDIS_URL": redis_url,
           "STREAMREC_KAFKA_BOOTSTRAP": kafka_bootstrap}
    serve = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "serve", "--port", str(port), "--workers", "1"],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    reap.append(serve.pid)
    deadline = time.monotonic() + 90
    while True:  # serving: the worker has loaded the app
        assert time.monotonic() < deadline and serve.poll() is None, "serve did not answer"
        with contextlib.suppress(OSError), \
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
            break
        time.sleep(0.2)
    workers = [p.pid for p in psutil.Process(serve.pid).children()]
    assert workers
    reap.extend(workers)

    serve.kill()

    _assert_all_end(workers, timeout_s=5)
