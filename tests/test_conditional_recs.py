"""Conditional recommendation requests: ETags of the versions, 304s, the per-worker cache."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from api import create_app
from api.conditional import ConditionalRecs, Versions
from api.services import ApiServices, conditional_recs
from core.ports import RecRequest
from core.settings import Settings
from infra.memory_store import InMemoryStateStore
from online_models.serving.popularity import PopularitySnapshot
from tests.fakes import toy_services, use_popularity
from tests.test_api import learn_views

URL = "/api/recommendations?user_id=u1&k=5"


class WallClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def wall() -> WallClock:
    return WallClock()


@pytest.fixture
def services(wall: WallClock) -> ApiServices:
    """Toy services whose popularity epoch lasts 60 s of a clock the test moves."""
    settings = Settings(redis_url="redis://fake", kafka_bootstrap="fake:9092",
                        secret_key="test-secret-key", rec_cache_size=100)
    built = toy_services(settings)
    recommender = built.recommender
    use_popularity(recommender, PopularitySnapshot(built.state, built.catalog, refresh_s=60.0,
                                                   wall=wall))
    built.conditional = conditional_recs(settings, built.state, recommender, built.replica)
    return built


@pytest.fixture
def runs(services: ApiServices, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The users whose lists the recommender computed, in order."""
    seen: list[str] = []
    original = services.recommender.run

    def counting(request: RecRequest) -> Any:
        seen.append(request.user_id)
        return original(request)

    monkeypatch.setattr(services.recommender, "run", counting)
    yield seen


def test_a_list_carries_an_etag_that_browsers_must_revalidate(client: FlaskClient) -> None:
    response = client.get(URL)
    assert response.status_code == 200
    assert response.headers["ETag"].startswith('"') and len(response.headers["ETag"]) > 10
    assert response.headers["Cache-Control"] == "private, no-cache"


def test_if_none_match_with_the_current_tag_gets_304_without_recomputing(
        client: FlaskClient, services: ApiServices, runs: list[str]) -> None:
    learn_views(services, "u1", ["candles-1"])
    first = client.get(URL)
    again = client.get(URL, headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304
    assert again.data == b""
    assert again.headers["ETag"] == first.headers["ETag"]
    assert again.headers["Cache-Control"] == "private, no-cache"
    assert runs == ["u1"]  # the first request only


def test_a_poll_without_the_header_gets_the_cached_list_and_its_rec_id(
        client: FlaskClient, runs: list[str]) -> None:
    first = client.get(URL)
    second = client.get(URL)
    assert second.status_code == 200
    assert second.get_json() == first.get_json()  # rec_id included: clicks stay attributed
    assert runs == ["u1"]


def test_the_users_own_event_changes_the_tag_the_list_and_the_rec_id(
        client: FlaskClient, services: ApiServices) -> None:
    learn_views(services, "u1", ["candles-1"])
    first = client.get(URL)
    learn_views(services, "u1", ["bags-1", "bags-2"])
    after = client.get(URL, headers={"If-None-Match": first.headers["ETag"]})
    assert after.status_code == 200
    assert after.headers["ETag"] != first.headers["ETag"]
    assert after.get_json()["rec_id"] != first.get_json()["rec_id"]
    assert after.get_json()["items"] != first.get_json()["items"]


def count_version_reads(services: ApiServices, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The users whose state version is read from now on, in order."""
    reads: list[str] = []
    original = services.state.user_version

    def counting(user_id: str) -> int:
        reads.append(user_id)
        return original(user_id)

    monkeypatch.setattr(services.state, "user_version", counting)
    return reads


def test_a_request_with_no_tag_to_compare_reads_the_state_once(
        client: FlaskClient, services: ApiServices, monkeypatch: pytest.MonkeyPatch) -> None:
    learn_views(services, "u1", ["candles-1"])
    version_reads = count_version_reads(services, monkeypatch)
    first = client.get(URL)  # nothing cached, no If-None-Match: only the state read
    assert version_reads == []
    # ... and its tag is the one of that read: the next poll gets a 304.
    assert client.get(URL, headers={"If-None-Match": first.headers["ETag"]}).status_code == 304
    assert version_reads == ["u1"]


def test_a_list_is_tagged_with_the_state_it_was_computed_from(
        client: FlaskClient, services: ApiServices, monkeypatch: pytest.MonkeyPatch) -> None:
    """The user's event lands between the version read and the state read: the list
    reflects it, so its tag must too (an older tag would only cost a recomputation, a
    newer one could hide a change)."""
    old_tag = client.get(URL).headers["ETag"]
    learn_views(services, "u1", ["candles-1"])
    original = services.state.user_state
    landed: list[bool] = []

    def event_lands_first(*args: Any, **kwargs: Any) -> Any:
        if not landed:
            landed.append(True)
            learn_views(services, "u1", ["bags-1"])
        return original(*args, **kwargs)

    monkeypatch.setattr(services.state, "user_state", event_lands_first)
    fresh = client.get(URL, headers={"If-None-Match": old_tag})
    assert fresh.status_code == 200
    assert "bags-1" not in [i["item_id"] for i in fresh.get_json()["items"]]
    again = client.get(URL, headers={"If-None-Match": fresh.headers["ETag"]})
    assert again.status_code == 304  # the tag says what the list reflects


def test_a_shoppers_own_event_shows_on_the_next_poll_before_any_consumer_applies_it(
        client: FlaskClient, services: ApiServices) -> None:
    first = client.get(URL)
    clicked = first.get_json()["items"][0]["item_id"]
    posted = client.post("/api/events", json={
        "event_type": "click", "user_id": "u1", "item_id": clicked,
        "rec_id": first.get_json()["rec_id"]})
    assert posted.status_code == 202
    assert services.state.recent_items("u1") == []  # no consumer ran (a fake publisher)
    poll = client.get(URL, headers={"If-None-Match": first.headers["ETag"]})
    assert poll.status_code == 200  # the version moved with the note
    assert clicked not in [i["item_id"] for i in poll.get_json()["items"]]  # seen at once
    assert client.get(URL, headers={"If-None-Match": poll.headers["ETag"]}).status_code == 304


def test_an_event_is_accepted_when_noting_it_fails(
        client: FlaskClient, services: ApiServices, monkeypatch: pytest.MonkeyPatch) -> None:
    from core.errors import TemporaryFailure

    def down(*args: Any, **kwargs: Any) -> None:
        raise TemporaryFailure("redis down")

    monkeypatch.setattr(services.state, "note_own_events", down)
    posted = client.post("/api/events", json={
        "event_type": "view", "user_id": "u1", "item_id": "candles-1"})
    assert posted.status_code == 202  # published: it shows once the consumers apply it


def test_other_shoppers_show_once_the_popularity_epoch_moves(
        client: FlaskClient, services: ApiServices, wall: WallClock) -> None:
    first = client.get(URL)
    learn_views(services, "someone-else", ["mugs-3", "mugs-3"])
    held = client.get(URL, headers={"If-None-Match": first.headers["ETag"]})
    assert held.status_code == 304  # within the epoch: the bounded staleness
    wall.now += 60.0
    moved = client.get(URL, headers={"If-None-Match": first.headers["ETag"]})
    assert moved.status_code == 200
    assert moved.headers["ETag"] != first.headers["ETag"]


def test_each_request_parameter_has_its_own_tag(client: FlaskClient) -> None:
    tags = {client.get(url).headers["ETag"] for url in (
        URL, "/api/recommendations?user_id=u1&k=6", "/api/recommendations?user_id=u2&k=5",
        URL + "&category=Bags", URL + "&min_price=2")}
    assert len(tags) == 5


def test_a_stale_or_foreign_tag_gets_the_full_list(client: FlaskClient) -> None:
    other = client.get("/api/recommendations?user_id=u2&k=5").headers["ETag"]
    for sent in (other, '"nonsense"', "not even quoted", 'W/"x", "y"'):
        response = client.get(URL, headers={"If-None-Match": sent})
        assert response.status_code == 200 and response.get_json()["items"]


def test_without_a_cache_a_poll_recomputes_but_304s_still_work() -> None:
    settings = Settings(redis_url="redis://fake", kafka_bootstrap="fake:9092",
                        secret_key="test-secret-key", rec_cache_size=0)
    built = toy_services(settings)
    use_popularity(built.recommender, PopularitySnapshot(built.state, built.catalog,
                                                         refresh_s=60.0))
    built.conditional = conditional_recs(settings, built.state, built.recommender, None)
    client = create_app(settings, services=built).test_client()
    first = client.get(URL)
    assert client.get(URL).get_json()["rec_id"] != first.get_json()["rec_id"]
    assert client.get(URL, headers={"If-None-Match": first.headers["ETag"]}).status_code == 304


def test_cache_results_are_counted_in_metrics(client: FlaskClient) -> None:
    tag = client.get(URL).headers["ETag"]
    client.get(URL)
    client.get(URL, headers={"If-None-Match": tag})
    client.get(URL, headers={"If-None-Match": tag})
    text = client.get("/metrics").get_data(as_text=True)
    assert 'streamrec_rec_cache_total{result="miss"} 1.0' in text
    assert 'streamrec_rec_cache_total{result="hit"} 1.0' in text
    assert 'streamrec_rec_cache_total{result="not_modified"} 2.0' in text


def test_every_version_and_the_configuration_change_the_tag() -> None:
    versions = {"user": 1, "model": "m1", "catalog": 3, "popularity_epoch": 7,
                "variant": "default"}

    def tag(config: object = None, **changed: Any) -> str:
        conditional = ConditionalRecs(InMemoryStateStore(), model_version=lambda: "",
                                      catalog_version=lambda: 0,
                                      popularity_epoch=lambda _: 0, config=config)
        return conditional.etag(RecRequest("u1", 5), Versions(**{**versions, **changed}))

    base = tag()
    assert tag() == base  # deterministic (no per-process salt)
    for name, value in [("user", 2), ("model", "m2"), ("catalog", 4),
                        ("popularity_epoch", 8), ("variant", "b")]:
        assert tag(**{name: value}) != base, name
    assert tag(config={"content": 0.5}) != base


def test_the_state_version_is_read_from_the_store() -> None:
    state = InMemoryStateStore()
    conditional = ConditionalRecs(state, model_version=lambda: "m", catalog_version=lambda: 2,
                                  popularity_epoch=lambda user: len(user))
    assert conditional.versions("u1", "default") == Versions(0, "m", 2, 2, "default")
    learn_views_state(state)
    assert conditional.versions("u1", "default").user == 1
    # Given (read with the user's state): nothing read.
    assert conditional.versions("u1", "default", user_version=7).user == 7


def learn_views_state(state: InMemoryStateStore) -> None:
    from core.ports import StateUpdate

    state.apply(StateUpdate(recent={"u1": ["a"]}))


def test_the_openapi_spec_documents_etag_if_none_match_and_304() -> None:
    from api.openapi import SPEC

    operation = SPEC["paths"]["/api/recommendations"]["get"]
    headers = {p["name"] for p in operation["parameters"] if p["in"] == "header"}
    assert "If-None-Match" in headers
    assert {"ETag", "Cache-Control"} <= set(operation["responses"]["304"]["headers"])
    assert "ETag" in operation["responses"]["200"]["headers"]


# --- the 304 fast path (api/fastpath.py) ---------------------------------------------------
def _flask_only(app: Flask) -> Flask:
    """``app`` without the fast path in front (what answered before it existed)."""
    app.wsgi_app = app.wsgi_app.inner  # type: ignore[attr-defined,method-assign]
    return app


def test_a_current_tag_gets_its_304_before_flask_with_the_same_headers(
        app: Flask, services: ApiServices, monkeypatch: pytest.MonkeyPatch) -> None:
    client = app.test_client()
    tag = client.get(URL).headers["ETag"]

    def flask_view(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the view ran")

    view = "recommendations.recommendations"
    original = app.view_functions[view]
    monkeypatch.setitem(app.view_functions, view, flask_view)
    fast = client.get(URL, headers={"If-None-Match": tag})
    assert fast.status_code == 304 and fast.data == b""
    monkeypatch.setitem(app.view_functions, view, original)
    slow = _flask_only(app).test_client().get(URL, headers={"If-None-Match": tag})
    assert slow.status_code == 304
    assert sorted(fast.headers.items()) == sorted(slow.headers.items())


def test_the_fast_paths_304s_are_timed_and_counted(client: FlaskClient) -> None:
    tag = client.get(URL).headers["ETag"]
    for _ in range(3):
        assert client.get(URL, headers={"If-None-Match": tag}).status_code == 304
    text = client.get("/metrics").get_data(as_text=True)
    assert ('streamrec_api_request_duration_seconds_count{endpoint="/api/recommendations",'
            'method="GET"} 4.0') in text
    assert 'streamrec_rec_cache_total{result="not_modified"} 3.0' in text


@pytest.mark.parametrize("query", ["user_id=u1&k=0", "user_id=u1&k=5&variant=nope",
                                   "k=5", "user_id=u1&k=5&context_item=unknown",
                                   "user_id=%FF&k=5"])
def test_a_bad_conditional_request_gets_flasks_answer(client: FlaskClient, query: str) -> None:
    url = f"/api/recommendations?{query}"
    fast = client.get(url, headers={"If-None-Match": '"x"'})
    assert fast.status_code in (400, 404, 422, 200)
    slow = _flask_only(client.application).test_client().get(
        url, headers={"If-None-Match": '"x"'})
    assert (fast.status_code, fast.get_json().keys()) == (slow.status_code,
                                                           slow.get_json().keys())


def test_a_changed_tag_goes_to_the_view_which_reads_the_versions_once(
        client: FlaskClient, services: ApiServices, monkeypatch: pytest.MonkeyPatch) -> None:
    first = client.get(URL)
    learn_views(services, "u1", ["candles-1"])
    reads = count_version_reads(services, monkeypatch)
    fresh = client.get(URL, headers={"If-None-Match": first.headers["ETag"]})
    assert fresh.status_code == 200 and fresh.headers["ETag"] != first.headers["ETag"]
    assert reads == ["u1"]


def test_the_fast_path_takes_one_rate_limit_token_per_request() -> None:
    settings = Settings(redis_url="redis://fake", kafka_bootstrap="fake:9092",
                        secret_key="test-secret-key", rate_limit_per_s=0.001,
                        rate_limit_burst=3)
    built = toy_services(settings)
    use_popularity(built.recommender, PopularitySnapshot(built.state, built.catalog,
                                                         refresh_s=60.0))
    built.conditional = conditional_recs(settings, built.state, built.recommender, None)
    client = create_app(settings, services=built).test_client()
    tag = client.get(URL).headers["ETag"]  # token 1
    # A stale tag: the fast path takes token 2 and lets Flask answer, which takes none.
    assert client.get(URL, headers={"If-None-Match": '"stale"'}).status_code == 200
    assert client.get(URL, headers={"If-None-Match": tag}).status_code == 304  # token 3
    limited = client.get(URL, headers={"If-None-Match": tag})
    assert limited.status_code == 429 and limited.headers["Retry-After"]
    assert limited.get_json()["error"]["code"] == "rate_limited"


def test_a_stale_tag_gets_the_cached_list_when_the_versions_did_not_move(
        client: FlaskClient, runs: list[str]) -> None:
    """A second tab, or a page that lost its list: the fast path lets the stale tag
    through, and the view serves this worker's list for the current versions."""
    first = client.get(URL)
    again = client.get(URL, headers={"If-None-Match": '"an-old-tag"'})
    assert again.status_code == 200
    assert again.get_json()["rec_id"] == first.get_json()["rec_id"]
    assert runs == ["u1"]
