"""Routes of the dashboard: login/logout, the page, and its JSON endpoints."""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast

from flask import (
    Blueprint,
    Response,
    current_app,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from werkzeug.wrappers import Response as BaseResponse

from api.dashboard import dashboard_deps
from api.dashboard.auth import verify_password
from api.dashboard.live import read_consumers, summarize_api
from api.metrics import api_metrics
from api.params import int_arg

__all__ = ["bp"]

bp = Blueprint("dashboard", __name__, url_prefix="/admin",
               template_folder="templates", static_folder="static")

F = TypeVar("F", bound=Callable[..., Any])
_SESSION_KEY = "streamrec_admin"
#: Failed admin log-ins allowed per client address within the window (per worker),
#: against password guessing and against burning CPU on PBKDF2 with bad guesses.
LOGIN_MAX_FAILURES = 5
LOGIN_WINDOW_S = 300.0
_FAILURES = "streamrec.admin_login_failures"


def _recent_failures(now: float) -> list[float]:
    """This client's failed log-ins within the window (kept per app, per address)."""
    by_client: dict[str, list[float]] = current_app.extensions.setdefault(_FAILURES, {})
    key = request.remote_addr or "-"
    kept = [t for t in by_client.get(key, []) if now - t < LOGIN_WINDOW_S]
    by_client[key] = kept
    if len(by_client) > 10_000:  # many addresses: forget those without recent failures
        for old in [k for k, v in by_client.items() if not v or now - v[-1] >= LOGIN_WINDOW_S]:
            del by_client[old]
        by_client[key] = kept
    return kept


def _logged_in() -> bool:
    return bool(session.get(_SESSION_KEY))


def admin_page(view: F) -> F:
    """Pages: redirect to the login form when not logged in."""
    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if not _logged_in():
            return redirect(url_for("dashboard.login", next=request.path))
        return view(*args, **kwargs)
    return cast(F, wrapped)


def admin_api(view: F) -> F:
    """JSON endpoints: 401 in the API's error shape when not logged in."""
    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if not _logged_in():
            body = {"error": {"code": "unauthorized", "message": "admin login required"}}
            return jsonify(body), 401
        return view(*args, **kwargs)
    return cast(F, wrapped)


@bp.route("/login", methods=["GET", "POST"])
def login() -> Response | BaseResponse | tuple[str, int]:
    deps = dashboard_deps()
    enabled = bool(deps.password_hash)
    error = None if enabled else ("Admin login is disabled: set STREAMREC_ADMIN_PASSWORD_HASH "
                                  "(or STREAMREC_ADMIN_PASSWORD).")
    if request.method == "POST" and enabled:
        failures = _recent_failures(time.monotonic())
        if len(failures) >= LOGIN_MAX_FAILURES:
            return render_template("dashboard/login.html", enabled=enabled,
                                   error="Too many failed log-ins: wait a few minutes."), 429
        password = request.form.get("password", "")
        if verify_password(deps.password_hash, password):
            failures.clear()
            session.clear()
            session[_SESSION_KEY] = True
            target = request.args.get("next", "")
            # Only local paths: never redirect off-site.
            if not target.startswith("/admin") or target.startswith("//"):
                target = url_for("dashboard.index")
            return redirect(target)
        failures.append(time.monotonic())
        error = "Wrong password."
    status = 401 if request.method == "POST" else 200
    return render_template("dashboard/login.html", error=error, enabled=enabled), status


@bp.post("/logout")
def logout() -> BaseResponse:
    session.pop(_SESSION_KEY, None)
    return redirect(url_for("dashboard.login"))


@bp.get("/")
@admin_page
def index() -> str:
    return render_template("dashboard/index.html")


# --- JSON --------------------------------------------------------------------------------------
@bp.get("/api/live")
@admin_api
def live() -> Response:
    """Cumulative numbers now; the page turns them into rates between polls."""
    deps = dashboard_deps()
    return jsonify({
        "ts": time.time(),
        "lag": deps.lag(),
        "consumers": read_consumers(deps.consumer_metrics_urls),
        "api": summarize_api(api_metrics().exposition_registry()),
    })


def _days() -> int:
    return int_arg(request, "days", default=30, lo=1, hi=3650)


@bp.get("/api/insights/summary")
@admin_api
def summary() -> Response:
    return jsonify(dashboard_deps().insights.summary())


@bp.get("/api/insights/top-products")
@admin_api
def top_products() -> Response:
    limit = int_arg(request, "limit", default=10, lo=1, hi=100)
    return jsonify(dashboard_deps().insights.top_products(limit=limit, days=_days()))


@bp.get("/api/insights/category-trend")
@admin_api
def category_trend() -> Response:
    return jsonify(dashboard_deps().insights.category_trend(days=_days()))


@bp.get("/api/insights/funnel")
@admin_api
def funnel() -> Response:
    return jsonify(dashboard_deps().insights.funnel(days=_days()))


@bp.get("/api/insights/ratings")
@admin_api
def ratings() -> Response:
    return jsonify(dashboard_deps().insights.rating_distribution())


@bp.get("/api/insights/users")
@admin_api
def users() -> Response:
    return jsonify(dashboard_deps().insights.new_vs_returning(days=_days()))


@bp.get("/api/models")
@admin_api
def models() -> Response:
    return jsonify(dashboard_deps().registry.status())
