"""Runs the Flask API under gunicorn (each worker builds its own app and clients)."""

from __future__ import annotations

from typing import Any

from gunicorn.app.base import BaseApplication

from core.settings import Settings

__all__ = ["serve"]


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

        return create_app(self.settings)


def _mark_worker_dead(server: Any, worker: Any) -> None:
    # Multiprocess metrics keep one file per worker: a dead worker's live gauges go.
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def serve(
    settings: Settings, *, workers: int = 2, threads: int = 4, access_log: bool = False
) -> None:
    """Serve the API on ``settings.api_host:api_port`` until stopped (SIGINT/SIGTERM)."""
    options: dict[str, Any] = {
        "bind": f"{settings.api_host}:{settings.api_port}",
        "workers": workers,
        "threads": threads,
        "worker_class": "gthread",
        "timeout": 30,
        "graceful_timeout": 5,
        "accesslog": "-" if access_log else None,
        "errorlog": "-",
        "loglevel": "info",
    }
    if settings.prometheus_multiproc_dir:
        options["child_exit"] = _mark_worker_dead
    _Gunicorn(settings, options).run()
