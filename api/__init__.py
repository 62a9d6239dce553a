"""Flask API: ``create_app(settings=None, services=None)`` (flaskr-style factory)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from flask import Flask, Request
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface

from api.json_provider import OrjsonProvider
from api.services import ApiServices
from core.settings import Settings

__all__ = ["API_PREFIX", "ApiServices", "create_app"]

#: The JSON API's paths: its callers send tokens, never the session cookie.
API_PREFIX = "/api/"


class _NoSessionOnTheApi(SecureCookieSessionInterface):
    """The signed-cookie session of the storefront and dashboard, not opened on the API.

    Nothing under :data:`API_PREFIX` reads or writes the session (the operator
    endpoints check a bearer token); opening it (a signing serializer per request) and
    saving it cost ~40 us of a recommendation. The API gets Flask's null session:
    empty, and an error on a write.
    """

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        if request.path.startswith(API_PREFIX):
            return None  # Flask then makes a null session, which it never saves
        return super().open_session(app, request)


def create_app(
    settings: Settings | dict[str, Any] | None = None,
    services: ApiServices | None = None,
) -> Flask:
    """Build the app. Tests pass ``services`` made of fakes; production lets
    bootstrap build them from ``settings`` (or the environment)."""
    from api import events, health, openapi, recommendations, storefront
    from api.dashboard import init_dashboard
    from api.errors import register_error_handlers
    from api.metrics import ApiMetrics, init_metrics
    from api.ratelimit import init_rate_limit
    from api.security_headers import init_security_headers
    from infra.accounts import load_or_create_secret

    if not isinstance(settings, Settings):
        settings = Settings(**(settings or {}))
    if services is None:
        from api.services import build_services

        services = build_services(settings)

    app = Flask(__name__)
    app.json = OrjsonProvider(app)
    app.session_interface = _NoSessionOnTheApi()
    app.config.update(
        # Flask would turn debug on from FLASK_DEBUG; only the settings configure the app.
        DEBUG=False,
        # Shared by every worker: from the settings, else made once in state_dir.
        SECRET_KEY=settings.secret_key or load_or_create_secret(settings.state_dir),
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        JSON_SORT_KEYS=False,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.session_cookie_secure,
        PERMANENT_SESSION_LIFETIME=timedelta(
            seconds=settings.session_lifetime_s),
    )
    app.extensions["streamrec"] = services
    register_error_handlers(app)
    init_security_headers(app)
    init_rate_limit(app, settings)
    app.register_blueprint(health.bp)
    app.register_blueprint(recommendations.bp)
    app.register_blueprint(events.bp)
    app.register_blueprint(openapi.bp)
    app.register_blueprint(storefront.bp)
    init_metrics(app, ApiMetrics(settings.artifacts_dir, settings.prometheus_multiproc_dir,
                                 variants=settings.variants),
                 token=settings.metrics_token)
    init_dashboard(app, settings)
    from api.fastpath import install_fast_path

    install_fast_path(app)  # last: it reads the services, metrics and limiter set up above
    return app
