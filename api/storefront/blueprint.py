"""The storefront blueprint and what every view shares: session identity, CSRF, events.

Identity: a logged-in user is ``u:<id>`` in events and carts; a visitor gets a
stable ``anon:<hex>`` id in the session, so their recommendations work too.
Flask's session is a signed cookie (HttpOnly, SameSite=Lax, Secure when
configured); it is cleared and refilled at login and logout. A signed cookie alone
cannot be revoked, so a logged-in session also carries the user's *session
generation* (stored server side): log-out moves it on, and every cookie issued
before, copies included, stops opening the account.

CSRF: each session holds a random token; every POST of the storefront must
carry it as the ``csrf_token`` form field or the ``X-CSRF-Token`` header.
"""

from __future__ import annotations

import hmac
import logging
import re
import secrets
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Response, abort, current_app, g, jsonify, render_template, request
from flask import session as flask_session
from werkzeug.exceptions import HTTPException

from api.attribution import written_before
from api.services import ApiServices, services
from core.errors import InvalidEvent, ServiceUnavailable, StreamrecError, TemporaryFailure
from core.events import InteractionEvent
from infra.accounts import AccountStore, User

from .state import StorefrontState

__all__ = [
    "CSRF_FIELD",
    "CSRF_HEADER",
    "bp",
    "build_event",
    "clean_rec_id",
    "csrf_token",
    "current_user",
    "emit",
    "event_fields",
    "login_user",
    "logout_user",
    "require_accounts",
    "safe_next",
    "session_id",
    "shopper_id",
    "storefront_state",
]

log = logging.getLogger(__name__)

bp = Blueprint("storefront", __name__, template_folder="templates", static_folder="static",
               static_url_path="/static/shop")

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
JSON_PREFIX = "/shop-api/"

#: Pages may load only what this server serves (no inline scripts, no CDN).
@bp.record_once
def _init_state(setup: Any) -> None:
    setup.app.extensions.setdefault("storefront", StorefrontState())
    # Globals (not a context processor), so that imported macros see them too.
    setup.app.jinja_env.globals.update(csrf_token=csrf_token, current_user=current_user,
                                       cart_count=cart_count)


def storefront_state() -> StorefrontState:
    state: StorefrontState = current_app.extensions["storefront"]
    return state


def require_accounts() -> AccountStore:
    accounts = services().accounts
    if accounts is None:
        raise ServiceUnavailable("accounts are not configured")
    return accounts


# --- identity --------------------------------------------------------------------------------
def current_user() -> User | None:
    """The logged-in user of this request (looked up once per request)."""
    if "user" not in g:
        uid = flask_session.get("uid")
        accounts = services().accounts
        g.user = accounts.get_user(int(uid)) if isinstance(uid, int) and accounts else None
        if g.user is not None and accounts is not None \
                and flask_session.get("gen") != accounts.session_generation(g.user.id):
            g.user = None  # a session the user logged out of (a copy of an old cookie)
        if uid is not None and g.user is None:  # the account is gone, or the session ended
            flask_session.clear()
    user: User | None = g.user
    return user


def shopper_id() -> str:
    """The id of this shopper in events and carts (stable for the session)."""
    user = current_user()
    if user is not None:
        return user.shopper_id
    anon = flask_session.get("anon")
    if not isinstance(anon, str):
        anon = f"anon:{secrets.token_hex(8)}"
        flask_session["anon"] = anon
    return anon


def cart_count() -> int:
    """Items in this shopper's cart (0 without an account store)."""
    accounts = services().accounts
    return sum(accounts.cart(shopper_id()).values()) if accounts else 0


def session_id() -> str:
    sid = flask_session.get("sid")
    if not isinstance(sid, str):
        sid = secrets.token_hex(8)
        flask_session["sid"] = sid
    return sid


def login_user(user: User) -> None:
    """Start a fresh session for ``user``: nothing of the old one survives but the cart."""
    anon = flask_session.get("anon")
    flask_session.clear()
    flask_session.permanent = True
    flask_session["uid"] = user.id
    flask_session["gen"] = require_accounts().session_generation(user.id)
    flask_session[CSRF_FIELD] = secrets.token_urlsafe(32)
    g.user = user
    if isinstance(anon, str):
        require_accounts().merge_cart(anon, user.shopper_id)


def logout_user() -> None:
    """End this session and every other session of the user issued before now."""
    user = current_user()
    if user is not None:
        require_accounts().end_sessions(user.id)
    flask_session.clear()
    g.user = None


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def safe_next(target: str | None, default: str = "/") -> str:
    r"""``target`` when it is a path on this site, else ``default`` (no open redirects).

    Control characters (CR/LF would split the ``Location`` header) are refused too.

    >>> safe_next("/cart"), safe_next("https://evil.example/"), safe_next("//evil"), safe_next(None)
    ('/cart', '/', '/', '/')
    >>> safe_next("/cart\r\nSet-Cookie: x=1")
    '/'
    """
    if not target or _CONTROL.search(target):
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//") \
            or "\\" in target:
        return default
    return target


# --- CSRF ------------------------------------------------------------------------------------
def csrf_token() -> str:
    token = flask_session.get(CSRF_FIELD)
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        flask_session[CSRF_FIELD] = token
    return token


@bp.before_request
def _check_csrf() -> None:
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    expected = flask_session.get(CSRF_FIELD)
    sent = request.form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER)
    if not (isinstance(expected, str) and sent
            and hmac.compare_digest(sent.encode(), expected.encode())):
        abort(400, description="The form's security token is missing or out of date. "
                               "Go back, reload the page and try again.")


@bp.after_request
def _no_store_when_logged_in(response: Response) -> Response:
    # CSP, framing and nosniff are on every page of the app (api.security_headers).
    if "uid" in flask_session or request.method == "POST":
        response.headers.setdefault("Cache-Control", "no-store")
    return response


# --- errors: HTML pages (JSON under /shop-api/) ----------------------------------------------
def _error_page(status: int, title: str, message: str) -> tuple[Response | str, int]:
    if request.path.startswith(JSON_PREFIX):
        code = title.lower().replace(" ", "_")
        return jsonify({"error": {"code": code, "message": message}}), status
    page = render_template("storefront/error.html", status=status, title=title, message=message)
    return page, status


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> tuple[Response | str, int]:
    return _error_page(exc.code or 500, exc.name or "Error", exc.description or "")


@bp.errorhandler(StreamrecError)
def _streamrec_error(exc: StreamrecError) -> tuple[Response | str, int]:
    if exc.http_status >= 500:
        log.error("%s: %s", exc.code, exc.message)
    return _error_page(exc.http_status, exc.code.replace("_", " ").capitalize(), exc.message)


# --- events ----------------------------------------------------------------------------------
def emit(events: Sequence[InteractionEvent], svc: ApiServices | None = None) -> bool:
    """Publish storefront events; a broker outage is logged, never shown as an error page."""
    try:
        (svc or services()).publisher.publish(written_before(events, svc))
        return True
    except TemporaryFailure as exc:
        log.warning("storefront events not published: %s", exc)
        return False


_REC_ID = re.compile(r"^[^\s]{1,128}$")


def clean_rec_id(raw: str | None) -> str | None:
    """A recommendation id from a link, or None when absent or malformed.

    >>> clean_rec_id("ab12"), clean_rec_id("a b"), clean_rec_id("")
    ('ab12', None, None)
    """
    return raw if raw and _REC_ID.match(raw) else None


def event_fields(rec_id: str | None = None) -> dict[str, Any]:
    """The fields every storefront event of this request shares."""
    fields: dict[str, Any] = {"user_id": shopper_id(), "session_id": session_id()}
    if rec_id:
        fields["rec_id"] = rec_id
    return fields


def build_event(cls: type[InteractionEvent], **fields: Any) -> InteractionEvent | None:
    """An event, or None (logged) when a field such as a rec id from a link is invalid."""
    try:
        return cls(**fields)
    except (InvalidEvent, ValueError) as exc:
        log.info("dropped an invalid %s event: %s", cls.__name__, exc)
        return None
