"""The JSON API on fake services: shapes, recommendations, events and errors."""

from __future__ import annotations

import pytest

from api import create_app
from api.services import ApiServices
from core.events import ItemViewed
from tests.fakes import OPERATOR, RecordingPublisher, live_recommender, toy_services


def learn_views(services: ApiServices, user: str, items: list[str]) -> None:
    from online_models.processor import StreamProcessor
    from online_models.profile import ContentProfile

    processor = StreamProcessor(
        services.state, services.index,
        {i: it.category for i, it in services.catalog.items()},
        half_life_s=3600.0, profile=ContentProfile(0.3),
    )
    processor.apply([ItemViewed(user_id=user, item_id=i, timestamp=1000.0 + n)  # type: ignore[arg-type]
                     for n, i in enumerate(items)])


def test_an_unknown_user_gets_popular_items(client, services) -> None:
    learn_views(services, "someone", ["mugs-3", "mugs-3", "mugs-3", "bags-1"])
    body = client.get("/api/recommendations?user_id=newcomer&k=2").get_json()
    assert body["user_id"] == "newcomer"
    assert body["rec_id"]
    assert [i["item_id"] for i in body["items"]] == ["mugs-3", "bags-1"]
    assert set(body["items"][0]) == {"item_id", "name", "category", "price", "score", "sources",
                                     "reason"}
    assert list(body["items"][0]["sources"]) == ["popularity"]
    assert body["items"][0]["reason"] == "Popular right now"


def test_recommendations_follow_the_category_a_user_viewed(client, services) -> None:
    learn_views(services, "u1", ["candles-1", "candles-2", "candles-3"])
    body = client.get("/api/recommendations", query_string={"user_id": "u1", "k": 5}).get_json()
    items = body["items"]
    assert len(items) == 5
    assert all(i["category"] == "Candles" for i in items)
    assert {"candles-1", "candles-2", "candles-3"}.isdisjoint(i["item_id"] for i in items)
    assert all("content" in i["sources"] for i in items)
    assert [i["score"] for i in items] == sorted((i["score"] for i in items), reverse=True)


def test_items_co_visited_by_others_are_recommended_with_a_reason(client, services) -> None:
    learn_views(services, "earlier", ["bags-1", "mugs-5"])
    learn_views(services, "u2", ["bags-1"])
    items = client.get("/api/recommendations?user_id=u2&k=10").get_json()["items"]
    linked = next(i for i in items if i["item_id"] == "mugs-5")
    assert linked["sources"]["covisit"] == 1.0
    assert linked["reason"] == "Because you viewed Bags item 1"


def test_trending_ranks_by_decayed_popularity_overall_and_per_category(client, services):
    learn_views(services, "a", ["mugs-1", "bags-2"])
    learn_views(services, "b", ["mugs-1", "mugs-2"])
    body = client.get("/api/trending?k=2").get_json()
    assert body["category"] is None
    assert body["items"][0]["item_id"] == "mugs-1"
    in_bags = client.get("/api/trending?category=Bags").get_json()["items"]
    assert [i["item_id"] for i in in_bags] == ["bags-2"]
    assert in_bags[0]["reason"] == "Trending in Bags"


def test_similar_items_share_the_category(client) -> None:
    body = client.get("/api/items/bags-2/similar?k=3").get_json()
    assert body["item_id"] == "bags-2"
    assert len(body["items"]) == 3
    assert all(i["category"] == "Bags" and i["item_id"] != "bags-2" for i in body["items"])


def test_posting_an_event_publishes_it_and_answers_202(client, services) -> None:
    response = client.post("/api/events", json={"event_type": "view", "user_id": "u1",
                                                 "item_id": "bags-1"})
    assert response.status_code == 202
    publisher = services.publisher
    assert isinstance(publisher, RecordingPublisher)
    assert publisher.events[0].event_id == response.get_json()["event_id"]


def test_posting_a_batch_publishes_every_event(client, services) -> None:
    batch = [{"event_type": "click", "user_id": "u1", "item_id": f"bags-{n}"} for n in range(3)]
    response = client.post("/api/events", json=batch)
    assert response.status_code == 202
    assert response.get_json()["accepted"] == 3
    assert len(services.publisher.events) == 3  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("method", "url", "kwargs", "status", "code"),
    [
        ("get", "/api/recommendations", {}, 400, "invalid_request"),
        ("get", "/api/recommendations?user_id=u1&k=zero", {}, 400, "invalid_request"),
        ("get", "/api/recommendations?user_id=u1&k=0", {}, 400, "invalid_request"),
        ("get", "/api/recommendations?user_id=u1&k=100000", {}, 400, "invalid_request"),
        ("get", "/api/recommendations?user_id=" + "x" * 500, {}, 400, "invalid_request"),
        ("get", "/api/items/nope/similar", {}, 404, "not_found"),
        ("get", "/api/items/nope", {}, 404, "not_found"),
        ("get", "/api/items/bags-1/similar?k=-1", {}, 400, "invalid_request"),
        ("post", "/api/events", {"data": "not json", "content_type": "application/json"},
         400, "invalid_request"),
        ("post", "/api/events", {"data": "x=1"}, 400, "invalid_request"),
        ("post", "/api/events", {"json": 42}, 400, "invalid_request"),
        ("post", "/api/events", {"json": []}, 400, "invalid_request"),
        ("post", "/api/events", {"json": [1, 2]}, 400, "invalid_request"),
        ("post", "/api/events", {"json": {"event_type": "view"}}, 422, "invalid_event"),
        ("post", "/api/events", {"json": {"event_type": "teleport", "user_id": "u",
                                          "item_id": "i"}}, 422, "invalid_event"),
        ("post", "/api/events", {"json": {"event_type": "rating", "user_id": "u",
                                          "item_id": "i", "rating": "five"}}, 422,
         "invalid_event"),
        ("post", "/api/events", {"json": {"event_type": "view", "user_id": "u",
                                          "item_id": "i", "extra": 1}}, 422, "invalid_event"),
        ("post", "/api/events", {"json": {"event_type": "view", "user_id": "u",
                                          "item_id": "i", "timestamp": "yesterday"}}, 422,
         "invalid_event"),
        ("post", "/api/events", {"json": {"event_type": "view", "user_id": "u",
                                          "item_id": "i", "timestamp": -1.7e308}}, 422,
         "invalid_event"),  # found by schemathesis: it overflowed time_t into a 500
        ("post", "/api/events", {"data": b"{" * 2_000_000, "content_type": "application/json"},
         413, "request_entity_too_large"),
        ("get", "/api/nowhere", {}, 404, "not_found"),
        ("delete", "/api/events", {}, 405, "method_not_allowed"),
    ],
)
def test_bad_requests_get_4xx_json_errors(client, method, url, kwargs, status, code) -> None:
    response = getattr(client, method)(url, **kwargs)
    assert response.status_code == status
    body = response.get_json()
    assert body["error"]["code"] == code
    assert body["error"]["message"]


def test_invalid_events_report_each_field_error(client) -> None:
    body = client.post("/api/events", json={"event_type": "rating", "user_id": "u",
                                            "item_id": "i", "rating": 7}).get_json()
    assert body["error"]["details"][0]["field"] == "rating"


def test_an_invalid_event_in_a_batch_publishes_nothing(client, services) -> None:
    batch = [{"event_type": "view", "user_id": "u", "item_id": "i"},
             {"event_type": "view", "user_id": "", "item_id": "i"}]
    response = client.post("/api/events", json=batch)
    assert response.status_code == 422
    assert response.get_json()["error"]["details"][0]["field"] == "1.user_id"
    assert services.publisher.events == []  # type: ignore[attr-defined]


def test_a_broker_outage_is_a_503_json_error(client, services) -> None:
    services.publisher.fail = True  # type: ignore[attr-defined]
    response = client.post("/api/events", json={"event_type": "view", "user_id": "u",
                                                 "item_id": "i"})
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "temporary_failure"


def test_healthz_reports_each_dependency(client, services) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok",
                                                 "checks": {"redis": True, "kafka": True},
                                                 "starting": []}
    services.publisher.fail = True  # type: ignore[attr-defined]
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.get_json()["checks"]["kafka"] is False


def test_catalog_upserts_are_validated_and_published(client, services) -> None:
    ok = client.post("/api/catalog", json={"event_type": "item_upsert", "item_id": "x1",
                                            "name": "A lamp", "price": 3.5},
                     headers=OPERATOR)
    assert ok.status_code == 202
    assert services.publisher.catalog[0].item_id == "x1"  # type: ignore[attr-defined]
    bad = client.post("/api/catalog", json={"event_type": "item_upsert", "item_id": "x2",
                                             "price": -1}, headers=OPERATOR)
    assert bad.status_code == 422
    assert {d["field"] for d in bad.get_json()["error"]["details"]} == {"name", "price"}


def test_a_trained_collaborative_model_scores_items_from_the_users_history(client, services):
    import numpy as np

    from index.faiss_index import ExactIndex
    from online_models.als_foldin import ALSFoldIn

    ids = list(services.catalog)
    factors = np.array([[1.0, 0.0] if i.startswith("mugs") else [0.0, 1.0] for i in ids])
    foldin = ALSFoldIn(ids, factors, regularization=0.1, alpha=10.0, version="v1")
    factor_index = ExactIndex(2)
    factor_index.upsert(ids, factors.astype(np.float32))
    services.recommender = live_recommender(
        services.state, services.index, services.catalog, {"collab": 1.0},
        models=lambda: (foldin, factor_index))

    learn_views(services, "mug-lover", ["mugs-1", "mugs-2"])  # stored history, no factors yet
    items = client.get("/api/recommendations?user_id=mug-lover&k=5").get_json()["items"]
    assert all(i["category"] == "Mugs" and i["sources"]["collab"] > 0.99 for i in items)
    assert items[0]["reason"] == "Shoppers like you bought this"


def test_the_openapi_spec_is_valid_and_lists_every_api_route(app, client) -> None:
    from openapi_spec_validator import validate

    spec = client.get("/api/openapi.json").get_json()
    validate(spec)
    documented = set(spec["paths"])
    routes = {
        str(rule.rule).replace("<", "{").replace(">", "}")
        for rule in app.url_map.iter_rules()
        if str(rule.rule).startswith("/api/") and "openapi" not in str(rule.rule)
    }
    assert routes <= documented, routes - documented


def test_feedback_publishes_a_rating_of_the_product(client, services) -> None:
    response = client.post("/api/feedback", json={"user_id": "u1", "product_id": "bags-1",
                                                   "rating": 4})
    assert response.status_code == 202
    event = services.publisher.events[-1]  # type: ignore[attr-defined]
    assert (event.event_type, event.item_id, event.rating) == ("rating", "bags-1", 4)
    missing = client.post("/api/feedback", json={"user_id": "u1", "rating": 4})
    assert missing.status_code == 422
    assert missing.get_json()["error"]["details"][0]["field"] == "product_id"
    assert client.post("/api/feedback", json={"user_id": "u1", "product_id": "bags-1",
                                              "rating": 6}).status_code == 422


def test_history_shows_recent_items_with_weights_and_purchases(client, services) -> None:
    from core.events import Purchased

    learn_views(services, "u5", ["bags-1"])
    from online_models.processor import StreamProcessor
    from online_models.profile import ContentProfile

    StreamProcessor(services.state, services.index, {}, half_life_s=3600.0,
                    profile=ContentProfile(0.3)).apply(
        [Purchased(user_id="u5", item_id="mugs-2", timestamp=2000.0)])  # type: ignore[arg-type]
    body = client.get("/api/users/u5/history", headers=OPERATOR).get_json()
    assert [r["item_id"] for r in body["recent"]] == ["mugs-2", "bags-1"]
    assert body["recent"][0]["weight"] == 8.0
    assert body["purchased"] == ["mugs-2"]


def test_purchased_items_are_not_recommended_again(client, services) -> None:
    from core.events import Purchased
    from online_models.processor import StreamProcessor
    from online_models.profile import ContentProfile

    processor = StreamProcessor(services.state, services.index, {}, half_life_s=3600.0,
                                profile=ContentProfile(0.3))
    processor.apply([Purchased(user_id="b", item_id="mugs-1", timestamp=1.0)])  # type: ignore[arg-type]
    services.recommender.recent_max = 0  # only the purchase rule can exclude it now
    items = client.get("/api/recommendations?user_id=b&k=30").get_json()["items"]
    assert "mugs-1" not in {i["item_id"] for i in items}


def test_category_price_and_context_filters_apply(client, services) -> None:
    learn_views(services, "p", ["bags-1", "mugs-1"])
    only_mugs = client.get("/api/recommendations?user_id=p&k=5&category=Mugs").get_json()
    assert {i["category"] for i in only_mugs["items"]} == {"Mugs"}
    cheap = client.get("/api/recommendations?user_id=p&k=30&max_price=3").get_json()["items"]
    assert cheap and all(i["price"] <= 3 for i in cheap)
    ctx = client.get("/api/recommendations?user_id=p&k=3&context_item=candles-4").get_json()
    assert ctx["items"][0]["category"] == "Candles"
    assert "candles-4" not in {i["item_id"] for i in ctx["items"]}
    assert client.get("/api/recommendations?user_id=p&context_item=nope").status_code == 404
    assert client.get("/api/recommendations?user_id=p&min_price=abc").status_code == 400
    assert client.get("/api/recommendations?user_id=p&variant=zzz").status_code == 400


def test_a_new_user_with_preferred_categories_gets_those_categories(client, services) -> None:
    learn_views(services, "others", ["candles-2", "candles-3", "bags-4", "bags-4", "bags-4"])
    body = client.get("/api/recommendations?user_id=fresh&k=3"
                      "&preferred_categories=Candles").get_json()
    assert {i["item_id"] for i in body["items"]} >= {"candles-2", "candles-3"}


def test_predict_answers_the_online_rating_models_rating(client, services) -> None:
    from core.events import Rated
    from online_models.processor import StreamProcessor
    from online_models.profile import ContentProfile
    from online_models.rating_mf import OnlineRatingMF

    StreamProcessor(services.state, services.index, {}, half_life_s=3600.0,
                    profile=ContentProfile(0.3), rating_model=OnlineRatingMF()).apply(
        [Rated(user_id="r", item_id="bags-1", rating=4, timestamp=1.0)])  # type: ignore[arg-type]
    body = client.get("/api/predict?user_id=r&item_id=bags-1").get_json()
    assert body["known_user"] and body["known_item"] and body["ratings_learnt"] == 1
    assert 1.0 <= body["rating"] <= 5.0
    assert client.get("/api/predict?user_id=r&item_id=nope").status_code == 404
    assert client.get("/api/predict?user_id=r").status_code == 400


def test_a_click_carrying_the_rec_id_is_credited_to_the_items_leading_source(app, client,
                                                                            services) -> None:
    from api.metrics import api_metrics

    learn_views(services, "clicker", ["bags-1", "bags-2"])
    rec = client.get("/api/recommendations?user_id=clicker&k=5").get_json()
    clicked = rec["items"][0]
    lead = max(clicked["sources"], key=lambda s: services.settings.blend_weights.get(s, 0)
               * clicked["sources"][s])
    client.post("/api/events", json={"event_type": "click", "user_id": "clicker",
                                     "item_id": clicked["item_id"], "rec_id": rec["rec_id"]})
    client.post("/api/events", json={"event_type": "click", "user_id": "clicker",
                                     "item_id": "mugs-9", "rec_id": rec["rec_id"]})  # not shown
    metrics = api_metrics(app)
    assert metrics.source_feedback.labels(lead, "click")._value.get() == 1
    assert sum(metrics.lead_source_items.labels(s)._value.get()
               for s in ("content", "collab", "covisit", "context", "popularity")) == 5


def test_operator_endpoints_need_the_api_token() -> None:
    from core.settings import Settings

    settings = Settings(redis_url="redis://fake", kafka_bootstrap="fake:9092",
                        api_token="s3cret", secret_key="k")
    services = toy_services(settings)
    client = create_app(settings, services=services).test_client()
    upsert = {"event_type": "item_upsert", "item_id": "x1", "name": "A lamp"}
    for response in (client.get("/api/users/u1/history"),
                     client.post("/api/catalog", json=upsert),
                     client.get("/api/users/u1/history",
                                headers={"Authorization": "Bearer wrong"})):
        assert response.status_code == 401
        assert response.get_json()["error"]["code"] == "unauthorized"
    ok = {"Authorization": "Bearer s3cret"}
    assert client.get("/api/users/u1/history", headers=ok).status_code == 200
    assert client.post("/api/catalog", json=upsert, headers=ok).status_code == 202
    # Shopper-facing endpoints stay open.
    assert client.get("/api/recommendations?user_id=u1").status_code == 200


def test_catalog_writes_are_closed_when_no_api_token_is_configured() -> None:
    from core.settings import Settings

    settings = Settings(redis_url="redis://fake", kafka_bootstrap="fake:9092", api_token="",
                        secret_key="k")
    services = toy_services(settings)
    client = create_app(settings, services=services).test_client()
    free_lamp = {"event_type": "item_upsert", "item_id": "mugs-1", "name": "Mug", "price": 0}
    for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": "Bearer None"}):
        response = client.post("/api/catalog", json=free_lamp, headers=headers)
        assert response.status_code == 401
        assert "STREAMREC_API_TOKEN" in response.get_json()["error"]["message"]
        assert client.get("/api/users/u1/history", headers=headers).status_code == 401
    assert services.publisher.catalog == []  # type: ignore[attr-defined]
