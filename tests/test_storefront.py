"""The storefront on fake services: accounts, security, catalogue, shopping and events."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from api import create_app
from api.services import ApiServices
from api.storefront.account_views import LOGIN_MAX_FAILURES
from api.storefront.blueprint import safe_next
from api.storefront.images import product_svg
from api.storefront.reasons import reason
from core.events import AddedToCart, ItemClicked, ItemViewed, Purchased, Rated
from core.settings import Settings
from core.types import Item
from online_models.processor import StreamProcessor
from online_models.profile import ContentProfile
from tests.fakes import RecordingPublisher, toy_services

CSRF = re.compile(r'<meta name="csrf-token" content="([^"]+)">')


@pytest.fixture
def services(tmp_path: Path) -> ApiServices:
    # No purchases file in data_dir: "customers also bought" comes from site orders only.
    settings = Settings(redis_url="redis://fake", kafka_bootstrap="fake:9092",
                        secret_key="storefront-test-secret", data_dir=tmp_path,
                        state_dir=tmp_path)
    return toy_services(settings)


def published(services: ApiServices) -> list:
    publisher = services.publisher
    assert isinstance(publisher, RecordingPublisher)
    return publisher.events


def token(client: FlaskClient, path: str = "/") -> str:
    found = CSRF.search(client.get(path).text)
    assert found, f"no CSRF token on {path}"
    return found.group(1)


def signup(client: FlaskClient, username: str = "alice", password: str = "password-1",
           categories: tuple[str, ...] = ()) -> FlaskClient:
    response = client.post("/signup", data={
        "username": username, "password": password, "password2": password,
        "categories": list(categories), "csrf_token": token(client, "/signup")})
    assert response.status_code == 302, response.text
    return client


def apply_events(services: ApiServices) -> None:
    StreamProcessor(services.state, services.index,
                    {i: it.category for i, it in services.catalog.items()},
                    half_life_s=3600.0, profile=ContentProfile(0.3)).apply(published(services))


# --- accounts and security -----------------------------------------------------------------
def test_signup_logs_the_new_user_in(client: FlaskClient) -> None:
    signup(client)
    page = client.get("/").text
    assert 'id="profile-link">alice<' in page and "Log out" in page


def test_a_duplicate_signup_is_refused(app: Flask, client: FlaskClient) -> None:
    signup(client)
    other = app.test_client()
    response = other.post("/signup", data={
        "username": "ALICE", "password": "password-2", "password2": "password-2",
        "csrf_token": token(other, "/signup")})
    assert response.status_code == 409
    assert "That username is taken" in response.text


def test_mismatched_passwords_and_short_passwords_are_refused(client: FlaskClient) -> None:
    csrf = token(client, "/signup")
    differ = client.post("/signup", data={"username": "bob", "password": "password-1",
                                          "password2": "password-2", "csrf_token": csrf})
    short = client.post("/signup", data={"username": "bob", "password": "short",
                                         "password2": "short", "csrf_token": csrf})
    assert (differ.status_code, short.status_code) == (400, 400)
    assert "differ" in differ.text and "at least 8" in short.text


def test_login_with_a_wrong_password_is_refused(app: Flask, client: FlaskClient) -> None:
    signup(client)
    other = app.test_client()
    response = other.post("/login", data={"username": "alice", "password": "wrong-pass",
                                          "csrf_token": token(other, "/login")})
    assert response.status_code == 401
    assert "Wrong username or password" in response.text
    assert "Log out" not in other.get("/").text


def test_login_renews_the_session_and_sets_safe_cookie_flags(
    app: Flask, client: FlaskClient
) -> None:
    signup(client)
    other = app.test_client()
    before = token(other, "/login")
    response = other.post("/login", data={"username": "alice", "password": "password-1",
                                          "csrf_token": before, "next": "https://evil.test/"})
    assert response.status_code == 302 and response.headers["Location"] == "/"
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert token(other) != before  # a fresh CSRF token: the session was renewed


def test_the_secure_cookie_flag_follows_the_setting() -> None:
    app = create_app(Settings(secret_key="k" * 32), services=toy_services())
    assert app.config["SESSION_COOKIE_SECURE"] is False
    assert app.config["SESSION_COOKIE_HTTPONLY"] is True


def test_logout_needs_a_post_with_the_token(client: FlaskClient) -> None:
    signup(client)
    assert client.get("/logout").status_code == 405
    assert client.post("/logout").status_code == 400
    assert client.post("/logout", data={"csrf_token": token(client)}).status_code == 302
    assert "Log in" in client.get("/").text


def test_login_attempts_are_rate_limited(app: Flask, client: FlaskClient) -> None:
    signup(client)
    attacker = app.test_client()
    csrf = token(attacker, "/login")
    for _ in range(LOGIN_MAX_FAILURES):
        bad = attacker.post("/login", data={"username": "alice", "password": "guess-guess",
                                            "csrf_token": csrf})
        assert bad.status_code == 401
    # Even the right password is refused while the limit holds.
    locked = attacker.post("/login", data={"username": "alice", "password": "password-1",
                                           "csrf_token": csrf})
    assert locked.status_code == 429
    assert "Too many failed log-in attempts" in locked.text


@pytest.mark.parametrize(("path", "data"), [
    ("/cart/add", {"item_id": "mugs-1"}),
    ("/signup", {"username": "mallory", "password": "password-1", "password2": "password-1"}),
    ("/login", {"username": "alice", "password": "password-1"}),
    ("/checkout", {}),
    ("/product/mugs-1/rate", {"rating": "5"}),
])
def test_every_post_without_the_csrf_token_is_refused(
    client: FlaskClient, path: str, data: dict[str, str]
) -> None:
    client.get("/")  # a session with a token exists, but the form does not carry it
    response = client.post(path, data=data)
    assert response.status_code == 400
    assert "security token" in response.text
    wrong = client.post(path, data={**data, "csrf_token": "forged"})
    assert wrong.status_code == 400


def test_the_csrf_token_is_accepted_from_the_header_for_fetch(
    client: FlaskClient, services: ApiServices
) -> None:
    response = client.post("/cart/add", data={"item_id": "mugs-1"},
                           headers={"X-CSRF-Token": token(client),
                                    "Accept": "application/json"})
    assert response.status_code == 200
    assert response.get_json() == {"item_id": "mugs-1", "quantity": 1, "cart_items": 1}


def test_a_user_sees_only_their_own_profile_and_orders(
    app: Flask, client: FlaskClient
) -> None:
    signup(client, "alice")
    csrf = token(client)
    client.post("/cart/add", data={"item_id": "mugs-1", "csrf_token": csrf})
    client.post("/checkout", data={"csrf_token": csrf})
    assert "Order #1" in client.get("/profile").text
    bob = signup(app.test_client(), "bob")
    page = bob.get("/profile").text
    assert "Hello, bob" in page and "Order #1" not in page and "No orders yet" in page
    assert app.test_client().get("/profile").headers["Location"].startswith("/login")


def test_pages_forbid_inline_scripts_and_foreign_sources(client: FlaskClient) -> None:
    policy = client.get("/").headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "default-src 'self'" in policy
    assert "<script>" not in client.get("/").text  # the one script is a file


def test_redirect_targets_stay_on_the_site() -> None:
    assert safe_next("/product/x?rec=1") == "/product/x?rec=1"
    for evil in ("https://evil.test/", "//evil.test", "/\\evil.test", "javascript:alert(1)"):
        assert safe_next(evil) == "/"


# --- catalogue -----------------------------------------------------------------------------
def test_categories_paginate(client: FlaskClient, services: ApiServices) -> None:
    page = client.get("/category/Candles")
    assert page.status_code == 200 and "10 products" in page.text
    assert page.text.count('class="card"') == 10
    assert client.get("/category/Nothing").status_code == 404


def test_category_pages_hold_at_most_a_page_of_items(tmp_path: Path) -> None:
    from api.storefront.shop_views import PAGE_SIZE
    from tests.fakes import toy_catalog

    services = toy_services(Settings(secret_key="k" * 32, data_dir=tmp_path, state_dir=tmp_path))
    services.catalog = toy_catalog(per_category=PAGE_SIZE + 5)
    client = create_app(services.settings, services=services).test_client()
    first = client.get("/category/Mugs").text
    second = client.get("/category/Mugs?page=2").text
    assert first.count('class="card"') == PAGE_SIZE and "Page 1 of 2" in first
    assert second.count('class="card"') == 5 and 'rel="prev"' in second


def test_search_ranks_matching_products(client: FlaskClient) -> None:
    page = client.get("/search?q=candles item 3").text
    ids = re.findall(r'data-item-id="([^"]+)"', page)
    assert ids[0] == "candles-3" and set(ids) <= {f"candles-{n}" for n in range(10)}
    assert 'id="corrected"' not in page


def test_search_tolerates_a_misspelling(client: FlaskClient) -> None:
    page = client.get("/search?q=candel").text
    assert "Showing results for" in page and "<strong>candles</strong>" in page
    ids = re.findall(r'data-item-id="([^"]+)"', page)
    assert len(ids) == 10 and all(i.startswith("candles-") for i in ids)


def test_search_with_nothing_close_says_so(client: FlaskClient) -> None:
    page = client.get("/search?q=zzzzqqq").text
    assert "Nothing matches" in page


def test_a_product_page_shows_the_product_and_similar_items(client: FlaskClient) -> None:
    page = client.get("/product/mugs-2").text
    assert "Mugs item 2" in page and "£3.00" in page and "No ratings yet" in page
    similar = re.search(r'id="similar">(.*?)</div>\s*</section>', page, re.S)
    assert similar is not None
    ids = re.findall(r'data-item-id="([^"]+)"', similar.group(1))
    assert ids and all(i.startswith("mugs-") for i in ids) and "mugs-2" not in ids
    assert client.get("/product/nope").status_code == 404


def test_product_pictures_are_deterministic_escaped_svg(client: FlaskClient) -> None:
    response = client.get("/product/mugs-2/image.svg")
    assert response.status_code == 200 and response.mimetype == "image/svg+xml"
    assert response.data == client.get("/product/mugs-2/image.svg").data
    assert response.data != client.get("/product/mugs-3/image.svg").data
    evil = product_svg(Item("x", '<script>alert("x")</script>', "</text>"))
    assert "<script>" not in evil and "</text></text>" not in evil


# --- shopping and events -------------------------------------------------------------------
def test_viewing_a_product_emits_a_view_and_a_click_from_a_recommendation(
    client: FlaskClient, services: ApiServices
) -> None:
    client.get("/product/mugs-1")
    client.get("/product/mugs-2?rec=abc123")
    client.get("/product/mugs-3?rec=not%20valid")  # an invalid rec id is dropped, not a 500
    events = published(services)
    assert [type(e) for e in events] == [ItemViewed, ItemViewed, ItemClicked, ItemViewed]
    assert events[2].rec_id == "abc123" and events[2].item_id == "mugs-2"
    assert len({e.user_id for e in events}) == 1 and events[0].user_id.startswith("anon:")
    assert events[0].session_id


def test_shopping_emits_cart_purchase_and_rating_events_as_the_user(
    client: FlaskClient, services: ApiServices
) -> None:
    signup(client)
    csrf = token(client)
    client.post("/cart/add", data={"item_id": "bags-1", "quantity": "2", "csrf_token": csrf})
    client.post("/cart/add", data={"item_id": "mugs-4", "csrf_token": csrf})
    cart = client.get("/cart").text
    assert 'id="cart-total">£9.00<' in cart  # 2 x £2.00 + £5.00
    assert client.post("/checkout", data={"csrf_token": csrf}).status_code == 302
    assert "Your cart is empty" in client.get("/cart").text
    client.post("/product/bags-1/rate", data={"rating": "5", "review": "lovely",
                                              "csrf_token": csrf})
    events = published(services)
    kinds = [type(e) for e in events]
    assert kinds == [AddedToCart, AddedToCart, Purchased, Purchased, Rated]
    assert {e.user_id for e in events} == {"u:1"}
    purchases = [e for e in events if isinstance(e, Purchased)]
    assert [(p.item_id, p.quantity, p.price) for p in purchases] == [
        ("bags-1", 2, 2.0), ("mugs-4", 1, 5.0)]
    rated = events[-1]
    assert isinstance(rated, Rated) and rated.rating == 5.0 and rated.review == "lovely"
    product = client.get("/product/bags-1").text
    assert "5.0 / 5 from 1 rating" in product and "lovely" in product


def test_a_visitors_cart_survives_login_and_checkout_requires_it(
    app: Flask, client: FlaskClient
) -> None:
    signup(app.test_client(), "alice")
    csrf = token(client)
    client.post("/cart/add", data={"item_id": "bags-2", "csrf_token": csrf})
    to_login = client.post("/checkout", data={"csrf_token": csrf})
    assert to_login.headers["Location"] == "/login?next=/cart"
    client.post("/login", data={"username": "alice", "password": "password-1",
                                "csrf_token": token(client, "/login"), "next": "/cart"})
    assert "Bags item 2" in client.get("/cart").text


def test_ratings_outside_one_to_five_are_refused(client: FlaskClient) -> None:
    signup(client)
    response = client.post("/product/mugs-1/rate", data={"rating": "9",
                                                         "csrf_token": token(client)})
    assert response.status_code == 400


def test_customers_also_bought_comes_from_orders(app: Flask, services: ApiServices) -> None:
    shopper = signup(app.test_client(), "alice")
    csrf = token(shopper)
    for item in ("bags-1", "candles-7"):
        shopper.post("/cart/add", data={"item_id": item, "csrf_token": csrf})
    shopper.post("/checkout", data={"csrf_token": csrf})
    page = app.test_client().get("/product/bags-1").text
    also = re.search(r'id="also-bought">(.*?)</div>\s*</section>', page, re.S)
    assert also is not None and 'data-item-id="candles-7"' in also.group(1)
    # A later order counts too, without a restart.
    for item in ("bags-1", "mugs-9"):
        shopper.post("/cart/add", data={"item_id": item, "csrf_token": csrf})
    shopper.post("/checkout", data={"csrf_token": csrf})
    assert 'data-item-id="mugs-9"' in app.test_client().get("/product/bags-1").text


# --- recommendations -----------------------------------------------------------------------
def test_a_new_user_with_preferred_categories_starts_with_their_popular_items(
    app: Flask, client: FlaskClient, services: ApiServices
) -> None:
    visitor = app.test_client()
    for item in ("mugs-5", "mugs-5", "bags-3"):
        visitor.get(f"/product/{item}")
    apply_events(services)
    signup(client, "alice", categories=("Bags",))
    page = client.get("/").text
    assert 'data-mode="interests"' in page
    panel = page.split('id="recommended-items"')[1].split("</section>")[0]
    ids = re.findall(r'data-item-id="([^"]+)"', panel)
    assert ids[0] == "bags-3" and all(i.startswith("bags-") for i in ids)
    assert "Popular in Bags, a category you like" in panel
    assert client.get("/shop-api/interests").get_json()["items"][0]["item_id"] == "bags-3"
    assert app.test_client().get("/shop-api/interests").get_json() == {"items": []}


def test_the_panel_follows_what_the_user_viewed(
    client: FlaskClient, services: ApiServices
) -> None:
    for item in ("candles-1", "candles-2"):
        client.get(f"/product/{item}")
    apply_events(services)
    page = client.get("/").text
    panel = page.split('id="recommended-items"')[1].split("</section>")[0]
    ids = re.findall(r'data-item-id="([^"]+)"', panel)
    assert ids and ids[0].startswith("candles-") and "candles-1" not in ids
    assert "Similar to what you viewed" in panel
    assert "?rec=" in panel  # clicks carry the recommendation id


def test_trending_lists_the_most_popular_items(app: Flask, services: ApiServices) -> None:
    visitor = app.test_client()
    for item in ("mugs-1", "mugs-1", "bags-2"):
        visitor.get(f"/product/{item}")
    apply_events(services)
    body = visitor.get("/shop-api/trending?k=2").get_json()
    assert [i["item_id"] for i in body["items"]] == ["mugs-1", "bags-2"]
    assert body["items"][0]["reason"] == "Trending now"


def test_reasons_name_the_dominant_source() -> None:
    assert reason({"content": 0.2, "popularity": 0.9}) == "Popular now"
    assert reason({"content": 0.9, "popularity": 0.2}) == "Similar to what you viewed"
    assert reason({"something_new": 1.0}) == "Picked for you"


def test_a_broker_outage_does_not_break_pages(client: FlaskClient,
                                              services: ApiServices) -> None:
    publisher = services.publisher
    assert isinstance(publisher, RecordingPublisher)
    publisher.fail = True
    assert client.get("/product/mugs-1").status_code == 200
