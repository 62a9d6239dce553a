"""Users: sign-up, password check, preferred categories and session generations.

A user's *session generation* is a counter stored server side; a session cookie
records the generation it was issued under and stops being valid when the counter
moves (at log-out), although the cookie itself is still correctly signed.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterable
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from werkzeug.security import check_password_hash, generate_password_hash

from core.errors import InvalidRequest

from .base import SqlAccounts
from .records import User
from .tables import user_categories_table, user_sessions_table, users_table

__all__ = ["MAX_PASSWORD", "MIN_PASSWORD", "UserAccounts", "UsernameTaken",
           "normalise_username"]

USERNAME_RE = re.compile(r"^[a-z0-9_.-]{3,32}$")
MIN_PASSWORD = 8
MAX_PASSWORD = 256


class UsernameTaken(InvalidRequest):
    """Sign-up with a username that already exists."""

    code: ClassVar[str] = "username_taken"
    http_status: ClassVar[int] = 409


def normalise_username(username: str) -> str:
    return username.strip().lower()


def _check_signup(username: str, password: str) -> str:
    name = normalise_username(username)
    if not USERNAME_RE.match(name):
        raise InvalidRequest("a username has 3 to 32 characters: letters, digits, '_', '.', '-'")
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise InvalidRequest(f"a password has at least {MIN_PASSWORD} characters")
    return name


def clean_categories(categories: Iterable[str]) -> list[str]:
    return sorted({c.strip()[:200] for c in categories if c and c.strip()})


class _DummyHashes:
    """One throw-away hash per method, made on first use (for unknown usernames)."""

    def __init__(self) -> None:
        self._hashes: dict[str, str] = {}

    def get(self, method: str) -> str:
        if method not in self._hashes:
            self._hashes[method] = generate_password_hash(secrets.token_hex(8), method=method)
        return self._hashes[method]


_DUMMY_HASH = _DummyHashes()


class UserAccounts(SqlAccounts):
    """Users, their preferred categories and their session generations."""

    def create_user(self, username: str, password: str,
                    categories: Iterable[str] = ()) -> User:
        """A new user; raise UsernameTaken or InvalidRequest (bad name or password)."""
        name = _check_signup(username, password)
        password_hash = generate_password_hash(password, method=self.password_method)
        now = time.time()
        try:
            with self._begin("create_user") as conn:
                user_id: int = conn.execute(
                    users_table.insert()
                    .values(username=name, password_hash=password_hash, created_at=now)
                    .returning(users_table.c.id)
                ).scalar_one()
                cats = clean_categories(categories)
                if cats:
                    conn.execute(user_categories_table.insert(),
                                 [{"user_id": user_id, "category": c} for c in cats])
        except IntegrityError:
            raise UsernameTaken(f"the username '{name}' is taken") from None
        return User(int(user_id), name, now, tuple(cats))

    def _user(self, conn: Connection, row: Any) -> User:
        cats: list[str] = list(conn.execute(
            sa.select(user_categories_table.c.category)
            .where(user_categories_table.c.user_id == row.id)
            .order_by(user_categories_table.c.category)
        ).scalars())
        return User(int(row.id), row.username, float(row.created_at), tuple(cats))

    def get_user(self, user_id: int) -> User | None:
        with self._begin("get_user") as conn:
            row = conn.execute(sa.select(users_table).where(users_table.c.id == user_id)).first()
            return None if row is None else self._user(conn, row)

    def authenticate(self, username: str, password: str) -> User | None:
        """The user when the password matches, else None (same answer for unknown names)."""
        name = normalise_username(username)
        with self._begin("authenticate") as conn:
            row = conn.execute(
                sa.select(users_table).where(users_table.c.username == name)).first()
            user = None if row is None else self._user(conn, row)
        if row is None:
            # Hash anyway so that response time does not tell which usernames exist.
            check_password_hash(_DUMMY_HASH.get(self.password_method), password)
            return None
        return user if check_password_hash(row.password_hash, password) else None

    def set_categories(self, user_id: int, categories: Iterable[str]) -> tuple[str, ...]:
        """Replace the user's preferred categories; return them sorted."""
        cats = clean_categories(categories)
        with self._begin("set_categories") as conn:
            conn.execute(user_categories_table.delete()
                         .where(user_categories_table.c.user_id == user_id))
            if cats:
                conn.execute(user_categories_table.insert(),
                             [{"user_id": user_id, "category": c} for c in cats])
        return tuple(cats)

    # --- session generations ---------------------------------------------------------------
    def session_generation(self, user_id: int) -> int:
        """The generation a valid session of this user carries (0 until the first log-out)."""
        s = user_sessions_table
        with self._begin("session_generation") as conn:
            found = conn.execute(sa.select(s.c.generation)
                                 .where(s.c.user_id == user_id)).scalar_one_or_none()
        return 0 if found is None else int(found)

    def end_sessions(self, user_id: int) -> int:
        """Invalidate every session of the user issued so far; return the new generation."""
        s = user_sessions_table
        insert = self._insert(s).values(user_id=user_id, generation=1)
        with self._begin("end_sessions") as conn:
            conn.execute(insert.on_conflict_do_update(
                index_elements=["user_id"], set_={"generation": s.c.generation + 1}))
            return int(conn.execute(sa.select(s.c.generation)
                                    .where(s.c.user_id == user_id)).scalar_one())
