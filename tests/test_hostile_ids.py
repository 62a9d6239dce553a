"""Ids with NUL and other control characters: refused at the edge, never a stalled archive."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
from flask.testing import FlaskClient

from api.services import ApiServices
from consumers.handlers import Record, parse_records
from core.events import ItemViewed
from infra.sql import SqlStore

HOSTILE = ["a\x00b", "a\x01", "line\r\nbreak", "esc\x1b[31m", "del\x7f", "c1\x85x",
           "bidi\u202eevil", "zero\u200bwidth"]
FIELDS = ["user_id", "item_id", "event_id", "session_id", "rec_id", "variant"]


def view(**fields: str) -> dict[str, object]:
    return {"event_type": "view", "user_id": "u1", "item_id": "mugs-1",
            "timestamp": time.time(), **fields}


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("value", HOSTILE)
def test_the_api_refuses_ids_with_control_characters_with_422_and_the_field(
    client: FlaskClient, services: ApiServices, field: str, value: str,
) -> None:
    response = client.post("/api/events", json=view(**{field: value}))
    assert response.status_code == 422, response.data
    [detail] = response.get_json()["error"]["details"]
    assert detail["field"] == field and "control" in detail["message"]
    assert services.publisher.events == []  # type: ignore[attr-defined]


@pytest.mark.parametrize("value", ["spaces are fine", "Variante B", "日本"])
def test_a_variant_may_hold_spaces_and_any_script(client: FlaskClient, value: str) -> None:
    assert client.post("/api/events", json=view(variant=value)).status_code == 202


def test_free_text_keeps_line_breaks_but_not_nul(client: FlaskClient) -> None:
    rating = {"user_id": "u1", "product_id": "mugs-1", "rating": 4}
    ok = client.post("/api/feedback", json={**rating, "review": "Nice.\n\tWould buy again."})
    assert ok.status_code == 202
    bad = client.post("/api/feedback", json={**rating, "review": "Nice\x00"})
    assert bad.status_code == 422
    assert bad.get_json()["error"]["details"][0]["field"] == "review"


@pytest.mark.parametrize("path", ["/api/recommendations?user_id=u%00x",
                                  "/api/recommendations?user_id=u%0d%0aforged",
                                  "/api/recommendations?user_id=u&category=a%1b",
                                  "/api/recommendations?user_id=u&context_item=x%e2%80%ae"])
def test_query_ids_with_control_characters_are_a_400(client: FlaskClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 400
    assert "control characters" in response.get_json()["error"]["message"]


def test_the_consumers_dead_letter_an_id_with_nul_with_the_reason() -> None:
    raw = (b'{"event_type": "view", "user_id": "u\\u0000x", "item_id": "mugs-1", '
           b'"timestamp": %d}' % int(time.time()))
    events, _, bad = parse_records([Record("interactions", 0, 7, b"u", raw, 0)])
    assert events == [] and len(bad) == 1
    assert "user_id: must not contain whitespace, control" in bad[0].reason


@pytest.fixture
def postgres_store(database_url: str) -> Iterator[SqlStore]:
    if not database_url.startswith("postgresql"):
        pytest.skip("needs PostgreSQL: only it refuses NUL in text (DataError)")
    store = SqlStore(database_url, schema=f"t_{uuid.uuid4().hex[:12]}")
    store.create_schema()
    yield store
    store.drop_schema()
    store.close()


@pytest.mark.integration
def test_a_row_postgresql_refuses_is_skipped_logged_and_counted_not_retried_forever(
    postgres_store: SqlStore, caplog: pytest.LogCaptureFixture,
) -> None:
    rejected: list[tuple[str, str]] = []
    postgres_store.on_rejected = lambda event_id, reason: rejected.append((event_id, reason))
    now = time.time()
    good = [ItemViewed(event_id=f"ok-{n}", user_id="u1", item_id="mugs-1",  # type: ignore[arg-type]
                       timestamp=now + n) for n in range(3)]
    # Built past validation, as a record written before the edge checks existed.
    poisoned = ItemViewed.model_construct(event_id="bad-1", user_id="u\x00x", item_id="mugs-1",
                                          timestamp=good[0].timestamp)
    assert postgres_store.archive_events([good[0], poisoned, *good[1:]]) == 3
    assert postgres_store.count_events() == 3
    assert [event_id for event_id, _ in rejected] == ["bad-1"]
    assert "NUL" in rejected[0][1] or "0x00" in rejected[0][1]
    assert "refused by the database, skipped" in caplog.text
    # Redelivered: the good rows are not doubled, the bad one is skipped again.
    assert postgres_store.archive_events([good[0], poisoned, *good[1:]]) == 0
    assert postgres_store.count_events() == 3
