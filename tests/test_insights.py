"""Dashboard insights over the events archive, on SQLite and on the session database."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.events import AddedToCart, ItemViewed, Purchased, Rated
from core.types import Item
from infra.insights import Insights
from infra.sql import SqlStore

DAY = 86_400
D0 = 15_000 * DAY  # 2011-01-26, a UTC midnight


@pytest.fixture(params=["sqlite", pytest.param("session-db", marks=pytest.mark.integration)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlStore]:
    if request.param == "sqlite":
        made = SqlStore(f"sqlite:///{tmp_path / 'insights.db'}")
    else:
        url: str = request.getfixturevalue("database_url")
        schema = f"t_{uuid.uuid4().hex[:10]}" if url.startswith("postgresql") else None
        made = SqlStore(url, schema=schema)
    made.create_schema()
    made.upsert_products([Item("mug", "Mug", "Kitchen", 3.0), Item("bag", "Bag", "Bags", 5.0),
                          Item("pen", "Pen", "Office", 1.0)])
    # Day 0: u1 views, carts and buys a mug; u2 views the mug and carts it.
    # Day 1: u2 comes back and buys a bag (returning); u3 is new, views a pen and rates it.
    made.archive_events([
        ItemViewed(user_id="u1", item_id="mug", timestamp=D0 + 10),
        AddedToCart(user_id="u1", item_id="mug", timestamp=D0 + 20),
        Purchased(user_id="u1", item_id="mug", timestamp=D0 + 30),
        ItemViewed(user_id="u2", item_id="mug", timestamp=D0 + 40),
        AddedToCart(user_id="u2", item_id="mug", timestamp=D0 + 50),
        Purchased(user_id="u2", item_id="bag", timestamp=D0 + DAY + 5),
        ItemViewed(user_id="u3", item_id="pen", timestamp=D0 + DAY + 10),
        Rated(user_id="u3", item_id="pen", rating=4, timestamp=D0 + DAY + 20),
        Rated(user_id="u1", item_id="mug", rating=5, timestamp=D0 + DAY + 30),
        Rated(user_id="u2", item_id="mug", rating=4, timestamp=D0 + DAY + 40),
        ItemViewed(user_id="u4", item_id="ghost", timestamp=D0 + DAY + 50),  # not in products
    ])
    yield made
    made.drop_schema()
    made.close()


def test_top_products_rank_by_purchases_with_names_and_breakdown(store: SqlStore) -> None:
    top = Insights(store).top_products(limit=2)
    assert [p["item_id"] for p in top] == ["mug", "bag"]
    assert top[0] == {"item_id": "mug", "name": "Mug", "category": "Kitchen", "events": 7,
                      "views": 2, "carts": 2, "purchases": 1}


def test_category_trend_counts_events_per_day_and_category(store: SqlStore) -> None:
    trend = Insights(store).category_trend(days=30)
    assert trend["days"] == ["2011-01-26", "2011-01-27"]
    assert trend["series"]["Kitchen"] == [5, 2]
    assert trend["series"]["Office"] == [0, 2]
    assert trend["series"]["(unknown)"] == [0, 1]


def test_category_trend_window_counts_back_from_the_newest_event(store: SqlStore) -> None:
    trend = Insights(store).category_trend(days=1)
    assert trend["days"] == ["2011-01-27"]
    assert trend["series"]["Kitchen"] == [2]


def test_category_trend_folds_small_categories_into_other(store: SqlStore) -> None:
    series = Insights(store).category_trend(days=30, top=1)["series"]
    assert set(series) == {"Kitchen", "other"}
    assert series["other"] == [0, 4]  # bag 1, pen 2, ghost 1


def test_funnel_counts_distinct_users_through_each_stage(store: SqlStore) -> None:
    funnel = Insights(store).funnel()
    assert funnel == [
        {"stage": "view", "users": 4, "funnel_users": 4, "conversion": 1.0},
        {"stage": "add_to_cart", "users": 2, "funnel_users": 2, "conversion": 0.5},
        {"stage": "purchase", "users": 2, "funnel_users": 2, "conversion": 1.0},
    ]


def test_rating_distribution_has_every_star_value(store: SqlStore) -> None:
    assert Insights(store).rating_distribution() == {"1": 0, "2": 0, "3": 0, "4": 2, "5": 1}


def test_new_vs_returning_users_by_day(store: SqlStore) -> None:
    assert Insights(store).new_vs_returning(days=30) == [
        {"day": "2011-01-26", "active": 2, "new": 2, "returning": 0},
        {"day": "2011-01-27", "active": 4, "new": 2, "returning": 2},
    ]


def test_empty_archive_gives_empty_insights(tmp_path: Path) -> None:
    store = SqlStore(f"sqlite:///{tmp_path / 'empty.db'}")
    store.create_schema()
    insights = Insights(store)
    assert insights.top_products() == []
    assert insights.category_trend() == {"days": [], "series": {}}
    assert [s["users"] for s in insights.funnel()] == [0, 0, 0]
    assert insights.new_vs_returning() == []
    assert insights.summary()["events"] == 0
