"""Log-out ends the session for good: a copy of the cookie saved before it opens nothing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.fakes import toy_app

CSRF = re.compile(r'<meta name="csrf-token" content="([^"]+)">')


@pytest.fixture
def app(tmp_path: Path) -> Flask:
    return toy_app(tmp_path)


def _token(client: FlaskClient, path: str = "/") -> str:
    found = CSRF.search(client.get(path).text)
    assert found
    return found.group(1)


def _log_in(client: FlaskClient, *, signup: bool = False) -> None:
    form = {"username": "alice", "password": "password-1", "csrf_token": _token(client)}
    if signup:
        form["password2"] = form["password"]
    response = client.post("/signup" if signup else "/login", data=form)
    assert response.status_code == 302, response.text


def _session_cookie(app: Flask, client: FlaskClient) -> str:
    cookie = client.get_cookie(app.config["SESSION_COOKIE_NAME"])
    assert cookie is not None
    return cookie.value


def _opens_the_profile(app: Flask, cookie: str) -> bool:
    thief = app.test_client()
    thief.set_cookie(app.config["SESSION_COOKIE_NAME"], cookie)
    return thief.get("/profile").status_code == 200


def test_a_cookie_saved_before_logout_no_longer_opens_the_account(app: Flask) -> None:
    client = app.test_client()
    _log_in(client, signup=True)
    saved = _session_cookie(app, client)
    assert _opens_the_profile(app, saved)

    assert client.post("/logout", data={"csrf_token": _token(client)}).status_code == 302

    assert not _opens_the_profile(app, saved)


def test_logout_ends_the_users_other_sessions_and_a_new_login_works(app: Flask) -> None:
    laptop, phone = app.test_client(), app.test_client()
    _log_in(laptop, signup=True)
    _log_in(phone)
    assert laptop.post("/logout", data={"csrf_token": _token(laptop)}).status_code == 302
    assert phone.get("/profile").status_code == 302  # to the log-in form

    _log_in(phone)
    assert phone.get("/profile").status_code == 200
    assert _opens_the_profile(app, _session_cookie(app, phone))
