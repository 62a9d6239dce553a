"""A fresh demo state answers with the shipped history's popularity, once per state."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest
import redis

from api import create_app
from core.settings import Settings
from infra.memory_store import InMemoryStateStore
from infra.popularity_seed import SEED_BLOB, history_digest, seed_popularity
from infra.redis_store import RedisStateStore
from offline.catalog import load_purchases
from tests.fakes import toy_services

ROOT = Path(__file__).resolve().parents[1]
HALF_LIFE_S = 7 * 24 * 3600.0


def _toy_history(item_ids: list[str]) -> pd.DataFrame:
    # Item i bought i + 1 times, all on the history's last day.
    rows = [(item, 1_300_000_000) for i, item in enumerate(item_ids) for _ in range(i + 1)]
    return pd.DataFrame(rows, columns=["item_id", "timestamp"])


def test_trending_on_a_seeded_fresh_state_has_scores_and_best_sellers_first() -> None:
    services = toy_services()
    client = create_app(services.settings, services=services).test_client()
    items = list(services.catalog)[:5]
    seed_popularity(services.state, _toy_history(items),
                    {i: it.category for i, it in services.catalog.items()},
                    HALF_LIFE_S, time.time(), b"toy")

    body = client.get("/api/trending?k=5").get_json()

    assert [entry["item_id"] for entry in body["items"]] == items[::-1]
    assert all(entry["score"] > 0 for entry in body["items"])
    category = services.catalog[items[0]].category
    in_category = client.get(f"/api/trending?k=5&category={category}").get_json()["items"]
    assert in_category and all(entry["score"] > 0 for entry in in_category)


def test_the_shipped_history_seeds_non_zero_popularity_into_an_empty_state() -> None:
    store = InMemoryStateStore(half_life_s=HALF_LIFE_S)
    assert store.top_popular(10).ids == []
    purchases = load_purchases(ROOT / "data")
    assert seed_popularity(store, purchases, {}, HALF_LIFE_S, time.time(),
                           history_digest(ROOT / "data"))
    top = store.top_popular(10)
    assert len(top.ids) == 10 and all(s > 0 for s in top.scores)
    # The best seller of the history's last weeks, not the one of all time, leads.
    last_week = purchases[purchases["timestamp"] > purchases["timestamp"].max() - HALF_LIFE_S]
    assert top.ids[0] in set(last_week["item_id"])


@pytest.mark.integration
def test_seeding_is_idempotent_across_restarts_on_redis(
    redis_client: redis.Redis, redis_prefix: str
) -> None:
    settings = Settings(redis_prefix=redis_prefix, popularity_half_life_s=HALF_LIFE_S)
    history = _toy_history(["a", "b", "c"])
    now = time.time()
    first = RedisStateStore.from_settings(redis_client, settings)
    assert seed_popularity(first, history, {"a": "Mugs"}, HALF_LIFE_S, now, b"d1")
    before = first.top_popular(3)

    restarted = RedisStateStore.from_settings(redis_client, settings)  # the next `make demo`
    assert not seed_popularity(restarted, history, {"a": "Mugs"}, HALF_LIFE_S, now, b"d1")

    after = restarted.top_popular(3)
    assert after.ids == ["c", "b", "a"] == before.ids
    assert list(after.scores) == pytest.approx(list(before.scores))
    assert restarted.get_blob(SEED_BLOB) == b"d1"
