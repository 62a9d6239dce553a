"""SqlStore on SQLite (a temporary file) and on the session database (PostgreSQL here)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.errors import ConfigurationError, TemporaryFailure
from core.events import ItemUpserted, ItemViewed, Purchased, dump_event, parse_interaction
from core.settings import Settings
from core.types import Item
from infra.embedded import free_port
from infra.sql import SqlStore


@pytest.fixture(params=["sqlite-file", "session-database"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlStore]:
    if request.param == "sqlite-file":
        sql = SqlStore(f"sqlite:///{tmp_path / 'nested' / 'archive.db'}")
    else:
        url: str = request.getfixturevalue("database_url")
        # PostgreSQL: a schema per test, so parallel runs never see each other's rows.
        # SQLite: the session file; each test drops its tables afterwards.
        schema = f"t_{uuid.uuid4().hex[:12]}" if url.startswith("postgresql") else None
        sql = SqlStore(url, schema=schema)
    sql.create_schema()
    yield sql
    sql.drop_schema()
    sql.close()


pytestmark = pytest.mark.integration


def _view(i: int, user: str = "17850") -> ItemViewed:
    return ItemViewed(event_id=f"ev-{i}", user_id=user, item_id=f"item{i % 7}",
                      timestamp=1_300_000_000 + i)


def test_archive_counts_each_event_id_once(store: SqlStore) -> None:
    events = [_view(i) for i in range(10)]
    assert store.archive_events(events[:6]) == 6
    assert store.archive_events(events) == 4  # the first six are already there
    assert store.archive_events(events + events) == 0
    assert store.count_events() == 10


def test_archive_of_nothing_is_a_no_op(store: SqlStore) -> None:
    assert store.archive_events([]) == 0
    assert store.count_events() == 0


def test_archived_payloads_parse_back_to_the_same_events(store: SqlStore) -> None:
    buy = Purchased(event_id="p1", user_id="u1", item_id="85123A", quantity=3, price=2.55,
                    timestamp=1_300_000_100)
    view = _view(1)
    store.archive_events([buy, view])
    payloads = store.events()
    assert [p["event_id"] for p in payloads] == ["ev-1", "p1"]  # oldest first
    assert parse_interaction(payloads[1]) == buy
    assert [p["event_id"] for p in store.events(since_ts=1_300_000_050)] == ["p1"]
    assert len(store.events(limit=1)) == 1


def test_catalog_events_can_be_archived_too(store: SqlStore) -> None:
    upsert = ItemUpserted(event_id="c1", item_id="85123A", name="Heart holder")
    assert store.archive_events([upsert]) == 1
    assert store.events()[0]["event_type"] == "item_upsert"


def test_large_archive_is_written_in_chunks(store: SqlStore) -> None:
    assert store.archive_events([_view(i) for i in range(12_000)]) == 12_000
    assert store.count_events() == 12_000


def test_products_upsert_inserts_then_replaces(store: SqlStore) -> None:
    items = [Item("85123A", "White heart holder", "decor", 2.55),
             Item("22423", "Cake stand", "kitchen", 12.75, "three tiers", in_stock=False)]
    assert store.upsert_products(items) == 2
    assert store.products() == sorted(items, key=lambda i: i.item_id)
    store.upsert_products([ItemUpserted(item_id="85123A", name="Red heart holder",
                                        category="decor", price=3.0, in_stock=False)])
    changed = store.get_product("85123A")
    assert changed == Item("85123A", "Red heart holder", "decor", 3.0, "", in_stock=False)
    assert store.get_product("nope") is None
    assert len(store.products()) == 2


def test_create_schema_is_idempotent(store: SqlStore) -> None:
    store.archive_events([_view(1)])
    store.create_schema()
    assert store.count_events() == 1
    assert store.ping() is True


def test_from_settings_defaults_to_the_sqlite_file_in_state_dir(tmp_settings: Settings) -> None:
    store = SqlStore.from_settings(tmp_settings)
    store.create_schema()
    store.upsert_products([Item("1", "x")])
    store.close()
    assert (tmp_settings.state_dir / "streamrec.db").is_file()


def test_unsupported_or_invalid_urls_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError):
        SqlStore("not a url")
    with pytest.raises(ConfigurationError, match="unsupported"):
        SqlStore("mysql://u@localhost/db")
    with pytest.raises(ConfigurationError, match="schema"):
        SqlStore("sqlite://", schema="x")


def test_unreachable_postgres_is_a_temporary_failure() -> None:
    store = SqlStore(f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/test"
                     "?connect_timeout=1")
    assert store.ping() is False
    with pytest.raises(TemporaryFailure, match="database count_events failed"):
        store.count_events()
    store.close()


def test_wire_bytes_are_archived_as_received_and_parse_back(store: SqlStore) -> None:
    wire = (b'{"event_type":"view","event_id":"w1","user_id":" u1 ","item_id":"85123A",'
            b'"timestamp":1300000000,"session_id":"s1"}')
    event = parse_interaction(wire)
    assert store.archive_events([event], [wire]) == 1
    assert store.archive_events([event], [wire]) == 0  # idempotent by event id
    (payload,) = store.events()
    assert payload == json.loads(wire)  # as sent: epoch seconds, untrimmed user id
    assert parse_interaction(payload) == event


def test_wire_bytes_that_would_not_parse_back_are_serialised_instead(store: SqlStore) -> None:
    # Without an id or a time the parsed event got defaults; JSON's NaN/Infinity are not
    # JSON to PostgreSQL. Each of these is archived as the event serialised.
    no_id = b'{"event_type":"view","user_id":"u1","item_id":"a","timestamp":1300000000}'
    no_time = b'{"event_type":"view","event_id":"t1","user_id":"u1","item_id":"b"}'
    infinite = (b'{"event_type":"purchase","event_id":"p1","user_id":"u1","item_id":"c",'
                b'"timestamp":1300000001,"price":Infinity}')
    events = [parse_interaction(w) for w in (no_id, no_time, infinite)]
    assert store.archive_events(events, [no_id, no_time, infinite]) == 3
    by_id = {p["event_id"]: p for p in store.events()}
    assert by_id.keys() == {e.event_id for e in events}  # the generated id included
    assert parse_interaction(by_id[events[0].event_id]) == events[0]
    assert parse_interaction(by_id["t1"]) == events[1]  # the time it was given
    assert by_id["p1"]["price"] is None  # as the event serialises it


def test_wire_bytes_must_match_the_events_one_to_one(store: SqlStore) -> None:
    with pytest.raises(ValueError):
        store.archive_events([_view(1), _view(2)], [dump_event(_view(1))])
    assert store.count_events() == 0
