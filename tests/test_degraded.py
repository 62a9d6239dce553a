"""Redis down: recommendations answer 200 with popular items marked degraded, never a 500."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from api import create_app
from api.degraded import PopularFallback
from api.services import ApiServices
from core.errors import TemporaryFailure
from core.events import ItemViewed
from core.ports import RecRequest
from infra.memory_store import InMemoryStateStore
from online_models.processor import StreamProcessor
from online_models.profile import ContentProfile
from online_models.serving.filters import CandidateFilter, Rules
from tests.fakes import OPERATOR, live_recommender, toy_services


class FlakyStore:
    """A state store that raises TemporaryFailure on every call while ``down``."""

    def __init__(self, inner: InMemoryStateStore) -> None:
        self.inner = inner
        self.down = False
        self.calls_while_down = 0

    def ping(self) -> bool:
        return not self.down and self.inner.ping()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.down:
                self.calls_while_down += 1
                raise TemporaryFailure(f"Redis {name} failed: Connection refused (fake)")
            return attr(*args, **kwargs)

        return call


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store() -> FlakyStore:
    return FlakyStore(InMemoryStateStore(recent_max=50, half_life_s=3600.0))


@pytest.fixture
def services(store: FlakyStore) -> ApiServices:
    services = toy_services()
    state: Any = store
    services.state = state
    services.recommender = live_recommender(state, services.index, services.catalog,
                                            services.settings.blend_weights, 50)
    services.health_checks["redis"] = store.ping
    return services


@pytest.fixture
def app(services: ApiServices) -> Flask:
    app = create_app(services.settings, services=services)
    app.config["TESTING"] = True
    return app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def views(store: FlakyStore, services: ApiServices, user: str, items: list[str]) -> None:
    processor = StreamProcessor(
        store.inner, services.index, {i: it.category for i, it in services.catalog.items()},
        half_life_s=3600.0, profile=ContentProfile(0.3),
    )
    processor.apply([ItemViewed(user_id=user, item_id=i, timestamp=1000.0 + n)
                     for n, i in enumerate(items)])


def test_with_redis_down_recommendations_are_the_last_good_popular_list_marked_degraded(
    client: FlaskClient, store: FlakyStore, services: ApiServices,
) -> None:
    views(store, services, "someone", ["mugs-3"] * 3 + ["bags-1"] * 2 + ["candles-4"])
    healthy = client.get("/api/recommendations?user_id=newcomer&k=3")
    assert healthy.status_code == 200
    assert "degraded" not in healthy.get_json()

    store.down = True
    response = client.get("/api/recommendations?user_id=anyone&k=3")
    assert response.status_code == 200
    body = response.get_json()
    assert body["degraded"] is True
    assert "state store unavailable" in body["reason"]
    assert body["user_id"] == "anyone" and body["rec_id"] and body["variant"] == "default"
    assert [i["item_id"] for i in body["items"]] == ["mugs-3", "bags-1", "candles-4"]
    assert all(set(i["sources"]) == {"popularity"} for i in body["items"])
    assert store.calls_while_down > 0  # the real path was tried first


def test_with_redis_down_before_any_good_answer_the_catalog_order_is_served(
    client: FlaskClient, store: FlakyStore, services: ApiServices,
) -> None:
    store.down = True
    body = client.get("/api/recommendations?user_id=u1&k=4").get_json()
    assert body["degraded"] is True
    assert [i["item_id"] for i in body["items"]] == list(services.catalog)[:4]
    assert all(i["sources"] == {} for i in body["items"])


def test_degraded_answers_still_apply_the_request_filters(
    client: FlaskClient, store: FlakyStore, services: ApiServices,
) -> None:
    store.down = True
    body = client.get("/api/recommendations?user_id=u1&k=50&category=Bags&max_price=5"
                      "&context_item=bags-2").get_json()
    items = body["items"]
    assert items, body
    assert all(i["category"] == "Bags" and i["price"] <= 5 for i in items)
    assert "bags-2" not in {i["item_id"] for i in items}


def test_degraded_answers_respect_k_and_bad_requests_are_still_400(
    client: FlaskClient, store: FlakyStore,
) -> None:
    store.down = True
    assert len(client.get("/api/recommendations?user_id=u1&k=2").get_json()["items"]) == 2
    assert client.get("/api/recommendations?user_id=u1&k=0").status_code == 400
    assert client.get("/api/recommendations").status_code == 400


def test_trending_with_redis_down_is_degraded_not_an_error(
    client: FlaskClient, store: FlakyStore, services: ApiServices,
) -> None:
    views(store, services, "someone", ["candles-1"] * 2 + ["mugs-2"])
    client.get("/api/recommendations?user_id=x")  # a good request caches the list
    store.down = True
    response = client.get("/api/trending?k=5&category=Mugs")
    assert response.status_code == 200
    body = response.get_json()
    assert body["degraded"] is True and body["category"] == "Mugs"
    assert body["items"][0]["item_id"] == "mugs-2"
    assert all(i["category"] == "Mugs" for i in body["items"])


def test_with_redis_down_no_recommendation_endpoint_answers_5xx_except_503_for_history(
    client: FlaskClient, store: FlakyStore,
) -> None:
    store.down = True
    for path in ("/api/recommendations?user_id=u1", "/api/trending",
                 "/api/items/mugs-1", "/api/items/mugs-1/similar"):
        assert client.get(path).status_code == 200, path
    history = client.get("/api/users/u1/history", headers=OPERATOR)
    assert history.status_code == 503  # nothing to fall back on: say so in the error shape
    assert history.get_json()["error"]["code"] == "temporary_failure"


def test_healthz_reports_503_with_redis_false_while_redis_is_down(
    client: FlaskClient, store: FlakyStore,
) -> None:
    assert client.get("/healthz").status_code == 200
    store.down = True
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.get_json()["checks"]["redis"] is False


def test_recommendations_are_personal_again_once_redis_is_back(
    client: FlaskClient, store: FlakyStore, services: ApiServices,
) -> None:
    views(store, services, "u1", ["candles-1", "candles-2", "candles-3"])
    store.down = True
    assert client.get("/api/recommendations?user_id=u1").get_json()["degraded"] is True
    store.down = False
    body = client.get("/api/recommendations?user_id=u1&k=3").get_json()
    assert "degraded" not in body
    assert {i["category"] for i in body["items"]} == {"Candles"}


def test_a_failing_catalog_refresh_does_not_fail_the_request(
    app: Flask, client: FlaskClient, store: FlakyStore, services: ApiServices,
) -> None:
    class DownReplica:
        def refresh(self, force: bool = False) -> int:
            raise TemporaryFailure("Redis catalog log failed (fake)")

    replica: Any = DownReplica()
    services.replica = replica
    assert client.get("/api/trending").status_code == 200


# --- the cache itself --------------------------------------------------------------------
def make_fallback(services: ApiServices, clock: Callable[[], float]) -> PopularFallback:
    return PopularFallback(services.catalog, refresh_s=10.0, clock=clock)


def test_the_cached_list_is_refreshed_at_most_once_per_interval(
    store: FlakyStore, services: ApiServices,
) -> None:
    clock = FakeClock()
    fallback = make_fallback(services, clock)
    views(store, services, "a", ["mugs-1"])
    assert fallback.maybe_refresh(services.recommender) is True
    views(store, services, "b", ["bags-1"] * 5)
    clock.now = 5.0
    assert fallback.maybe_refresh(services.recommender) is False
    assert fallback.items(1)[0].item.item_id == "mugs-1"
    clock.now = 10.0
    assert fallback.maybe_refresh(services.recommender) is True
    assert fallback.items(1)[0].item.item_id == "bags-1"


def test_a_refresh_that_fails_keeps_the_old_list(
    store: FlakyStore, services: ApiServices,
) -> None:
    clock = FakeClock()
    fallback = make_fallback(services, clock)
    views(store, services, "a", ["candles-7"])
    fallback.maybe_refresh(services.recommender)
    store.down = True
    clock.now = 60.0
    assert fallback.maybe_refresh(services.recommender) is False
    assert fallback.has_popular
    assert fallback.items(1)[0].item.item_id == "candles-7"


def test_the_fallback_leaves_out_excluded_categories_and_out_of_stock_items(
    services: ApiServices,
) -> None:
    from dataclasses import replace

    catalog = dict(services.catalog)
    catalog["mugs-0"] = replace(catalog["mugs-0"], in_stock=False)
    fallback = PopularFallback(catalog)
    items = fallback.items(100, RecRequest("u", 100),
                           CandidateFilter(Rules(excluded_categories=frozenset({"Bags"}))))
    ids = {r.item.item_id for r in items}
    assert "mugs-0" not in ids
    assert not any(i.startswith("bags-") for i in ids)
    assert len(ids) == len(catalog) - 1 - 10
