"""Operator dashboard at ``/admin``: admin login, live charts, data insights, models.

Pages are drawn in the browser (Chart.js, vendored under ``static/vendor``) from
JSON endpoints under ``/admin/api/``. Login is session based: the password is
checked against ``settings.admin_password_hash`` (or a hash of
``settings.admin_password`` made at start); with neither, nobody can log in.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, current_app

from api.dashboard.auth import hash_password
from api.dashboard.live import LagReader
from core.settings import Settings
from infra.insights import Insights
from infra.registry import ModelRegistry

__all__ = ["DashboardDeps", "dashboard_deps", "init_dashboard"]

log = logging.getLogger(__name__)
_EXTENSION = "streamrec.dashboard"


@dataclass
class DashboardDeps:
    """What the dashboard reads. ``insights`` is built on first use (it opens the database)."""

    password_hash: str
    registry: ModelRegistry
    lag: Callable[[], dict[str, Any]]
    consumer_metrics_urls: str = ""
    make_insights: Callable[[], Insights] | None = None
    closers: list[Callable[[], None]] = field(default_factory=list)
    _insights: Insights | None = None

    @property
    def insights(self) -> Insights:
        if self._insights is None:
            if self.make_insights is None:
                raise RuntimeError("no events archive configured for the dashboard")
            self._insights = self.make_insights()
            self.closers.append(self._insights.store.close)
        return self._insights


def deps_from_settings(settings: Settings) -> DashboardDeps:
    """Dashboard dependencies wired from settings (the archive through infra's bootstrap)."""

    def make_insights() -> Insights:
        from infra.bootstrap import build_sql_store

        return Insights(build_sql_store(settings))

    password_hash = settings.admin_password_hash
    plain = settings.admin_password
    if not password_hash and plain:
        password_hash = hash_password(plain)
    return DashboardDeps(
        password_hash=password_hash,
        registry=ModelRegistry(settings.artifacts_dir),
        lag=LagReader(settings.kafka_bootstrap, settings.consumer_group,
                      settings.interactions_topic),
        consumer_metrics_urls=settings.consumer_metrics_urls,
        make_insights=make_insights,
    )


def dashboard_deps() -> DashboardDeps:
    found: DashboardDeps = current_app.extensions[_EXTENSION]
    return found


def init_dashboard(app: Flask, settings: Settings, deps: DashboardDeps | None = None) -> None:
    """Register the ``/admin`` blueprint; tests may pass ``deps`` (or replace them later)."""
    from api.dashboard.views import bp

    app.extensions[_EXTENSION] = deps or deps_from_settings(settings)
    if not app.config.get("SECRET_KEY"):
        # Sessions need a key; a random one works for one process only, so gunicorn
        # with several workers needs STREAMREC_SECRET_KEY.
        log.warning("STREAMREC_SECRET_KEY is not set: admin sessions last one process only")
        app.config["SECRET_KEY"] = secrets.token_hex(32)
    app.config.setdefault("SESSION_COOKIE_HTTPONLY", True)
    app.config["SESSION_COOKIE_SAMESITE"] = app.config.get("SESSION_COOKIE_SAMESITE") or "Lax"
    app.register_blueprint(bp)
