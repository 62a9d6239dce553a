"""Liveness and readiness: /healthz checks the broker and Redis."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from api.services import services

__all__ = ["bp"]

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    checks: dict[str, bool] = {}
    for name, check in services().health_checks.items():
        try:
            checks[name] = bool(check())
        except Exception:
            checks[name] = False
    ok = all(checks.values())
    return jsonify({"status": "ok" if ok else "degraded", "checks": checks}), 200 if ok else 503
