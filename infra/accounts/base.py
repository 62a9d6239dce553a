"""The engine, transactions and schema shared by every part of the account store."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, OperationalError

from core.errors import TemporaryFailure
from infra.sql import create_tables, dialect_insert, drop_tables, open_engine

from .tables import metadata

__all__ = ["SqlAccounts"]


class SqlAccounts:
    """An engine on the accounts database; the store's parts share it through ``_begin``.

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
