"""The operator dashboard in Chromium: login, every chart drawn with data, wrong password."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from flask import Flask
from prometheus_client import start_http_server

from api import create_app
from api.dashboard import DashboardDeps
from api.dashboard.auth import hash_password
from api.dashboard.live import LagReader
from consumers.metrics import ConsumerMetrics
from core.events import AddedToCart, InteractionEvent, ItemViewed, Purchased, Rated
from infra.embedded import free_port
from infra.insights import Insights
from infra.registry import ModelRegistry
from infra.sql import SqlStore
from tests.browser.conftest import LiveServer
from tests.fakes import toy_services

pytestmark = [pytest.mark.browser, pytest.mark.integration]

PASSWORD = "dashboard-pw"
CHARTS = ["chart-lag-partitions", "chart-lag", "chart-freshness", "chart-throughput",
          "chart-errors", "chart-sources", "chart-top", "chart-categories", "chart-funnel",
          "chart-ratings", "chart-users"]


def history(catalog: list[str], days: int = 14, seed: int = 3) -> list[InteractionEvent]:
    rng = random.Random(seed)
    t0 = 1_300_000_000
    events: list[InteractionEvent] = []
    for n in range(600):
        user, item = f"u{rng.randrange(60)}", rng.choice(catalog)
        ts = t0 + rng.uniform(0, days * 86_400)
        events.append(ItemViewed(user_id=user, item_id=item, timestamp=ts))
        if rng.random() < 0.4:
            events.append(AddedToCart(user_id=user, item_id=item, timestamp=ts + 30))
            if rng.random() < 0.5:
                events.append(Purchased(user_id=user, item_id=item, timestamp=ts + 60))
        if n % 4 == 0:
            events.append(Rated(user_id=user, item_id=item, rating=rng.randint(1, 5),
                                timestamp=ts + 90))
    return events


async def _produce(bootstrap: str, topic: str, n: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for i in range(n):
            await producer.send_and_wait(topic, b"{}", key=f"u{i}".encode())
    finally:
        await producer.stop()


@pytest.fixture
def dashboard_app(tmp_path: Path, kafka_bootstrap: str,
                  kafka_topics: Callable[..., str]) -> Iterator[Flask]:
    services = toy_services()
    store = SqlStore(f"sqlite:///{tmp_path / 'archive.db'}")
    store.create_schema()
    store.upsert_products(services.catalog.values())
    store.archive_events(history(sorted(services.catalog)))
    # A real topic with pending records: the lag chart reads it from the broker.
    topic = kafka_topics(partitions=3, name="dash")
    # Playwright's sync API keeps an event loop on this thread: produce from another one.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, _produce(kafka_bootstrap, topic, 30)).result(60)
    # A real consumers' metrics endpoint.
    metrics = ConsumerMetrics()
    for kind, n in (("view", 120), ("add_to_cart", 40), ("purchase", 12)):
        metrics.events.labels(kind).inc(n)
    for i in range(50):
        metrics.freshness.observe(0.01 + i * 0.004)
    metrics.dead_letters.inc(2)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=metrics.registry)

    app = create_app(services.settings.model_copy(update={"secret_key": "s" * 32}),
                     services=services)
    app.extensions["streamrec.dashboard"] = DashboardDeps(
        password_hash=hash_password(PASSWORD, iterations=1000),
        registry=ModelRegistry(tmp_path / "artifacts"),
        lag=LagReader(kafka_bootstrap, "dashboard-group", topic),
        consumer_metrics_urls=f"http://127.0.0.1:{port}/metrics",
        make_insights=lambda: Insights(store),
    )
    client = app.test_client()  # some API traffic for the source mix
    for user in ("u1", "u2", "u3"):
        client.get("/api/recommendations", query_string={"user_id": user, "k": 5})
    from tests.test_api import learn_views
    learn_views(services, "u9", ["candles-1", "bags-2", "mugs-3"])
    client.get("/api/recommendations", query_string={"user_id": "u9", "k": 5})
    yield app
    server.shutdown()
    thread.join(5)
    store.close()


def _log_in(page: Any, url: str, password: str) -> None:
    page.goto(f"{url}/admin/")
    page.fill("#password", password)
    page.click("button[type=submit]")


def test_admin_logs_in_and_every_chart_draws_data(
    page: Any, dashboard_app: Flask, screenshots_dir: Path
) -> None:
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    with LiveServer(dashboard_app) as server:
        _log_in(page, server.url, PASSWORD)
        page.wait_for_url(f"{server.url}/admin/")
        page.goto(f"{server.url}/admin/?refresh=400")
        # Rates need two polls; wait until every chart holds a non-null point.
        page.wait_for_function(
            """ids => ids.every(id => {
                 const c = window.dashboardCharts && window.dashboardCharts[id];
                 return c && c.data.datasets.some(
                   d => d.data.some(v => v !== null && v !== undefined));
               })""", arg=CHARTS, timeout=15_000)
        for chart_id in CHARTS:
            box = page.locator(f"#{chart_id}").bounding_box()
            assert box and box["width"] > 100 and box["height"] > 100, chart_id
        assert page.inner_text("#kpi-lag") == "30"
        lag_bars = page.evaluate(
            "window.dashboardCharts['chart-lag-partitions'].data.datasets[0].data")
        assert sum(lag_bars) == 30 and len(lag_bars) == 3
        assert "no model trained yet" in page.inner_text("#models-message")
        assert "up" in page.inner_text("#consumer-targets")
        page.wait_for_timeout(300)
        page.screenshot(path=str(screenshots_dir / "dashboard.png"), full_page=True)
    assert errors == []


def test_wrong_admin_password_is_refused(page: Any, dashboard_app: Flask) -> None:
    with LiveServer(dashboard_app) as server:
        _log_in(page, server.url, "not-the-password")
        assert page.inner_text("#login-error") == "Wrong password."
        assert "/admin/login" in page.url
        response = page.request.get(f"{server.url}/admin/api/live")
        assert response.status == 401
