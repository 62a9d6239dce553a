"""Runs the Flask API under gunicorn (each worker builds its own app and clients)."""

from __future__ import annotations

import gc
import ipaddress
import os
from typing import Any

from gunicorn.app.base import BaseApplication

from core.errors import ConfigurationError
from core.settings import Settings
from infra.process import die_with_parent

__all__ = ["MIN_SECRET_LENGTH", "check_exposed_secrets", "gunicorn_options", "one_blas_thread",
           "serve", "worker_tmp_dir"]

#: Shortest secret key / API token accepted on an address other hosts can reach.
MIN_SECRET_LENGTH = 32
#: Values that shipped as defaults or examples somewhere: anyone can sign sessions with them.
KNOWN_DEFAULT_SECRETS = frozenset({
    "change-me-in-production", "change-me", "changeme", "secret", "password", "dev",
    "development", "test", "streamrec",
})


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name (or "" = every interface): assume it is reachable
        return False


def check_exposed_secrets(settings: Settings) -> None:
    """Refuse to serve on a non-loopback address with a weak secret key or API token.

    A known or short secret key lets anyone sign a session cookie (admin pages, any
    shopper's profile); a known token opens the catalog writes. On 127.0.0.1 (the
    demo, development) an empty key is fine: the app generates one in ``state_dir``.
    """
    if _is_loopback(settings.api_host):
        return
    for env, value in (("STREAMREC_SECRET_KEY", settings.secret_key),
                       ("STREAMREC_API_TOKEN", settings.api_token)):
        problem = ("is not set" if not value
                   else "is a known default" if value.strip().lower() in KNOWN_DEFAULT_SECRETS
                   else f"is shorter than {MIN_SECRET_LENGTH} characters"
                   if len(value) < MIN_SECRET_LENGTH else "")
        if problem:
            raise ConfigurationError(
                f"refusing to serve on {settings.api_host or 'every interface'}: {env} "
                f"{problem}; set it to a random value (e.g. `openssl rand -hex 32`) or bind "
                "127.0.0.1")


class _Gunicorn(BaseApplication):
    def __init__(self, settings: Settings, options: dict[str, Any]) -> None:
        self.settings = settings
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        # Called in each worker after the fork: Redis and Kafka clients are per process.
        from api import create_app

        one_blas_thread()
        app = create_app(self.settings)
        # The catalog, index maps and libraries built so far live as long as the worker:
        # keep them out of the collector's full passes, which otherwise walked ~250k
        # objects every few hundred requests (~150 ms pauses, ~50 us a request).
        gc.freeze()
        return app


def _mark_worker_dead(server: Any, worker: Any) -> None:
    # Multiprocess metrics keep one file per worker: a dead worker's live gauges go.
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def _worker_dies_with_master(server: Any, worker: Any) -> None:
    # gunicorn's workers notice a dead master only at their next loop turn; the kernel
    # stops them at once when the master is killed outright.
    die_with_parent(server.pid)


def worker_tmp_dir() -> str | None:
    """Where gunicorn's workers keep their heartbeat file: a RAM file system when there is one.

    A gthread worker touches that file (``utime``) at every turn of its loop, about once
    per request; on a disk-backed ``/tmp`` each touch is a metadata write of the file
    system: measured with py-spy at 200 requests/s, 7 % of a worker's samples were in
    that call. gunicorn's own docs advise ``/dev/shm``. None: gunicorn's default.
    """
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None


def one_blas_thread() -> None:
    """Limit this process's BLAS libraries to one thread (called in each worker).

    A request's products are small (a profile against a few hundred candidates, one
    sequence through the network); a BLAS thread pool per worker would wake threads that
    compete with the other request threads for the same cores (the sequential model took
    12 ms per top(50) instead of 0.4 ms on a busy machine before its products were cut
    into blocks below OpenBLAS's threading threshold).
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(1, "blas")


def serve(
    settings: Settings, *, workers: int = 2, threads: int = 4, access_log: bool = False
) -> None:
    """Serve the API on ``settings.api_host:api_port`` until stopped (SIGINT/SIGTERM).

    Raises :class:`ConfigurationError` (see :func:`check_exposed_secrets`) before binding.
    """
    check_exposed_secrets(settings)
    _Gunicorn(settings, gunicorn_options(settings, workers=workers, threads=threads,
                                         access_log=access_log)).run()


def gunicorn_options(
    settings: Settings, *, workers: int = 2, threads: int = 4, access_log: bool = False
) -> dict[str, Any]:
    """The gunicorn settings :func:`serve` runs with."""
    options: dict[str, Any] = {
        "bind": f"{settings.api_host}:{settings.api_port}",
        "workers": workers,
        "threads": threads,
        "worker_class": "gthread",
        # Each worker listens on its own SO_REUSEPORT socket, so the kernel spreads
        # connections over the workers; on one shared socket, a burst of keep-alive
        # connections could all land on one worker and leave the other idle.
        "reuse_port": True,
        "timeout": 30,
        "graceful_timeout": 5,
        "accesslog": "-" if access_log else None,
        "errorlog": "-",
        "loglevel": "info",
        "post_fork": _worker_dies_with_master,
    }
    tmp_dir = worker_tmp_dir()
    if tmp_dir is not None:
        options["worker_tmp_dir"] = tmp_dir
    if settings.prometheus_multiproc_dir:
        options["child_exit"] = _mark_worker_dead
    return options
