"""Event time is hostile input: refused outside a window, and never able to freeze decay."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from api.services import ApiServices
from consumers.handlers import ArchiveBatchHandler, Record, parse_records
from core.events import EventTimeWindow, Purchased, dump_event
from core.settings import Settings
from infra.replay import purchase_events
from offline.catalog import load_purchases
from online_models.processor import StreamProcessor
from online_models.profile import ContentProfile

ROOT = Path(__file__).resolve().parents[1]
YEAR_9999 = "9999-12-31T00:00:00Z"
YEAR_2099 = "2099-01-01T00:00:00Z"
DAY = 24 * 3600.0


def view(timestamp: object) -> dict[str, object]:
    return {"event_type": "view", "user_id": "u1", "item_id": "mugs-1", "timestamp": timestamp}


@pytest.mark.parametrize("timestamp", [YEAR_9999, YEAR_2099, 4_070_908_800,
                                       "2001-01-01T00:00:00Z"])
def test_the_api_refuses_an_event_time_outside_the_window_with_422_and_the_reason(
    client: FlaskClient, services: ApiServices, timestamp: object,
) -> None:
    for path, body in (("/api/events", view(timestamp)),
                       ("/api/events", [view(time.time()), view(timestamp)]),
                       ("/api/feedback", {"user_id": "u1", "product_id": "mugs-1",
                                          "rating": 4, "timestamp": timestamp})):
        response = client.post(path, json=body)
        assert response.status_code == 422, response.data
        detail = response.get_json()["error"]["details"][-1]
        assert detail["field"].endswith("timestamp") and detail["type"] == "time_window"
        assert "server clock" in detail["message"]
    assert services.publisher.events == []  # type: ignore[attr-defined]


def test_the_api_accepts_times_within_the_skew_and_the_past_window(
    client: FlaskClient,
) -> None:
    now = time.time()
    for ts in (now + 60, now - 300 * DAY, now):
        assert client.post("/api/events", json=view(ts)).status_code == 202


def test_the_window_comes_from_the_settings() -> None:
    window = EventTimeWindow.from_settings(Settings(event_max_future_s=10, event_max_age_s=60))
    assert window.problem(1_000.0, now=995.0) is None
    assert window.problem(1_011.0, now=1_000.0) is not None
    assert window.problem(939.0, now=1_000.0) is not None


def record(value: bytes, offset: int = 0) -> Record:
    return Record("interactions", 0, offset, b"u1", value, int(time.time() * 1000))


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_the_consumers_dead_letter_an_event_from_the_future_with_the_reason() -> None:
    now = time.time()
    good = Purchased(user_id="u1", item_id="mugs-1", timestamp=now)  # type: ignore[arg-type]
    future = Purchased(user_id="u1", item_id="mugs-2",
                       timestamp=datetime(2099, 1, 1, tzinfo=UTC))
    events, wire, bad = parse_records([record(dump_event(good)), record(dump_event(future), 1)])
    assert [e.event_id for e in events] == [good.event_id] and len(wire) == 1
    assert [letter.record.offset for letter in bad] == [1]
    assert "after the server clock" in bad[0].reason
    assert "after the server clock" in bad[0].headers()["x-dead-letter-reason"]
    # The archive (its own consumer group) skips it too.
    archived: list[str] = []
    handler = ArchiveBatchHandler(lambda evs, _: archived.extend(e.event_id for e in evs) or 0)
    await handler.handle([record(dump_event(good)), record(dump_event(future), 1)])
    assert archived == [good.event_id]


def test_far_future_events_that_reach_the_state_leave_trending_ranked_by_real_scores(
    client: FlaskClient, services: ApiServices,
) -> None:
    # Events produced to Kafka by something other than the API, past every edge check.
    processor = StreamProcessor(services.state, services.index,
                                {i: it.category for i, it in services.catalog.items()},
                                half_life_s=7 * DAY, profile=ContentProfile(0.3))
    for n, far in enumerate((datetime(9999, 12, 31, tzinfo=UTC),
                             datetime(2099, 1, 1, tzinfo=UTC))):
        processor.apply([Purchased(user_id=f"bot{n}", item_id="bags-9", timestamp=far)])
    now = time.time()
    processor.apply([Purchased(user_id=f"s{n}", item_id=item, timestamp=now + n)  # type: ignore[arg-type]
                     for n, item in enumerate(["mugs-1"] * 4 + ["mugs-2"] * 3)])
    items = client.get("/api/trending?k=3").get_json()["items"]
    # The two bots' purchases count as if made now (16), the real ones in full (not 0.0).
    assert [i["item_id"] for i in items] == ["mugs-1", "mugs-2", "bags-9"]
    assert items[0]["score"] > items[1]["score"] > items[2]["score"] > 0.0
    raw = services.state.top_popular(3)
    assert raw.scores.tolist() == pytest.approx([32.0, 24.0, 16.0], rel=0.01)


def test_the_demo_replay_moves_the_history_to_end_now_keeping_its_gaps() -> None:
    end = time.time()
    times = load_purchases(ROOT / "data")["timestamp"]
    window = EventTimeWindow.from_settings(Settings())
    few = list(purchase_events(ROOT / "data", limit=500, end_at=end))
    shift = end - float(times[:500].max())
    assert few[-1].ts == pytest.approx(end)  # what is replayed ends now
    assert [e.ts for e in few[:3]] == pytest.approx([float(t) + shift for t in times[:3]])
    # The whole history: its oldest purchase, a year before the last, passes the window.
    oldest = next(purchase_events(ROOT / "data", end_at=end))
    assert oldest.ts == pytest.approx(float(times.min()) + end - float(times.max()))
    assert window.problem(oldest.ts, end) is None
