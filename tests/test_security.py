"""Security review checks not covered elsewhere (see docs/reliability.md for the table).

Admin authorization of every /admin route, admin log-in throttling and cookie
flags, no debug mode, where the secret key comes from, and bad input to the JSON
API answered with 4xx JSON (never a 500 or a traceback).
"""

from __future__ import annotations

import ast
import re
import stat
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from api import create_app
from api.dashboard import DashboardDeps
from api.dashboard.auth import hash_password
from api.dashboard.views import LOGIN_MAX_FAILURES
from infra.registry import ModelRegistry
from tests.fakes import OPERATOR, toy_services

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "correct horse battery staple"
#: Routes under /admin anyone may reach: the log-in form, log-out and the page assets.
PUBLIC_ADMIN_ENDPOINTS = {"dashboard.login", "dashboard.logout", "dashboard.static"}


def no_lag() -> dict[str, Any]:
    return {"partitions": [], "total": 0}


@pytest.fixture
def app(tmp_path: Path) -> Flask:
    services = toy_services()
    settings = services.settings.model_copy(update={"secret_key": "s" * 32,
                                                    "rate_limit_per_s": 0.0})
    app = create_app(settings, services=services)
    app.config["TESTING"] = True
    app.extensions["streamrec.dashboard"] = DashboardDeps(
        password_hash=hash_password(PASSWORD, iterations=1000),
        registry=ModelRegistry(tmp_path / "artifacts"), lag=no_lag)
    return app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def admin_routes(app: Flask) -> list[tuple[str, str, str]]:
    """(endpoint, method, url) of every /admin route, path parameters filled in."""
    out = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/admin") or rule.endpoint in PUBLIC_ADMIN_ENDPOINTS:
            continue
        url = rule.rule
        for arg in rule.arguments:
            url = url.replace(f"<{arg}>", "x").replace(f"<string:{arg}>", "x")
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            out.append((rule.endpoint, method, url))
    return out


# --- authorization of the dashboard ----------------------------------------------------------
def test_every_admin_route_refuses_a_visitor_who_is_not_logged_in(
    app: Flask, client: FlaskClient,
) -> None:
    routes = admin_routes(app)
    assert len(routes) >= 9  # the page and its JSON endpoints: a rename must not hide one
    for endpoint, method, url in routes:
        response = client.open(url, method=method)
        if "/admin/api/" in url:
            assert response.status_code == 401, (endpoint, response.status_code)
            assert response.get_json()["error"]["code"] == "unauthorized"
        else:
            assert response.status_code == 302, (endpoint, response.status_code)
            assert response.headers["Location"].startswith("/admin/login")


def test_a_storefront_login_does_not_open_the_dashboard(client: FlaskClient) -> None:
    with client.session_transaction() as session:
        session["uid"] = 1  # a logged-in shopper
    assert client.get("/admin/").status_code == 302
    assert client.get("/admin/api/models").status_code == 401


def test_a_forged_session_cookie_is_not_an_admin_session(app: Flask) -> None:
    from flask.sessions import SecureCookieSessionInterface

    other = Flask("forger")
    other.secret_key = "not-the-servers-key" * 2
    forged = SecureCookieSessionInterface().get_signing_serializer(other)
    assert forged is not None
    client = app.test_client()
    client.set_cookie("session", forged.dumps({"streamrec_admin": True}))
    assert client.get("/admin/api/models").status_code == 401


def test_admin_logout_ends_the_admin_session(client: FlaskClient) -> None:
    assert client.post("/admin/login", data={"password": PASSWORD}).status_code == 302
    assert client.get("/admin/api/models").status_code == 200
    client.post("/admin/logout")
    assert client.get("/admin/api/models").status_code == 401


def test_the_admin_session_cookie_is_httponly_and_samesite(client: FlaskClient) -> None:
    response = client.post("/admin/login", data={"password": PASSWORD})
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_the_session_cookie_is_secure_when_the_setting_says_so() -> None:
    services = toy_services()
    settings = services.settings.model_copy(update={"session_cookie_secure": True})
    app = create_app(settings, services=services)
    client = app.test_client()
    client.get("/")  # a visitor gets an anonymous shopper id in the session
    cookie = client.get_cookie("session")
    assert cookie is not None and cookie.secure and cookie.http_only


# --- admin log-in throttling (fix of this review) -------------------------------------------
def test_admin_log_in_is_throttled_after_repeated_wrong_passwords(client: FlaskClient) -> None:
    for _ in range(LOGIN_MAX_FAILURES):
        assert client.post("/admin/login", data={"password": "guess"}).status_code == 401
    refused = client.post("/admin/login", data={"password": PASSWORD})
    assert refused.status_code == 429  # even the right password, until the window passes
    assert client.get("/admin/api/models").status_code == 401


def test_admin_throttling_is_per_client_address(client: FlaskClient) -> None:
    for _ in range(LOGIN_MAX_FAILURES):
        client.post("/admin/login", data={"password": "guess"},
                    environ_base={"REMOTE_ADDR": "10.9.9.9"})
    ok = client.post("/admin/login", data={"password": PASSWORD},
                     environ_base={"REMOTE_ADDR": "10.1.1.1"})
    assert ok.status_code == 302


def test_a_right_admin_password_resets_the_failure_count(client: FlaskClient) -> None:
    for _ in range(LOGIN_MAX_FAILURES - 1):
        client.post("/admin/login", data={"password": "guess"})
    assert client.post("/admin/login", data={"password": PASSWORD}).status_code == 302
    for _ in range(LOGIN_MAX_FAILURES - 1):
        assert client.post("/admin/login", data={"password": "guess"}).status_code == 401


# --- no debug mode ---------------------------------------------------------------------------
def test_the_app_is_not_in_debug_mode_even_with_flask_debug_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLASK_DEBUG", "1")
    app = create_app(toy_services().settings, services=toy_services())
    assert app.debug is False
    assert app.config["PROPAGATE_EXCEPTIONS"] is not True


def test_an_unexpected_error_answers_a_generic_500_without_a_traceback(app: Flask) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret internals /etc/passwd")

    app.extensions["streamrec"].recommender.run = broken
    app.config["TESTING"] = False  # production error handling
    response = app.test_client().get("/api/recommendations?user_id=u1")
    assert response.status_code == 500
    assert response.get_json() == {"error": {"code": "internal_error",
                                             "message": "internal server error"}}
    assert b"Traceback" not in response.data and b"secret internals" not in response.data


def python_sources(*packages: str) -> list[Path]:
    return [p for package in packages for p in (ROOT / package).rglob("*.py")]


def test_no_code_turns_on_a_debugger_or_reloader() -> None:
    offenders = []
    for path in python_sources("api", "cli", "infra", "consumers"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.keyword) and node.arg in {
                "debug", "use_debugger", "use_reloader", "reload",
            } and isinstance(node.value, ast.Constant) and node.value.value is True:
                offenders.append(f"{path.relative_to(ROOT)}:{node.value.lineno}")
    assert not offenders


def test_gunicorn_runs_without_reload_or_debug_options(monkeypatch: pytest.MonkeyPatch) -> None:
    import cli.serve as serve_module

    seen: dict[str, Any] = {}

    class Recorder:
        def __init__(self, settings: Any, options: dict[str, Any]) -> None:
            seen.update(options)

        def run(self) -> None:
            pass

    monkeypatch.setattr(serve_module, "_Gunicorn", Recorder)
    serve_module.serve(toy_services().settings)
    assert not seen.get("reload") and "debug" not in seen
    assert seen["bind"].startswith("127.0.0.1:")  # loopback unless configured otherwise


# --- secrets only from the environment (or a generated file) --------------------------------
def test_the_secret_key_comes_from_the_settings_when_set(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    from core.settings import Settings

    monkeypatch.setenv("STREAMREC_SECRET_KEY", "from-the-environment-" * 2)
    settings = Settings(state_dir=tmp_path)
    app = create_app(settings, services=toy_services())
    assert app.secret_key == "from-the-environment-" * 2
    assert not (tmp_path / "secret_key").exists()


def test_without_a_configured_secret_each_deployment_generates_its_own(tmp_path: Path) -> None:
    services = toy_services()
    first = create_app(services.settings.model_copy(
        update={"secret_key": "", "state_dir": tmp_path / "a"}), services=services)
    second = create_app(services.settings.model_copy(
        update={"secret_key": "", "state_dir": tmp_path / "b"}), services=toy_services())
    again = create_app(services.settings.model_copy(
        update={"secret_key": "", "state_dir": tmp_path / "a"}), services=toy_services())
    assert first.secret_key != second.secret_key  # not a constant
    assert first.secret_key == again.secret_key  # shared by workers of one deployment
    assert len(str(first.secret_key)) >= 32
    mode = (tmp_path / "a" / "secret_key").stat().st_mode
    assert stat.S_IMODE(mode) == 0o600


def test_no_secret_or_password_is_a_string_constant_in_the_code() -> None:
    names = {"secret_key", "SECRET_KEY", "admin_password", "admin_password_hash", "password"}
    offenders = []
    for path in python_sources("api", "cli", "infra", "consumers", "core"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            targets: list[Any] = []
            value = None
            if isinstance(node, ast.Assign):
                targets, value = node.targets, node.value
            elif isinstance(node, ast.AnnAssign):
                targets, value = [node.target], node.value
            elif isinstance(node, ast.keyword):
                targets, value = [ast.Name(id=node.arg or "")], node.value
            for target in targets:
                name = target.id if isinstance(target, ast.Name) else \
                    target.attr if isinstance(target, ast.Attribute) else ""
                if name in names and isinstance(value, ast.Constant) \
                        and isinstance(value.value, str) and value.value:
                    offenders.append(f"{path.relative_to(ROOT)}:{value.lineno} {name}")
    assert not offenders


# --- bad input to the JSON API ---------------------------------------------------------------
@pytest.mark.parametrize(("method", "url", "body", "status"), [
    ("POST", "/api/events", b'{"event_type": "view", "user_id": ', 400),  # malformed JSON
    ("POST", "/api/events", b'"just a string"', 400),
    ("POST", "/api/events", b'{"event_type": "view", "user_id": 7, "item_id": "i"}', 422),
    ("POST", "/api/events", b'{"event_type": "teleport", "user_id": "u", "item_id": "i"}', 422),
    ("POST", "/api/events", b'{"event_type": "rating", "user_id": "u", "item_id": "i",'
                            b' "rating": "five"}', 422),
    ("POST", "/api/events", b"[]", 400),
    ("POST", "/api/events", b"[1, 2]", 400),
    ("POST", "/api/feedback", b'{"user_id": "u", "rating": 3}', 422),
    ("POST", "/api/catalog", b'{"event_type": "item_upsert", "item_id": "x"}', 422),
    ("GET", "/api/recommendations?user_id=u&k=ten", None, 400),
    ("GET", "/api/recommendations?user_id=u&k=100000", None, 400),
    ("GET", "/api/recommendations?user_id=u&min_price=nan", None, 400),
    ("GET", "/api/recommendations?user_id=u&context_item=no-such-item", None, 404),
    ("GET", "/api/recommendations?user_id=u&variant=nope", None, 400),
    ("GET", "/api/items/no-such-item", None, 404),
    ("GET", "/api/items/no-such-item/similar", None, 404),
    ("GET", f"/api/users/{'u' * 200}/history", None, 400),
    ("GET", "/api/no-such-route", None, 404),
    ("DELETE", "/api/events", None, 405),
])
def test_bad_input_gets_a_4xx_json_error_in_the_standard_shape(
    client: FlaskClient, method: str, url: str, body: bytes | None, status: int,
) -> None:
    response = client.open(url, method=method, data=body, headers=OPERATOR,
                           content_type="application/json" if body is not None else None)
    assert response.status_code == status, response.data
    error = response.get_json()["error"]
    assert error["code"] and error["message"]


def test_an_oversized_body_is_refused_with_413_json(app: Flask) -> None:
    limit = app.config["MAX_CONTENT_LENGTH"]
    big = b'{"event_type": "view", "user_id": "u", "item_id": "i", "review": "' \
        + b"x" * limit + b'"}'
    response = app.test_client().post("/api/events", data=big,
                                      content_type="application/json")
    assert response.status_code == 413
    assert response.get_json()["error"]["code"]


# --- security headers ---------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/", "/login", "/admin/login", "/admin/", "/api/trending",
                                  "/api/no-such-route", "/healthz", "/metrics",
                                  "/admin/static/dashboard.js"])
def test_every_page_of_the_app_sends_csp_and_frame_headers(
    client: FlaskClient, path: str,
) -> None:
    headers = client.get(path).headers
    csp = headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp
    assert "frame-ancestors 'none'" in csp and "object-src 'none'" in csp
    assert headers["X-Frame-Options"] == "DENY"
    assert headers["X-Content-Type-Options"] == "nosniff"


def test_templates_have_no_inline_script_style_or_handlers() -> None:
    # The CSP allows only the app's own files: an inline one would silently stop working.
    inline = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>|\sstyle=|\son[a-z]+=", re.I)
    offenders = [f"{path.relative_to(ROOT)}: {m.group(0)}"
                 for path in (ROOT / "api").rglob("*.html")
                 for m in inline.finditer(path.read_text())]
    assert offenders == []
