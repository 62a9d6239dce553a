"""SQL store (SQLAlchemy 2 Core): the events archive and the product catalog.

Runs on SQLite (the embedded default: a file under ``state_dir``) and on
PostgreSQL. Archiving is idempotent by ``event_id`` (INSERT ... ON CONFLICT DO
NOTHING), so a consumer that replays a batch after a crash archives nothing twice.

>>> store = SqlStore("sqlite://")
>>> store.create_schema()
>>> from core.events import ItemViewed
>>> e = ItemViewed(user_id="u1", item_id="85123A", timestamp=1_300_000_000)
>>> store.archive_events([e, e]), store.count_events()
(1, 1)
>>> store.close()
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import (
    DataError,
    DBAPIError,
    IntegrityError,
    OperationalError,
    ProgrammingError,
)
from sqlalchemy.pool import StaticPool

from core.errors import ConfigurationError, TemporaryFailure
from core.events import InteractionEvent, ItemUpserted
from core.types import Item

if TYPE_CHECKING:
    from core.settings import Settings

__all__ = ["SqlStore", "events_table", "metadata", "products_table"]

metadata = sa.MetaData()

events_table = sa.Table(
    "events",
    metadata,
    sa.Column("event_id", sa.String(128), primary_key=True),
    sa.Column("event_type", sa.String(32), nullable=False),
    sa.Column("user_id", sa.String(128), nullable=True),  # None for catalog events
    sa.Column("item_id", sa.String(128), nullable=False),
    sa.Column("ts", sa.Double, nullable=False),  # event time, Unix seconds
    sa.Column("payload", sa.JSON, nullable=False),  # the whole event, as on the wire
    sa.Index("ix_events_ts", "ts"),
    sa.Index("ix_events_user_ts", "user_id", "ts"),
)

products_table = sa.Table(
    "products",
    metadata,
    sa.Column("item_id", sa.String(128), primary_key=True),
    sa.Column("name", sa.String(500), nullable=False),
    sa.Column("category", sa.String(200), nullable=False, default=""),
    sa.Column("price", sa.Double, nullable=False, default=0.0),
    sa.Column("description", sa.Text, nullable=False, default=""),
    sa.Column("in_stock", sa.Boolean, nullable=False, default=True),
)

_CHUNK = 5_000

log = logging.getLogger(__name__)


def _chunks(rows: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(rows), _CHUNK):
        yield rows[start:start + _CHUNK]


@dataclass(frozen=True)
class OpenedEngine:
    engine: Engine
    dialect: str
    url: sa.engine.URL
    #: Serialises use of a shared in-memory SQLite connection (a no-op otherwise).
    lock: contextlib.AbstractContextManager[Any]


def open_engine(
    url: str, schema: str | None = None, *, pragmas: Sequence[str] = (), echo: bool = False
) -> OpenedEngine:
    """An engine for SQLite or PostgreSQL, the one way every SQL store opens its database.

    SQLite: the file's folder is created, ``pragmas`` run on every connection, and an
    in-memory database is one connection shared by all threads (used under ``lock``).
    PostgreSQL: a pre-pinged pool; ``schema`` maps the tables into that schema.
    """
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise ConfigurationError(f"invalid database URL {url!r}: {exc}") from exc
    dialect = parsed.get_backend_name()
    if dialect not in ("sqlite", "postgresql"):
        raise ConfigurationError(f"unsupported database {dialect!r}: use SQLite or PostgreSQL")
    if schema is not None and dialect != "postgresql":
        raise ConfigurationError("a schema is only supported on PostgreSQL")
    kwargs: dict[str, Any] = {"echo": echo}
    lock: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
    if dialect == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": 30}
        else:
            kwargs.update(poolclass=StaticPool, connect_args={"check_same_thread": False})
            lock = threading.RLock()
    else:
        kwargs.update(pool_pre_ping=True, pool_size=5, max_overflow=5)
    engine = sa.create_engine(parsed, **kwargs)
    if dialect == "sqlite" and pragmas:

        def run_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            for pragma in pragmas:
                cursor.execute(f"PRAGMA {pragma}")
            cursor.close()

        sa.event.listen(engine, "connect", run_pragmas)
    if schema:
        engine = engine.execution_options(schema_translate_map={None: schema})
    return OpenedEngine(engine, dialect, parsed, lock)


def drop_tables(engine: Engine, tables: sa.MetaData, schema: str | None = None) -> None:
    """Drop the tables (and ``schema``, when given): tests and resets."""
    with engine.begin() as conn:
        tables.drop_all(conn)
        if schema:
            conn.execute(sa.schema.DropSchema(schema, cascade=True, if_exists=True))


def dialect_insert(dialect: str, table: sa.Table) -> Any:
    """An INSERT that knows ON CONFLICT, for the store's dialect."""
    return (postgresql if dialect == "postgresql" else sqlite).insert(table)


def create_tables(engine: Engine, tables: sa.MetaData, schema: str | None = None) -> None:
    """Create ``schema`` (PostgreSQL) and the tables that are missing.

    Safe when several processes start at once (gunicorn workers, consumer processes):
    the loser of a CREATE race sees "already exists" (or, on SQLite, "database is
    locked" while the winner holds the file), and a later attempt finds the tables there.
    """
    attempts = 6
    for attempt in range(attempts):
        try:
            with engine.begin() as conn:
                if schema:
                    conn.execute(sa.schema.CreateSchema(schema, if_not_exists=True))
                tables.create_all(conn)
            return
        except (OperationalError, ProgrammingError, IntegrityError) as exc:
            lost_race = any(sign in str(exc) for sign in (
                "already exists", "duplicate key", "database is locked"))
            if not lost_race or attempt == attempts - 1:
                raise TemporaryFailure(f"creating tables failed: {exc.orig!r}") from exc
            time.sleep(0.05 * (attempt + 1))


class SqlStore:
    """Events archive and products on one SQLAlchemy engine.

    Parameters
    ----------
    url
        SQLAlchemy URL: ``sqlite:///path.db`` or ``postgresql+psycopg://...``.
    schema
        PostgreSQL schema for the tables (created by :meth:`create_schema`); None:
        the default search path. Tests use one schema each.
    """

    def __init__(self, url: str, *, schema: str | None = None, echo: bool = False) -> None:
        # WAL: the API reads while a consumer archives. A large archive inserts at random
        # places of its event-id and user indexes: a 64 MiB page cache (a ceiling, filled
        # as pages are read) and a 64 MiB WAL between checkpoints (a hot page is copied
        # back once per checkpoint, not once per batch) keep that from slowing down as it
        # grows (400k events: 37 -> 26 us of CPU per event).
        opened = open_engine(url, schema, echo=echo, pragmas=(
            "journal_mode=WAL", "synchronous=NORMAL", "cache_size=-65536",
            "wal_autocheckpoint=16384"))
        self.dialect, self.url, self.engine = opened.dialect, opened.url, opened.engine
        self.schema = schema
        # The payload arrives as JSON text (see _payload): bound as text, so the JSON
        # type does not encode it again; PostgreSQL parses it into its json column.
        payload: Any = sa.bindparam("payload_json", type_=sa.Text)
        if self.dialect == "postgresql":
            payload = sa.cast(payload, postgresql.JSON)
        insert = (self._insert(events_table).values(payload=payload)
                  .on_conflict_do_nothing(index_elements=["event_id"]))
        # SQLite's driver counts the rows an executemany inserted; SQLAlchemy's psycopg
        # executemany reports -1, so there the new rows' ids come back instead (one
        # multi-row INSERT per 1,000 rows either way).
        self._count_returned = self.dialect == "postgresql"
        self._archive_insert = (insert.returning(events_table.c.event_id)
                                if self._count_returned else insert)
        #: Called with (event id, reason) for each event the database refuses as data
        #: (see :meth:`archive_events`); the consumers count them in a metric.
        self.on_rejected: Callable[[str, str], None] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> SqlStore:
        """The store at ``settings.database_url``, else the SQLite file in ``state_dir``."""
        return cls(settings.database_url or settings.sqlite_url)

    def __repr__(self) -> str:
        return f"SqlStore({self.url.render_as_string(hide_password=True)!r})"

    @contextmanager
    def _begin(self, what: str) -> Iterator[Connection]:
        try:
            with self.engine.begin() as conn:
                yield conn
        except OperationalError as exc:
            raise TemporaryFailure(f"database {what} failed: {exc.orig!r}") from exc
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise TemporaryFailure(f"database {what} failed: {exc.orig!r}") from exc
            raise

    def create_schema(self) -> None:
        """Create the schema (PostgreSQL) and the tables when missing."""
        create_tables(self.engine, metadata, self.schema)

    def drop_schema(self) -> None:
        """Drop the tables (and the schema, when one was given): tests and resets."""
        with self._begin("drop_schema") as conn:
            metadata.drop_all(conn)
            if self.schema:
                conn.execute(sa.schema.DropSchema(self.schema, cascade=True, if_exists=True))

    def _insert(self, table: sa.Table) -> Any:
        dialect = postgresql if self.dialect == "postgresql" else sqlite
        return dialect.insert(table)

    # --- events archive ------------------------------------------------------------------------
    def archive_events(
        self, events: Iterable[InteractionEvent | ItemUpserted],
        wire: Iterable[bytes | None] | None = None,
    ) -> int:
        """Archive events, ignoring ids already there; return how many were new.

        ``wire``: each event's bytes as received (the Kafka value), in the same order.
        They are stored as the payload as they are where they say all the event says
        (see :func:`_payload`), which spares serialising the event again; otherwise the
        event is serialised. On SQLite the count is the driver's row count (no
        RETURNING: rows would come back only to be counted).
        """
        pairs = zip(events, wire, strict=True) if wire is not None else (
            (event, None) for event in events)
        rows = list({row["event_id"]: row for row in
                     (_event_row(event, raw) for event, raw in pairs)}.values())
        if not rows:
            return 0
        try:
            return self._insert_events(rows)
        except DataError:
            # A value this database cannot hold (PostgreSQL: a NUL character). Retrying
            # the batch would fail forever and stall the archive's group: insert row by
            # row and skip, logged and counted, only the rows the database refuses.
            inserted = 0
            for row in rows:
                try:
                    inserted += self._insert_events([row])
                except DataError as exc:
                    reason = str(exc.orig).strip()
                    log.error("archive: event %r refused by the database, skipped: %s",
                              row["event_id"], reason)
                    if self.on_rejected is not None:
                        self.on_rejected(str(row["event_id"]), reason)
            return inserted

    def _insert_events(self, rows: list[dict[str, Any]]) -> int:
        inserted = 0
        with self._begin("archive_events") as conn:
            for chunk in _chunks(rows):
                result = conn.execute(self._archive_insert, chunk)
                inserted += len(result.all()) if self._count_returned else result.rowcount
        return inserted

    def count_events(self) -> int:
        with self._begin("count_events") as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(events_table))
                       .scalar_one())

    def events(
        self, *, since_ts: float | None = None, limit: int | None = None
    ) -> list[dict[str, Any]]:
        """Archived events as their wire dicts, oldest first (for retraining)."""
        query = sa.select(events_table.c.payload).order_by(events_table.c.ts,
                                                           events_table.c.event_id)
        if since_ts is not None:
            query = query.where(events_table.c.ts >= since_ts)
        if limit is not None:
            query = query.limit(limit)
        with self._begin("events") as conn:
            payloads: list[dict[str, Any]] = list(conn.execute(query).scalars())
            return payloads

    # --- products ------------------------------------------------------------------------------
    def upsert_products(self, items: Iterable[Item | ItemUpserted]) -> int:
        """Insert or replace products by ``item_id``; return how many rows were written."""
        rows = list({row["item_id"]: row for row in map(_product_row, items)}.values())
        if not rows:
            return 0
        insert = self._insert(products_table)
        stmt = insert.on_conflict_do_update(
            index_elements=["item_id"],
            set_={c: insert.excluded[c] for c in
                  ("name", "category", "price", "description", "in_stock")},
        )
        with self._begin("upsert_products") as conn:
            for chunk in _chunks(rows):
                conn.execute(stmt, chunk)
        return len(rows)

    def products(self) -> list[Item]:
        """Every product, by item id."""
        with self._begin("products") as conn:
            rows = conn.execute(sa.select(products_table).order_by(products_table.c.item_id))
            return [_item(row) for row in rows.mappings()]

    def get_product(self, item_id: str) -> Item | None:
        with self._begin("get_product") as conn:
            row = conn.execute(
                sa.select(products_table).where(products_table.c.item_id == item_id)
            ).mappings().first()
        return None if row is None else _item(row)

    def ping(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
            return True
        except DBAPIError:
            return False

    def close(self) -> None:
        """Release pooled connections (the store can be used again afterwards)."""
        self.engine.dispose()


#: Fields an event gets by default when the wire leaves them out (a fresh id, the time
#: of parsing): wire bytes without them would not parse back to the archived event.
_DEFAULTED_FIELDS = frozenset({"event_id", "timestamp"})


def _payload(event: InteractionEvent | ItemUpserted, wire: bytes | None) -> str:
    """The archived JSON text of ``event``: its wire bytes when they parse back to it.

    The bytes were validated into ``event``, so they are one JSON object of known
    fields; they are kept as received unless the event got a defaulted id or time,
    or they hold a non-standard number, or they are not UTF-8 (then: serialised).
    """
    # NaN and Infinity: pydantic's JSON parser accepts them, PostgreSQL's json refuses.
    if (wire is not None and b"NaN" not in wire and b"Infinity" not in wire
            and event.model_fields_set >= _DEFAULTED_FIELDS):
        with contextlib.suppress(UnicodeDecodeError):
            return wire.decode()
    return event.model_dump_json()


def _event_row(event: InteractionEvent | ItemUpserted, wire: bytes | None) -> dict[str, Any]:
    return {
        "event_id": event.event_id,
        "event_type": event.event_type,
        "user_id": getattr(event, "user_id", None),
        "item_id": event.item_id,
        "ts": event.ts,
        "payload_json": _payload(event, wire),
    }


def _product_row(item: Item | ItemUpserted) -> dict[str, Any]:
    return {
        "item_id": item.item_id,
        "name": item.name,
        "category": item.category,
        "price": float(item.price),
        "description": item.description,
        "in_stock": bool(item.in_stock),
    }


def _item(row: Any) -> Item:
    return Item(
        item_id=row["item_id"], name=row["name"], category=row["category"],
        price=float(row["price"]), description=row["description"],
        in_stock=bool(row["in_stock"]),
    )
