"""Storefront accounts (SQLAlchemy 2 Core): users, sessions, ratings, carts, orders.

Runs on SQLite (the embedded default) and PostgreSQL. Passwords are stored only
as ``werkzeug.security`` hashes (scrypt by default). Carts are keyed by a
*shopper* string (``u:<id>`` for a user, ``anon:<hex>`` for a visitor), so a
visitor can fill a cart before signing up and keep it at login.

One module per job: ``users`` (sign-up, passwords, categories, session
generations), ``ratings``, ``carts`` (carts and orders), ``co_purchases``
("customers also bought"), ``secret`` (the session secret); ``tables`` holds the
schema and ``records`` what the store returns.

>>> store = AccountStore("sqlite://")
>>> store.create_schema()
>>> alice = store.create_user("alice", "correct horse", categories=["Mugs"])
>>> store.authenticate("alice", "wrong password") is None
True
>>> store.authenticate("alice", "correct horse").categories
('Mugs',)
>>> store.rate(alice.id, "85123A", 4, "nice")
>>> store.rate(alice.id, "85123A", 5, "even better")  # one rating per user and item
>>> store.rating_summary("85123A")
RatingSummary(average=5.0, count=1)
>>> store.close()
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .carts import MAX_QUANTITY, CartAccounts
from .co_purchases import CoPurchases, load_co_purchases
from .ratings import RatingAccounts
from .records import Order, OrderLine, RatingSummary, Review, User
from .secret import load_or_create_secret
from .tables import metadata
from .users import UserAccounts, UsernameTaken, normalise_username

if TYPE_CHECKING:
    from core.settings import Settings

__all__ = [
    "MAX_QUANTITY",
    "AccountStore",
    "CoPurchases",
    "Order",
    "OrderLine",
    "RatingSummary",
    "Review",
    "User",
    "UsernameTaken",
    "load_co_purchases",
    "load_or_create_secret",
    "metadata",
    "normalise_username",
]


class AccountStore(UserAccounts, RatingAccounts, CartAccounts):
    """Users, preferred categories, sessions, ratings, carts and orders on one engine.

    Parameters are those of :class:`infra.accounts.base.SqlAccounts`.
    """

    @classmethod
    def from_settings(cls, settings: Settings) -> AccountStore:
        """The store at ``settings.database_url``, else the SQLite file in ``state_dir``."""
        if not settings.database_url:
            settings.state_dir.mkdir(parents=True, exist_ok=True)
        return cls(settings.database_url or settings.sqlite_url)
