"""The /admin dashboard: login, protection of pages and JSON, and what the JSON says."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import start_http_server

from api import create_app
from api.dashboard import DashboardDeps, init_dashboard
from api.dashboard.auth import hash_password, verify_password
from api.dashboard.live import consumer_targets
from consumers.metrics import ConsumerMetrics
from core.events import ItemViewed, Purchased
from infra.embedded import free_port
from infra.insights import Insights
from infra.registry import ModelRegistry
from infra.sql import SqlStore
from tests.fakes import toy_services

PASSWORD = "correct horse"


def fixed_lag() -> dict[str, Any]:
    return {"topic": "interactions", "group": "g", "total": 5, "error": None, "partitions": [
        {"partition": 0, "committed": 10, "highwater": 12, "lag": 2},
        {"partition": 1, "committed": None, "highwater": 3, "lag": 3}]}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlStore]:
    made = SqlStore(f"sqlite:///{tmp_path / 'd.db'}")
    made.create_schema()
    made.archive_events([ItemViewed(user_id="u1", item_id="candles-1", timestamp=1_300_000_000),
                         Purchased(user_id="u1", item_id="candles-1", timestamp=1_300_000_100)])
    yield made
    made.close()


@pytest.fixture
def app(tmp_path: Path, store: SqlStore) -> Flask:
    services = toy_services()
    app = create_app(services.settings.model_copy(update={"secret_key": "k" * 32}),
                     services=services)
    app.config["TESTING"] = True
    deps = DashboardDeps(password_hash=hash_password(PASSWORD, iterations=1000),
                         registry=ModelRegistry(tmp_path / "artifacts"), lag=fixed_lag,
                         make_insights=lambda: Insights(store))
    app.extensions["streamrec.dashboard"] = deps
    return app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def login(client: FlaskClient, password: str = PASSWORD) -> Any:
    return client.post("/admin/login", data={"password": password})


def test_password_hash_verifies_only_the_right_password() -> None:
    stored = hash_password("pw", iterations=1000)
    assert verify_password(stored, "pw")
    assert not verify_password(stored, "pw ")
    assert not verify_password("garbage", "pw")
    assert not verify_password("md5:1$salt$abc", "pw")


def test_pages_redirect_to_login_and_json_answers_401_when_logged_out(
    client: FlaskClient,
) -> None:
    page = client.get("/admin/")
    assert page.status_code == 302
    assert page.headers["Location"].startswith("/admin/login?next=/admin/")
    api = client.get("/admin/api/live")
    assert api.status_code == 401
    assert api.get_json()["error"]["code"] == "unauthorized"


def test_wrong_password_is_refused(client: FlaskClient) -> None:
    response = login(client, "wrong")
    assert response.status_code == 401
    assert b"Wrong password" in response.data
    assert client.get("/admin/api/models").status_code == 401


def test_right_password_opens_the_dashboard_until_logout(client: FlaskClient) -> None:
    response = login(client)
    assert response.status_code == 302
    page = client.get("/admin/")
    assert page.status_code == 200
    assert b"chart.umd.min.js" in page.data
    assert client.post("/admin/logout").status_code == 302
    assert client.get("/admin/api/models").status_code == 401


def test_login_redirects_only_to_admin_paths(client: FlaskClient) -> None:
    response = client.post("/admin/login?next=//evil.example/", data={"password": PASSWORD})
    assert response.headers["Location"] == "/admin/"


def test_login_is_disabled_without_a_configured_password(tmp_path: Path) -> None:
    services = toy_services()
    app = create_app(services.settings, services=services)
    client = app.test_client()
    page = client.get("/admin/login")
    assert b"Admin login is disabled" in page.data
    assert login(client, "").status_code == 401
    assert client.get("/admin/api/live").status_code == 401


def test_plain_admin_password_setting_is_hashed_and_accepted(tmp_path: Path) -> None:
    services = toy_services()
    settings = services.settings.model_copy(update={"admin_password": "pw", "secret_key": "x"})
    app = create_app(settings, services=services)
    client = app.test_client()
    assert app.extensions["streamrec.dashboard"].password_hash.startswith("pbkdf2:sha256:")
    assert login(client, "pw").status_code == 302
    assert client.get("/admin/api/models").status_code == 200


def test_insight_endpoints_answer_json_from_the_archive(client: FlaskClient) -> None:
    login(client)
    top = client.get("/admin/api/insights/top-products").get_json()
    assert top[0]["item_id"] == "candles-1"
    assert top[0]["purchases"] == 1
    funnel = client.get("/admin/api/insights/funnel").get_json()
    assert [s["users"] for s in funnel] == [1, 0, 1]
    assert client.get("/admin/api/insights/category-trend?days=7").get_json()["days"]
    assert client.get("/admin/api/insights/ratings").get_json()["5"] == 0
    assert client.get("/admin/api/insights/users").get_json()[0]["new"] == 1
    assert client.get("/admin/api/insights/summary").get_json()["events"] == 2
    assert client.get("/admin/api/insights/users?days=0").status_code == 400


def test_models_endpoint_reports_versions_and_the_one_in_use(
    client: FlaskClient, tmp_path: Path
) -> None:
    login(client)
    assert client.get("/admin/api/models").get_json() == {
        "latest": None, "versions": [], "message": "no model trained yet"}
    artifacts = tmp_path / "artifacts"
    for version, day in (("v1", "01"), ("v2", "02")):
        (artifacts / version).mkdir(parents=True)
        (artifacts / version / "manifest.json").write_text(json.dumps({
            "version": version, "created_at": f"2024-05-{day}T00:00:00+00:00",
            "data_sha256": "ab" * 32, "metrics": {"ndcg@10": 0.25}, "models": {"als": {}}}))
    (artifacts / ".v3.partial").mkdir()
    (artifacts / "broken").mkdir()
    (artifacts / "broken" / "manifest.json").write_text("{not json")
    (artifacts / "latest").write_text("v1\n")

    status = client.get("/admin/api/models").get_json()

    assert status["latest"] == "v1"
    assert [v["version"] for v in status["versions"]] == ["v2", "v1", "broken"]
    assert status["versions"][0]["metrics"] == {"ndcg@10": 0.25}
    assert status["versions"][2]["error"].startswith("JSONDecodeError")


def test_live_endpoint_merges_broker_lag_consumer_replicas_and_api_metrics(
    app: Flask, client: FlaskClient
) -> None:
    # Two real consumer metrics endpoints stand in for two replicas.
    servers = []
    urls = []
    for n in (2, 3):
        metrics = ConsumerMetrics()
        metrics.events.labels("view").inc(n)
        metrics.dead_letters.inc(1)
        metrics.freshness.observe(0.02 * n)
        port = free_port()
        servers.append(start_http_server(port, addr="127.0.0.1", registry=metrics.registry))
        urls.append(f"http://localhost:{port}/metrics")
    app.extensions["streamrec.dashboard"].consumer_metrics_urls = ",".join(urls)
    try:
        login(client)
        client.get("/api/items/candles-1")
        live = client.get("/admin/api/live").get_json()
    finally:
        for server, thread in servers:
            server.shutdown()
            thread.join(5)

    assert live["lag"]["total"] == 5
    consumers = live["consumers"]
    assert all(t["up"] for t in consumers["targets"])
    assert consumers["events"] == {"view": 5.0}
    assert consumers["dead_letters"] == 2.0
    assert consumers["freshness"]["count"] == 2.0
    assert live["api"]["requests"]["/api/items/<item_id>"] == 1.0


def test_unreachable_consumer_metrics_are_reported_down(app: Flask, client: FlaskClient) -> None:
    app.extensions["streamrec.dashboard"].consumer_metrics_urls = (
        f"http://127.0.0.1:{free_port()}/metrics")
    login(client)
    targets = client.get("/admin/api/live").get_json()["consumers"]["targets"]
    assert [t["up"] for t in targets] == [False]


def test_consumer_targets_expand_a_host_name_to_its_addresses() -> None:
    targets = consumer_targets("http://localhost:9100/metrics, ")
    assert targets
    assert set(targets) <= {"http://127.0.0.1:9100/metrics", "http://[::1]:9100/metrics"}
    assert consumer_targets("") == []


def test_init_dashboard_accepts_injected_deps(tmp_path: Path) -> None:
    services = toy_services()
    app = Flask("x")
    deps = DashboardDeps(password_hash="", registry=ModelRegistry(tmp_path), lag=fixed_lag)
    init_dashboard(app, services.settings, deps)
    assert app.extensions["streamrec.dashboard"] is deps
    assert app.config["SECRET_KEY"]
