"""How ``streamrec serve`` runs gunicorn: balanced workers that keep start-up objects frozen."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import api
from cli.serve import _Gunicorn, check_exposed_secrets, gunicorn_options
from core.errors import ConfigurationError
from core.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
STRONG = "0123456789abcdef" * 4


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


@pytest.mark.parametrize("key, token, problem", [
    ("", STRONG, "STREAMREC_SECRET_KEY is not set"),
    ("change-me-in-production", STRONG, "STREAMREC_SECRET_KEY is a known default"),
    ("short-but-random-8c2f", STRONG, "STREAMREC_SECRET_KEY is shorter than 32"),
    (STRONG, "", "STREAMREC_API_TOKEN is not set"),
    (STRONG, "change-me-in-production", "STREAMREC_API_TOKEN is a known default"),
    (STRONG, "abc123", "STREAMREC_API_TOKEN is shorter than 32"),
])
@pytest.mark.parametrize("host", ["0.0.0.0", "", "10.1.2.3", "api.example.com", "::"])
def test_serve_refuses_a_reachable_address_with_a_weak_secret(
    host: str, key: str, token: str, problem: str,
) -> None:
    with pytest.raises(ConfigurationError, match=problem):
        check_exposed_secrets(Settings(api_host=host, secret_key=key, api_token=token))


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_serve_on_loopback_accepts_an_empty_secret(host: str) -> None:
    check_exposed_secrets(Settings(api_host=host, secret_key="", api_token=""))


def test_serve_with_strong_secrets_on_every_interface_is_accepted() -> None:
    check_exposed_secrets(Settings(api_host="0.0.0.0", secret_key=STRONG, api_token=STRONG))


def test_streamrec_serve_exits_with_a_clear_message_before_binding(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("STREAMREC_") and k not in {"SECRET_KEY"}}
    env.update(PYTHONPATH=str(ROOT), STREAMREC_STATE_DIR=str(tmp_path),
               STREAMREC_SECRET_KEY="change-me-in-production")
    done = subprocess.run([sys.executable, "-m", "cli.main", "serve", "--host", "0.0.0.0",
                           "--port", "1"], env=env, capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert done.returncode == 2, done.stderr
    assert "refusing to serve on 0.0.0.0: STREAMREC_SECRET_KEY is a known default" in done.stderr



def test_a_worker_runs_its_blas_on_one_thread() -> None:
    # In a fresh interpreter: the limit is process-wide, and this one's must stay as it is.
    code = ("import json, numpy, threadpoolctl\n"
            "from cli.serve import one_blas_thread\n"
            "def blas():\n"
            "    return [i['num_threads'] for i in threadpoolctl.threadpool_info()"
            " if i['user_api'] == 'blas']\n"
            "before = blas()\n"
            "one_blas_thread()\n"
            "print(json.dumps([before, blas()]))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "OPENBLAS_NUM_THREADS": "2"}).stdout
    before, after = json.loads(out)
    assert before and max(before) == 2
    assert after and set(after) == {1}
