"""Storefront accounts (SQLAlchemy 2 Core): users, ratings, carts, orders, login attempts.

Runs on SQLite (the embedded default) and PostgreSQL. Passwords are stored only
as ``werkzeug.security`` hashes (scrypt by default). Carts are keyed by a
*shopper* string (``u:<id>`` for a user, ``anon:<hex>`` for a visitor), so a
visitor can fill a cart before signing up and keep it at login.

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

import contextlib
import os
import re
import secrets
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import sqlalchemy as sa
from scipy import sparse
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from werkzeug.security import check_password_hash, generate_password_hash

from core.errors import ConfigurationError, DataNotFound, InvalidRequest, TemporaryFailure
from infra.sql import create_tables, dialect_insert, drop_tables, open_engine

if TYPE_CHECKING:
    import pandas as pd

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
]

metadata = sa.MetaData()

users_table = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("username", sa.String(64), nullable=False, unique=True),  # stored lower-case
    sa.Column("password_hash", sa.String(512), nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
)

user_categories_table = sa.Table(
    "user_categories",
    metadata,
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("category", sa.String(200), primary_key=True),
)

ratings_table = sa.Table(
    "ratings",
    metadata,
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("item_id", sa.String(128), primary_key=True),
    sa.Column("rating", sa.SmallInteger, nullable=False),
    sa.Column("review", sa.Text, nullable=False, default=""),
    sa.Column("updated_at", sa.Double, nullable=False),
    sa.Index("ix_ratings_item", "item_id"),
)

cart_table = sa.Table(
    "cart_lines",
    metadata,
    sa.Column("shopper", sa.String(128), primary_key=True),
    sa.Column("item_id", sa.String(128), primary_key=True),
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.Column("added_at", sa.Double, nullable=False),
)

orders_table = sa.Table(
    "orders",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"),
              nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Index("ix_orders_user", "user_id"),
)

order_lines_table = sa.Table(
    "order_lines",
    metadata,
    sa.Column("order_id", sa.Integer, sa.ForeignKey("orders.id", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("item_id", sa.String(128), primary_key=True),
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.Column("price", sa.Double, nullable=False),
)

login_attempts_table = sa.Table(
    "login_failures",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("key", sa.String(300), nullable=False),  # "<username>|<client ip>"
    sa.Column("ts", sa.Double, nullable=False),
    sa.Index("ix_login_failures_key_ts", "key", "ts"),
)

USERNAME_RE = re.compile(r"^[a-z0-9_.-]{3,32}$")
MIN_PASSWORD = 8
MAX_PASSWORD = 256
MAX_QUANTITY = 99


class UsernameTaken(InvalidRequest):
    """Sign-up with a username that already exists."""

    code: ClassVar[str] = "username_taken"
    http_status: ClassVar[int] = 409


@dataclass(frozen=True, slots=True)
class User:
    id: int
    username: str
    created_at: float
    categories: tuple[str, ...] = ()

    @property
    def shopper_id(self) -> str:
        """The stable id of this user in events and carts."""
        return f"u:{self.id}"


@dataclass(frozen=True, slots=True)
class Review:
    username: str
    item_id: str
    rating: int
    review: str
    updated_at: float


@dataclass(frozen=True, slots=True)
class RatingSummary:
    average: float | None
    count: int


@dataclass(frozen=True, slots=True)
class OrderLine:
    item_id: str
    quantity: int
    price: float


@dataclass(frozen=True)
class Order:
    id: int
    created_at: float
    lines: list[OrderLine]

    @property
    def total(self) -> float:
        return round(sum(line.quantity * line.price for line in self.lines), 2)


def normalise_username(username: str) -> str:
    return username.strip().lower()


def _check_signup(username: str, password: str) -> str:
    name = normalise_username(username)
    if not USERNAME_RE.match(name):
        raise InvalidRequest("a username has 3 to 32 characters: letters, digits, '_', '.', '-'")
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise InvalidRequest(f"a password has at least {MIN_PASSWORD} characters")
    return name


class AccountStore:
    """Users, preferred categories, ratings, carts, orders and login failures.

    Parameters
    ----------
    url
        SQLAlchemy URL (``sqlite:///file.db``, ``sqlite://`` in memory, or
        ``postgresql+psycopg://...``).
    schema
        PostgreSQL schema of the tables (tests use one each); None: the search path.
    password_method
        ``werkzeug.security.generate_password_hash`` method (scrypt by default).
    """

    def __init__(self, url: str, *, schema: str | None = None,
                 password_method: str = "scrypt") -> None:
        opened = open_engine(url, schema, pragmas=("foreign_keys=ON",))
        self.dialect, self.engine, self._lock = opened.dialect, opened.engine, opened.lock
        self.schema = schema
        self.password_method = password_method

    @classmethod
    def from_settings(cls, settings: Settings) -> AccountStore:
        """The store at ``settings.database_url``, else the SQLite file in ``state_dir``."""
        if not settings.database_url:
            settings.state_dir.mkdir(parents=True, exist_ok=True)
        return cls(settings.database_url or settings.sqlite_url)

    @contextlib.contextmanager
    def _begin(self, what: str) -> Iterator[Connection]:
        with self._lock:
            try:
                with self.engine.begin() as conn:
                    yield conn
            except OperationalError as exc:
                raise TemporaryFailure(f"accounts {what} failed: {exc.orig!r}") from exc

    def _insert(self, table: sa.Table) -> Any:
        return dialect_insert(self.dialect, table)

    def create_schema(self) -> None:
        """Create the schema (PostgreSQL) and the tables when missing."""
        create_tables(self.engine, metadata, self.schema)

    def drop_schema(self) -> None:
        with self._lock:
            drop_tables(self.engine, metadata, self.schema)

    def ping(self) -> bool:
        try:
            with self._lock, self.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            return True
        except DBAPIError:
            return False

    def close(self) -> None:
        self.engine.dispose()

    # --- users -----------------------------------------------------------------------------
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
                cats = _clean_categories(categories)
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
        cats = _clean_categories(categories)
        with self._begin("set_categories") as conn:
            conn.execute(user_categories_table.delete()
                         .where(user_categories_table.c.user_id == user_id))
            if cats:
                conn.execute(user_categories_table.insert(),
                             [{"user_id": user_id, "category": c} for c in cats])
        return tuple(cats)

    # --- login rate limit ------------------------------------------------------------------
    def record_login_failure(self, key: str, now: float | None = None) -> None:
        with self._begin("record_login_failure") as conn:
            conn.execute(login_attempts_table.insert().values(
                key=key[:300], ts=time.time() if now is None else now))

    def recent_login_failures(self, key: str, window_s: float,
                              now: float | None = None) -> int:
        """Failures for ``key`` in the last ``window_s`` seconds (older ones are purged)."""
        now = time.time() if now is None else now
        t = login_attempts_table
        with self._begin("recent_login_failures") as conn:
            conn.execute(t.delete().where(t.c.ts < now - window_s))
            return int(conn.execute(
                sa.select(sa.func.count()).select_from(t)
                .where(t.c.key == key[:300], t.c.ts >= now - window_s)
            ).scalar_one())

    def clear_login_failures(self, key: str) -> None:
        with self._begin("clear_login_failures") as conn:
            conn.execute(login_attempts_table.delete()
                         .where(login_attempts_table.c.key == key[:300]))

    # --- ratings ---------------------------------------------------------------------------
    def rate(self, user_id: int, item_id: str, rating: int, review: str = "") -> None:
        """Rate an item 1-5 (a second rating of the same item replaces the first)."""
        if not 1 <= int(rating) <= 5:
            raise InvalidRequest("a rating is an integer from 1 to 5")
        values = {"user_id": user_id, "item_id": item_id, "rating": int(rating),
                  "review": review.strip()[:5000], "updated_at": time.time()}
        insert = self._insert(ratings_table).values(**values)
        stmt = insert.on_conflict_do_update(
            index_elements=["user_id", "item_id"],
            set_={c: insert.excluded[c] for c in ("rating", "review", "updated_at")})
        with self._begin("rate") as conn:
            conn.execute(stmt)

    def _reviews(self, where: Any, limit: int) -> list[Review]:
        r, u = ratings_table, users_table
        with self._begin("reviews") as conn:
            rows = conn.execute(
                sa.select(u.c.username, r.c.item_id, r.c.rating, r.c.review, r.c.updated_at)
                .join(u, u.c.id == r.c.user_id).where(where)
                .order_by(r.c.updated_at.desc()).limit(limit))
            return [Review(row.username, row.item_id, int(row.rating), row.review,
                           float(row.updated_at)) for row in rows]

    def reviews(self, item_id: str, limit: int = 50) -> list[Review]:
        """Ratings and reviews of an item, newest first."""
        return self._reviews(ratings_table.c.item_id == item_id, limit)

    def user_ratings(self, user_id: int, limit: int = 200) -> list[Review]:
        """The ratings a user gave, newest first."""
        return self._reviews(ratings_table.c.user_id == user_id, limit)

    def user_rating(self, user_id: int, item_id: str) -> Review | None:
        found = self._reviews(sa.and_(ratings_table.c.user_id == user_id,
                                      ratings_table.c.item_id == item_id), 1)
        return found[0] if found else None

    def rating_summary(self, item_id: str) -> RatingSummary:
        r = ratings_table
        with self._begin("rating_summary") as conn:
            avg, count = conn.execute(
                sa.select(sa.func.avg(r.c.rating), sa.func.count()).where(r.c.item_id == item_id)
            ).tuples().one()
        return RatingSummary(None if avg is None else round(float(avg), 2), int(count))

    # --- carts -----------------------------------------------------------------------------
    def cart(self, shopper: str) -> dict[str, int]:
        """item id -> quantity, in the order items were added."""
        c = cart_table
        with self._begin("cart") as conn:
            rows = conn.execute(sa.select(c.c.item_id, c.c.quantity)
                                .where(c.c.shopper == shopper)
                                .order_by(c.c.added_at, c.c.item_id))
            return {row.item_id: int(row.quantity) for row in rows}

    def add_to_cart(self, shopper: str, item_id: str, quantity: int = 1) -> int:
        """Add ``quantity`` of an item; return the new quantity (capped at MAX_QUANTITY)."""
        if quantity < 1:
            raise InvalidRequest("the quantity must be at least 1")
        with self._begin("add_to_cart") as conn:
            return self._add(conn, shopper, item_id, quantity)

    def _add(self, conn: Connection, shopper: str, item_id: str, quantity: int) -> int:
        c = cart_table
        insert = self._insert(c).values(shopper=shopper, item_id=item_id,
                                        quantity=min(quantity, MAX_QUANTITY),
                                        added_at=time.time())
        capped = sa.case((c.c.quantity + insert.excluded.quantity > MAX_QUANTITY, MAX_QUANTITY),
                         else_=c.c.quantity + insert.excluded.quantity)
        conn.execute(insert.on_conflict_do_update(index_elements=["shopper", "item_id"],
                                                  set_={"quantity": capped}))
        return int(conn.execute(sa.select(c.c.quantity).where(
            c.c.shopper == shopper, c.c.item_id == item_id)).scalar_one())

    def set_cart_quantity(self, shopper: str, item_id: str, quantity: int) -> None:
        """Set an item's quantity; 0 removes it."""
        c = cart_table
        with self._begin("set_cart_quantity") as conn:
            where = sa.and_(c.c.shopper == shopper, c.c.item_id == item_id)
            if quantity <= 0:
                conn.execute(c.delete().where(where))
            else:
                conn.execute(c.update().where(where)
                             .values(quantity=min(quantity, MAX_QUANTITY)))

    def merge_cart(self, from_shopper: str, to_shopper: str) -> None:
        """Move a visitor's cart into a user's cart (at login)."""
        if from_shopper == to_shopper:
            return
        c = cart_table
        with self._begin("merge_cart") as conn:
            rows = conn.execute(sa.select(c.c.item_id, c.c.quantity)
                                .where(c.c.shopper == from_shopper)).all()
            for row in rows:
                self._add(conn, to_shopper, row.item_id, int(row.quantity))
            conn.execute(c.delete().where(c.c.shopper == from_shopper))

    # --- orders ----------------------------------------------------------------------------
    def checkout(self, user_id: int, shopper: str, prices: Mapping[str, float]) -> Order | None:
        """Turn the cart into an order at ``prices`` and empty it; None for an empty cart.

        Items without a price (no longer in the catalog) stay out of the order.
        """
        c = cart_table
        now = time.time()
        with self._begin("checkout") as conn:
            rows = conn.execute(sa.select(c.c.item_id, c.c.quantity)
                                .where(c.c.shopper == shopper)
                                .order_by(c.c.added_at, c.c.item_id)).all()
            lines = [OrderLine(r.item_id, int(r.quantity), float(prices[r.item_id]))
                     for r in rows if r.item_id in prices]
            conn.execute(c.delete().where(c.c.shopper == shopper))
            if not lines:
                return None
            order_id: int = conn.execute(orders_table.insert()
                                    .values(user_id=user_id, created_at=now)
                                    .returning(orders_table.c.id)).scalar_one()
            conn.execute(order_lines_table.insert(), [
                {"order_id": order_id, "item_id": ln.item_id, "quantity": ln.quantity,
                 "price": ln.price} for ln in lines])
        return Order(int(order_id), now, lines)

    def orders(self, user_id: int, limit: int = 50) -> list[Order]:
        """A user's orders, newest first."""
        o, ln = orders_table, order_lines_table
        with self._begin("orders") as conn:
            heads = conn.execute(sa.select(o.c.id, o.c.created_at).where(o.c.user_id == user_id)
                                 .order_by(o.c.id.desc()).limit(limit)).all()
            lines: dict[int, list[OrderLine]] = defaultdict(list)
            if heads:
                for row in conn.execute(sa.select(ln).where(
                        ln.c.order_id.in_([h.id for h in heads])).order_by(ln.c.item_id)):
                    lines[int(row.order_id)].append(
                        OrderLine(row.item_id, int(row.quantity), float(row.price)))
        return [Order(int(h.id), float(h.created_at), lines[int(h.id)]) for h in heads]

    def baskets(self) -> list[list[str]]:
        """The item ids of every order (for "customers also bought")."""
        ln = order_lines_table
        found: dict[int, list[str]] = defaultdict(list)
        with self._begin("baskets") as conn:
            for row in conn.execute(sa.select(ln.c.order_id, ln.c.item_id)):
                found[int(row.order_id)].append(row.item_id)
        return list(found.values())


def _clean_categories(categories: Iterable[str]) -> list[str]:
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


# --- "customers also bought" ---------------------------------------------------------------
class CoPurchases:
    """Item -> items bought in the same basket, counted over baskets.

    Built once from the shipped purchase history (sparse basket x item product),
    then extended with every new order of the storefront.

    Parameters
    ----------
    top_n
        How many partners each item keeps from the history.

    Examples
    --------
    >>> co = CoPurchases()
    >>> co.add_basket(["a", "b", "c"])
    >>> co.add_basket(["a", "b"])
    >>> co.also_bought("a", 5)
    [('b', 2), ('c', 1)]
    """

    def __init__(self, top_n: int = 20) -> None:
        self.top_n = top_n
        self._base: dict[str, dict[str, int]] = {}
        self._live: dict[str, Counter[str]] = defaultdict(Counter)
        self._lock = threading.Lock()

    def fit_baskets(self, basket_ids: Sequence[str], item_ids: Sequence[str],
                    keep: Iterable[str] | None = None) -> None:
        """Count co-purchases over parallel arrays (basket of each line, item of each line)."""
        import pandas as pd

        lines = pd.DataFrame({"b": basket_ids, "i": item_ids})
        if keep is not None:
            lines = lines[lines["i"].isin(set(keep))]
        lines = lines.drop_duplicates()
        if lines.empty:
            self._base = {}
            return
        b_codes, _ = pd.factorize(lines["b"])
        i_codes, items = pd.factorize(lines["i"])
        ones = np.ones(len(lines), dtype=np.float32)
        matrix = sparse.csr_matrix((ones, (b_codes, i_codes)),
                                   shape=(int(b_codes.max()) + 1, len(items)))
        co = (matrix.T @ matrix).tocsr()
        co.setdiag(0)
        co.eliminate_zeros()
        base: dict[str, dict[str, int]] = {}
        for row in range(co.shape[0]):
            start, end = co.indptr[row], co.indptr[row + 1]
            if start == end:
                continue
            counts, cols = co.data[start:end], co.indices[start:end]
            best = np.argsort(-counts, kind="stable")[: self.top_n]
            base[str(items[row])] = {str(items[cols[j]]): int(counts[j]) for j in best}
        self._base = base

    def add_basket(self, item_ids: Iterable[str]) -> None:
        """Count one new basket."""
        unique = list(dict.fromkeys(item_ids))
        with self._lock:
            for a in unique:
                for b in unique:
                    if a != b:
                        self._live[a][b] += 1

    def also_bought(self, item_id: str, n: int) -> list[tuple[str, int]]:
        """Up to ``n`` partners of ``item_id`` with their counts, most frequent first."""
        with self._lock:
            merged = Counter(self._base.get(item_id, {}))
            merged.update(self._live.get(item_id, {}))
        return sorted(merged.items(), key=lambda kv: (-kv[1], kv[0]))[:n]

    def __len__(self) -> int:
        return len(self._base.keys() | self._live.keys())


def load_co_purchases(data_dir: Path, keep: Iterable[str] | None = None,
                      top_n: int = 20) -> CoPurchases:
    """Co-purchases of the shipped purchase history (baskets = invoices).

    Returns an empty table when the data set is not there.
    """
    from offline.catalog import load_purchases

    table = CoPurchases(top_n)
    try:
        frame: pd.DataFrame = load_purchases(data_dir)
    except DataNotFound:
        return table
    table.fit_baskets(frame["invoice"].to_numpy(), frame["item_id"].to_numpy(), keep)
    return table


# --- the session secret --------------------------------------------------------------------
def load_or_create_secret(state_dir: Path, name: str = "secret_key") -> str:
    """The secret in ``state_dir/name``, made once (mode 0600): the Flask secret key,
    or the demo's API token (``name="api_token"``).

    Several gunicorn workers starting together all end up with the same key: the
    file is published with an atomic hard link, and the losers read the winner's.
    """
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / name
    if not path.exists():
        tmp = state_dir / f".{name}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(32))
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
    secret = path.read_text().strip()
    if len(secret) < 32:
        raise ConfigurationError(f"{path} holds no usable secret; delete it to make a new one")
    return secret
