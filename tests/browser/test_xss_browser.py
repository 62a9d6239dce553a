"""Hostile text in Chromium: a variant carrying markup is shown as text, and no script runs.

The operator dashboard draws ``/admin/api/live``, whose variant names come from
events; the pages also carry a Content-Security-Policy that the shipped templates
must work under (a violation is logged to the console, which the tests watch).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from api import create_app
from api.dashboard import DashboardDeps
from api.dashboard.auth import hash_password
from infra.insights import Insights
from infra.registry import ModelRegistry
from infra.sql import SqlStore
from tests.browser.conftest import LiveServer
from tests.fakes import toy_services

pytestmark = pytest.mark.browser

PASSWORD = "xss-test-pw"
#: Runs script through event-handler attributes, after breaking out of its cell
#: (an event's variant holds at most 64 characters).
PAYLOAD = "<img src=x onerror=__xss=1></td><td><svg onload=__xss=2>"


@pytest.fixture
def hostile_app(tmp_path: Path) -> Flask:
    services = toy_services()
    # Operators name variants; a configured name is still shown as text, never as markup.
    settings = services.settings.model_copy(update={
        "secret_key": "s" * 32, "state_dir": tmp_path,
        "variants": {"default": 0.5, PAYLOAD: 0.5}})
    services.settings = settings
    store = SqlStore(f"sqlite:///{tmp_path / 'archive.db'}")
    store.create_schema()
    app = create_app(settings, services=services)
    app.extensions["streamrec.dashboard"] = DashboardDeps(
        password_hash=hash_password(PASSWORD, iterations=1000),
        registry=ModelRegistry(tmp_path / "artifacts"),
        lag=lambda: {"partitions": [], "total": 0, "group": "g", "topic": "t"},
        make_insights=lambda: Insights(store),
    )
    client = app.test_client()
    client.get("/api/recommendations", query_string={"user_id": "u1", "k": 3})
    for variant in (PAYLOAD, "<b>unconfigured</b>"):
        assert client.post("/api/events", json={
            "event_type": "click", "user_id": "u1", "item_id": "candles-1",
            "variant": variant}).status_code == 202
    return app


def _watch(page: Any) -> list[str]:
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
    page.on("console", lambda msg: problems.append(f"console: {msg.text}")
            if "Content Security Policy" in msg.text else None)
    return problems


def test_a_markup_variant_shows_literally_on_the_dashboard_and_runs_nothing(
    page: Any, hostile_app: Flask,
) -> None:
    problems = _watch(page)
    with LiveServer(hostile_app) as server:
        page.goto(f"{server.url}/admin/")
        page.fill("#password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(f"{server.url}/admin/")
        response = page.goto(f"{server.url}/admin/?refresh=300")
        assert "script-src 'self'" in response.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["x-content-type-options"] == "nosniff"
        # A locator waits without evaluating a string in the page: under this CSP
        # (no 'unsafe-eval') Playwright's string predicates can be refused intermittently.
        page.locator("#variants tbody tr").nth(1).wait_for(timeout=10_000)
        page.wait_for_timeout(700)  # a few more polls redraw the table
        names = page.eval_on_selector_all("#variants tbody tr",
                                          "rows => rows.map(r => r.cells[0].textContent)")
        assert PAYLOAD in names and "other" in names
        assert page.eval_on_selector_all(
            "#variants tbody tr", "rows => rows.every(r => r.cells.length === 7)")
        assert page.locator("#variants img, #variants script, #variants svg").count() == 0
        assert page.evaluate("window.__xss") is None
    assert problems == []


def test_the_storefront_works_under_its_content_security_policy(
    page: Any, hostile_app: Flask,
) -> None:
    problems = _watch(page)
    with LiveServer(hostile_app) as server:
        response = page.goto(f"{server.url}/")
        assert "default-src 'self'" in response.headers["content-security-policy"]
        page.wait_for_load_state("networkidle")
        assert page.locator("a[href*='/product/']").count() > 0
        page.goto(f"{server.url}/admin/login")
        page.wait_for_load_state("networkidle")
    assert problems == []
