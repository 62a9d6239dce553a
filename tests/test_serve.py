"""How ``streamrec serve`` runs gunicorn: balanced workers that keep start-up objects frozen."""

from __future__ import annotations

import gc

import pytest

import api
from cli.serve import _Gunicorn, gunicorn_options
from core.settings import Settings


def test_each_worker_listens_on_its_own_socket_so_connections_are_spread() -> None:
    options = gunicorn_options(Settings(), workers=3, threads=2)
    assert options["reuse_port"] is True
    assert (options["workers"], options["threads"], options["worker_class"]) == (3, 2, "gthread")
    assert "child_exit" not in options  # no multiprocess metrics directory: nothing to clean
    with_metrics = gunicorn_options(Settings(prometheus_multiproc_dir="/tmp/prom"))
    assert callable(with_metrics["child_exit"])


def test_a_worker_freezes_what_it_built_before_serving(monkeypatch: pytest.MonkeyPatch) -> None:
    built = object()
    monkeypatch.setattr(api, "create_app", lambda settings: built)
    gc.unfreeze()
    try:
        assert _Gunicorn(Settings(), gunicorn_options(Settings())).load() is built
        assert gc.get_freeze_count() > 0  # the collector's full passes skip them
    finally:
        gc.unfreeze()
