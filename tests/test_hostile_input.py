"""Hostile input to the JSON intake and the storefront forms: a clear 4xx (or a safe
default), never a 500. The fuzz test covers the storefront, which schemathesis (``/api``
only) does not reach."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.params import MAX_JSON_DEPTH
from tests.fakes import toy_app

#: Digits ``int`` or ``str.isdigit`` take but are not ASCII: superscript two, Arabic-Indic
#: one and two, fullwidth five and zero.
ODD_DIGITS = ["\u00b2", "\u0661\u0662", "\uff15", "\uff10"]
CSRF = re.compile(r'<meta name="csrf-token" content="([^"]+)">')
FUZZ = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture
def app(tmp_path: Path) -> Flask:
    return toy_app(tmp_path)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def _token(client: FlaskClient) -> str:
    found = CSRF.search(client.get("/").text)
    assert found
    return found.group(1)


def _some_item(app: Flask) -> str:
    return next(iter(app.extensions["streamrec"].catalog))


def _some_category(app: Flask) -> str:
    return next(iter(app.extensions["streamrec"].catalog.values())).category


# --- deep JSON -----------------------------------------------------------------------------
@pytest.mark.parametrize("url", ["/api/events", "/api/feedback"])
@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 1_000, 100_000])
@pytest.mark.parametrize("where", ["body", "field"])
def test_json_nested_too_deep_is_refused_with_400(
    client: FlaskClient, url: str, depth: int, where: str
) -> None:
    nested = "[" * depth + "]" * depth
    body = nested if where == "body" else \
        '{"event_type": "view", "user_id": "u", "item_id": "i", "product_id": "i", ' \
        f'"rating": 3, "extra": {nested}}}'
    response = client.post(url, data=body, content_type="application/json")
    assert response.status_code == 400, response.data[:300]
    assert response.get_json()["error"]["code"] == "invalid_request"


def test_json_as_deep_as_allowed_is_parsed(client: FlaskClient) -> None:
    nested = "[" * (MAX_JSON_DEPTH - 1) + "]" * (MAX_JSON_DEPTH - 1)
    body = '{"event_type": "view", "user_id": "u", "item_id": "i", "extra": ' + nested + "}"
    response = client.post("/api/events", data=body, content_type="application/json")
    assert response.status_code == 422  # parsed, then refused by the schema (no such field)


# --- unicode digits and huge numbers -------------------------------------------------------
@pytest.mark.parametrize("number", [*ODD_DIGITS, "9" * 5_000, "-1", "1_0", "0x10"])
def test_odd_page_numbers_show_the_first_page(app: Flask, client: FlaskClient,
                                              number: str) -> None:
    for url in ("/search?q=a", f"/category/{_some_category(app)}", "/shop-api/trending?"):
        sep = "&" if "?" in url else "?"
        key = "k" if "trending" in url else "page"
        response = client.get(f"{url}{sep}{key}={number}")
        assert response.status_code == 200, (url, response.status_code)


@pytest.mark.parametrize("quantity", [*ODD_DIGITS, "9" * 5_000, "-1", "1.5", ""])
def test_odd_quantities_are_refused_with_400(app: Flask, client: FlaskClient,
                                             quantity: str) -> None:
    response = client.post("/cart/add", data={"item_id": _some_item(app), "quantity": quantity,
                                              "csrf_token": _token(client)})
    assert response.status_code == 400


@pytest.mark.parametrize("number", ["\u00b2", "9" * 5_000, "+3", " 4 "])
def test_odd_k_on_the_json_api_is_a_400_or_accepted(client: FlaskClient, number: str) -> None:
    response = client.get(f"/api/recommendations?user_id=u&k={number}")
    assert response.status_code in (200, 400)


# --- CR/LF in redirect targets -------------------------------------------------------------
@pytest.mark.parametrize("target", ["/cart\r\nSet-Cookie: evil=1", "/\nx", "/a\x00b", "/\x7f"])
def test_a_redirect_target_with_control_characters_goes_home(client: FlaskClient,
                                                             target: str) -> None:
    response = client.post("/signup", data={
        "username": "mallory", "password": "password-1", "password2": "password-1",
        "next": target, "csrf_token": _token(client)})
    assert response.status_code == 302
    assert response.headers["Location"] == "/"
    assert "evil" not in response.headers.get("Set-Cookie", "")


# --- fuzz: any text in any storefront field -------------------------------------------------
text = st.text(max_size=40) | st.sampled_from([*ODD_DIGITS, "9" * 5_000, "\r\n", "%0d%0a", "-0"])


@FUZZ
@given(page=text, k=text, q=text, nxt=text)
def test_fuzzed_storefront_queries_never_get_a_5xx(
    client: FlaskClient, app: Flask, page: str, k: str, q: str, nxt: str
) -> None:
    for url, params in (
        ("/search", {"q": q, "page": page}),
        (f"/category/{_some_category(app)}", {"page": page}),
        ("/shop-api/trending", {"k": k}),
        ("/login", {"next": nxt}),
        ("/signup", {"next": nxt}),
    ):
        response = client.get(url, query_string=params)
        assert response.status_code < 500, (url, params)


@FUZZ
@given(quantity=text, rating=text, nxt=text, username=text, password=text, rec=text)
def test_fuzzed_storefront_forms_never_get_a_5xx(
    client: FlaskClient, app: Flask, quantity: str, rating: str, nxt: str, username: str,
    password: str, rec: str,
) -> None:
    item = _some_item(app)
    csrf = _token(client)
    for url, form in (
        ("/cart/add", {"item_id": item, "quantity": quantity, "next": nxt, "rec": rec}),
        ("/cart/update", {"item_id": item, "quantity": quantity}),
        (f"/product/{item}/rate", {"rating": rating, "review": rec}),
        ("/login", {"username": username, "password": password, "next": nxt}),
        ("/signup", {"username": username, "password": password, "password2": password,
                     "next": nxt}),
    ):
        response = client.post(url, data={**form, "csrf_token": csrf})
        assert response.status_code < 500, (url, form)
        if response.status_code in (301, 302, 303):
            assert not re.search(r"[\x00-\x1f\x7f]", response.headers["Location"])
