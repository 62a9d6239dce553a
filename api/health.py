"""Liveness and readiness.

``/healthz``: the broker and Redis answer (503 when one does not); its body also
names the parts still starting. ``/readyz``: 200 only when everything runs, the
consumers included (they join their group seconds after the API starts, and until
then a shopper's events do not reach their recommendations); 503 with the parts
still starting otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from flask import Blueprint, Response, jsonify

from api.services import services

__all__ = ["bp"]

bp = Blueprint("health", __name__)


def _run(checks: Mapping[str, Callable[[], bool]]) -> dict[str, bool]:
    results: dict[str, bool] = {}
    for name, check in checks.items():
        try:
            results[name] = bool(check())
        except Exception:
            results[name] = False
    return results


def _report() -> tuple[dict[str, object], bool, bool]:
    svc = services()
    checks = _run(svc.health_checks)
    ready = _run(svc.readiness_checks)
    healthy = all(checks.values())
    starting = [name for name, ok in ready.items() if not ok]
    status = "degraded" if not healthy else "starting" if starting else "ok"
    return {"status": status, "checks": checks, "starting": starting}, healthy, not starting


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    body, healthy, _ = _report()
    return jsonify(body), 200 if healthy else 503


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    body, healthy, ready = _report()
    return jsonify(body), 200 if healthy and ready else 503
