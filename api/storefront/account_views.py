"""Sign up, log in (rate limited), log out and the shopper's own profile."""

from __future__ import annotations

from flask import abort, flash, redirect, render_template, request
from werkzeug.wrappers import Response as WerkzeugResponse

from api.ratelimit import LoginLimiter, within_limit
from api.services import services
from core.errors import InvalidRequest
from infra.accounts import UsernameTaken

from .blueprint import (
    bp,
    current_user,
    login_user,
    logout_user,
    require_accounts,
    safe_next,
    storefront_state,
)

__all__ = ["LOGIN_MAX_FAILURES", "LOGIN_WINDOW_S", "SIGNUP_MAX_PER_ADDRESS", "SIGNUP_WINDOW_S"]

#: Log-in attempts allowed per username and client address within the window (a
#: success gives the pair a fresh start); see LoginLimiter for the wider limits.
LOGIN_MAX_FAILURES = 5
LOGIN_WINDOW_S = 300.0
#: Sign-up attempts per client address and hour. Sign-up tells whether a username
#: is taken (a shopper must be able to pick another one); this bounds how fast one
#: address can list usernames that way (docs/reliability.md).
SIGNUP_MAX_PER_ADDRESS = 20
SIGNUP_WINDOW_S = 3600.0

Page = str | tuple[str, int] | WerkzeugResponse


def _categories() -> list[str]:
    return [name for name, _ in storefront_state().categories(services().catalog)]


def _login_limiter() -> LoginLimiter:
    return LoginLimiter(services().attempts, per_account_and_address=LOGIN_MAX_FAILURES,
                        window_s=LOGIN_WINDOW_S)


@bp.route("/signup", methods=["GET", "POST"])
def signup() -> Page:
    if request.method == "GET":
        return render_template("storefront/signup.html", categories=_categories(), chosen=[],
                               username="", next=request.args.get("next", ""))
    address = request.remote_addr or "-"
    if not within_limit(services().attempts, f"signup-addr:{address}", SIGNUP_MAX_PER_ADDRESS,
                        SIGNUP_WINDOW_S):
        abort(429, description="Too many sign-up attempts from your address. Try again "
                               "later.")
    username = request.form.get("username", "")
    password = request.form.get("password", "")
    known = set(_categories())
    chosen = [c for c in request.form.getlist("categories") if c in known]
    error = None
    if password != request.form.get("password2", password):
        error = "The two passwords differ."
    else:
        try:
            user = require_accounts().create_user(username, password, chosen)
        except UsernameTaken:
            error = "That username is taken: choose another one."
        except InvalidRequest as exc:
            error = exc.message
    if error:
        status = 409 if "taken" in error else 400
        return render_template("storefront/signup.html", categories=_categories(), chosen=chosen,
                               username=username, error=error,
                               next=request.form.get("next", "")), status
    login_user(user)
    flash(f"Welcome, {user.username}!")
    return redirect(safe_next(request.form.get("next")))


@bp.route("/login", methods=["GET", "POST"])
def login() -> Page:
    if request.method == "GET":
        return render_template("storefront/login.html", username="",
                               next=request.args.get("next", ""))
    accounts = require_accounts()
    username = request.form.get("username", "")
    password = request.form.get("password", "")
    address = request.remote_addr or "-"
    limiter = _login_limiter()
    if not limiter.allow(username, address):
        abort(429, description="Too many failed log-in attempts. Wait a few minutes and "
                               "try again.")
    user = accounts.authenticate(username, password)
    if user is None:
        return render_template("storefront/login.html", username=username,
                               error="Wrong username or password.",
                               next=request.form.get("next", "")), 401
    limiter.succeeded(username, address)
    login_user(user)
    flash(f"Welcome back, {user.username}!")
    return redirect(safe_next(request.form.get("next")))


@bp.post("/logout")
def logout() -> WerkzeugResponse:
    logout_user()
    flash("You are logged out.")
    return redirect("/")


@bp.route("/profile", methods=["GET", "POST"])
def profile() -> Page:
    user = current_user()
    if user is None:
        return redirect(f"/login?next={request.path}")
    accounts = require_accounts()
    if request.method == "POST":
        known = set(_categories())
        accounts.set_categories(user.id, [c for c in request.form.getlist("categories")
                                          if c in known])
        flash("Your preferred categories are saved.")
        return redirect("/profile")
    catalog = services().catalog
    return render_template(
        "storefront/profile.html", user=user, categories=_categories(),
        chosen=list(user.categories),
        orders=accounts.orders(user.id), ratings=accounts.user_ratings(user.id),
        catalog=catalog,
    )
