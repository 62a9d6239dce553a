"""The whole loop on real parts: API -> Kafka (Tansu) -> consumers -> Redis -> API."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from flask import Flask

from api import create_app
from core.settings import Settings
from index.ann import IvfIndex
from infra.kafka import KafkaEventPublisher
from infra.sql import SqlStore
from tests.fakes import OPERATOR
from tests.integration.conftest import consumer_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

POLL_S = 20.0


def poll(check: Callable[[], Any], timeout_s: float = POLL_S, every_s: float = 0.2) -> Any:
    """Call ``check`` until it returns something truthy (a functional wait, not a timing)."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(every_s)


@pytest.fixture
def app(live_settings: Settings) -> Iterator[Flask]:
    app = create_app(live_settings)
    yield app
    app.extensions["streamrec"].close()


def top_categories(app: Flask, user: str, k: int = 10) -> Counter[str]:
    body = app.test_client().get(f"/api/recommendations?user_id={user}&k={k}").get_json()
    return Counter(item["category"] for item in body["items"])


def test_views_posted_to_the_api_turn_a_new_users_recommendations_toward_that_category(
    app: Flask, running_consumer: object
) -> None:
    services = app.extensions["streamrec"]
    catalog = services.catalog
    sizes = Counter(item.category for item in catalog.values())
    # A category that popularity alone would not put first.
    before = top_categories(app, "new-shopper")
    target = next(c for c, n in sizes.most_common() if n >= 30 and before[c] <= 2)
    items = [i for i, item in catalog.items() if item.category == target][:4]

    client = app.test_client()
    for item_id in items:
        response = client.post("/api/events", json={
            "event_type": "view", "user_id": "new-shopper", "item_id": item_id,
            "session_id": "s1",
        })
        assert response.status_code == 202, response.get_json()

    after = poll(lambda: (c := top_categories(app, "new-shopper"))[target] >= 6 and c)
    final = top_categories(app, "new-shopper")
    assert after, f"recommendations never moved toward {target}: {final}"
    recs = client.get("/api/recommendations?user_id=new-shopper&k=10").get_json()["items"]
    assert not set(items) & {r["item_id"] for r in recs}, "viewed items are not recommended again"
    assert all("content" in r["sources"] for r in recs if r["category"] == target)


def test_applied_events_are_archived_in_sql_once(
    app: Flask, live_settings: Settings, running_consumer: object
) -> None:
    item_id = next(iter(app.extensions["streamrec"].catalog))
    event = {"event_id": "archived-once", "event_type": "purchase", "user_id": "buyer",
             "item_id": item_id, "quantity": 2}
    client = app.test_client()
    assert client.post("/api/events", json=event).status_code == 202
    assert client.post("/api/events", json=event).status_code == 202  # a client retry
    store = SqlStore(live_settings.database_url)
    try:
        assert poll(lambda: store.count_events() == 1)
        assert store.events()[0]["event_id"] == "archived-once"
    finally:
        store.close()
    state = app.extensions["streamrec"].state
    assert poll(lambda: state.counters().get("events.duplicate") == 1)
    assert state.counters()["events.purchase"] == 1


def test_a_malformed_message_goes_to_the_dead_letter_topic_and_the_next_event_still_applies(
    app: Flask, live_settings: Settings, running_consumer: object
) -> None:
    publisher = KafkaEventPublisher.from_settings(live_settings)
    try:
        publisher.publish_raw(live_settings.interactions_topic, b"bad-user", b"{not json")
        publisher.publish_raw(live_settings.interactions_topic, b"bad-user",
                              b'{"event_type": "rating", "user_id": "u", "item_id": "i", '
                              b'"rating": 11}')
        item_id = next(iter(app.extensions["streamrec"].catalog))
        response = app.test_client().post("/api/events", json={
            "event_type": "click", "user_id": "bad-user", "item_id": item_id})
        assert response.status_code == 202
    finally:
        publisher.close()

    state = app.extensions["streamrec"].state
    assert poll(lambda: state.recent_items("bad-user") == [item_id])
    letters = asyncio.run(read_topic(live_settings.kafka_bootstrap,
                                     live_settings.dead_letter_topic, expect=2))
    assert [value for value, _ in letters] == [
        b"{not json",
        b'{"event_type": "rating", "user_id": "u", "item_id": "i", "rating": 11}',
    ]
    reasons = [headers["x-dead-letter-reason"] for _, headers in letters]
    assert "invalid interaction event" in reasons[0]
    assert "rating" in reasons[1]
    assert poll(lambda: state.counters().get("events.dead_letter") == 2)


async def read_topic(
    bootstrap: str, topic: str, expect: int, timeout_s: float = POLL_S
) -> list[tuple[bytes, dict[str, str]]]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    out: list[tuple[bytes, dict[str, str]]] = []
    try:
        deadline = time.monotonic() + timeout_s
        while len(out) < expect and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for r in records:
                    out.append((r.value, {k: v.decode() for k, v in r.headers}))
    finally:
        await consumer.stop()
    return out


def test_a_new_product_posted_to_the_catalog_is_recommendable_without_a_restart(
    app: Flask, running_consumer: object
) -> None:
    check_a_new_product_is_recommendable(app)


def test_past_the_flat_index_size_an_ivf_index_serves_and_takes_new_products(
    live_settings: Settings, tmp_path: Path
) -> None:
    # The shipped catalog (3.6k items) past a flat-index size of 100: every process builds
    # or loads a trained IVF index (its own state dir: the shared one holds a flat index).
    settings = live_settings.model_copy(update={"index_flat_max": 100,
                                                "state_dir": tmp_path / "ivf-state"})
    app = create_app(settings)
    consumer = consumer_for(settings).start()
    try:
        index = app.extensions["streamrec"].index
        assert isinstance(index, IvfIndex) and index.trained
        assert index.calibration is not None and index.calibration.met
        check_a_new_product_is_recommendable(app)
        # A shopper who views candle holders gets recommendations scored by the index.
        client = app.test_client()
        holders = client.get("/api/items/NEW-001/similar?k=5").get_json()["items"]
        for item in holders[:3]:
            client.post("/api/events", json={"event_type": "view", "user_id": "ivf-shopper",
                                             "item_id": item["item_id"]})
        state = app.extensions["streamrec"].state
        assert poll(lambda: "ivf-shopper" in state.get_profiles(["ivf-shopper"]))
        body = client.get("/api/recommendations?user_id=ivf-shopper&k=10").get_json()
        assert len(body["items"]) == 10
        assert any("content" in item["sources"] for item in body["items"])
    finally:
        consumer.stop()
        app.extensions["streamrec"].close()


def check_a_new_product_is_recommendable(app: Flask) -> None:
    """A product posted to the catalog gets similar items and moves a viewer's profile."""
    client = app.test_client()
    assert client.get("/api/items/NEW-001").status_code == 404
    response = client.post("/api/catalog", json={
        "event_type": "item_upsert", "item_id": "NEW-001", "name": "Heart Candle Holder Set",
        "category": "Light & Holder", "price": 4.95,
    }, headers=OPERATOR)
    assert response.status_code == 202, response.get_json()
    assert poll(lambda: client.get("/api/items/NEW-001/similar?k=5").status_code == 200)
    similar = client.get("/api/items/NEW-001/similar?k=5").get_json()["items"]
    assert len(similar) == 5
    assert any("holder" in i["name"].lower() or "candle" in i["name"].lower() for i in similar)

    # Viewing it moves a new shopper's profile: the product has a vector in every process.
    client.post("/api/events", json={"event_type": "view", "user_id": "early-adopter",
                                     "item_id": "NEW-001"})
    state = app.extensions["streamrec"].state
    assert poll(lambda: "early-adopter" in state.get_profiles(["early-adopter"]))
