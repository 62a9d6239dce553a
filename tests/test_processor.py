"""The stream processor: events -> one atomic state update, each event applied once."""

from __future__ import annotations

import numpy as np
import pytest

from core.events import ItemViewed, Purchased, Rated
from infra.memory_store import InMemoryStateStore
from online_models.processor import StreamProcessor
from online_models.profile import ContentProfile
from tests.fakes import CATEGORIES, toy_catalog, toy_index

HOUR = 3600.0


@pytest.fixture
def store() -> InMemoryStateStore:
    return InMemoryStateStore(half_life_s=HOUR)


@pytest.fixture
def processor(store: InMemoryStateStore) -> StreamProcessor:
    catalog = toy_catalog()
    return StreamProcessor(
        store, toy_index(catalog), {i: it.category for i, it in catalog.items()},
        half_life_s=HOUR, profile=ContentProfile(0.3),
    )


def view(user: str, item: str, ts: float = 1_000_000.0, event_id: str | None = None) -> ItemViewed:
    extra = {"event_id": event_id} if event_id else {}
    return ItemViewed(user_id=user, item_id=item, timestamp=ts, **extra)  # type: ignore[arg-type]


def test_views_move_the_profile_toward_the_viewed_category(processor, store) -> None:
    processor.apply([view("u1", f"bags-{n}", 1_000_000 + n) for n in range(5)])
    profile = store.get_profiles(["u1"])["u1"]
    assert int(np.argmax(profile[: len(CATEGORIES)])) == CATEGORIES.index("Bags")
    assert 0 < np.linalg.norm(profile) <= 1.0 + 1e-6  # a mean of unit vectors


def test_recent_items_are_newest_first_even_when_the_batch_is_out_of_order(processor, store):
    processor.apply([view("u1", "mugs-2", 30), view("u1", "mugs-1", 10), view("u1", "mugs-3", 20)])
    assert store.recent_items("u1")[:3] == ["mugs-2", "mugs-3", "mugs-1"]


def test_replaying_a_batch_counts_nothing_twice(processor, store) -> None:
    batch = [view("u1", "bags-1", event_id="e1"), view("u2", "bags-1", event_id="e2")]
    processor.apply(batch)
    before = store.popularity(["bags-1"]).as_dict()["bags-1"]
    update = processor.apply(batch)
    assert update.event_ids == []
    assert update.counters == {"events.duplicate": 2}
    assert store.popularity(["bags-1"]).as_dict()["bags-1"] == pytest.approx(before)
    assert store.counters()["events.total"] == 2


def test_a_duplicate_inside_one_batch_is_applied_once(processor, store) -> None:
    update = processor.apply([view("u1", "bags-1", event_id="same"),
                              view("u1", "bags-1", event_id="same")])
    assert update.event_ids == ["same"]
    assert store.counters()["events.duplicate"] == 1


def test_popularity_weighs_purchases_above_views_and_is_kept_per_category(processor, store):
    processor.apply([
        view("u1", "mugs-1"), view("u2", "mugs-1"),
        Purchased(user_id="u3", item_id="bags-1", timestamp=1_000_000.0),  # type: ignore[arg-type]
    ])
    top = store.top_popular(2)
    assert top.ids == ["bags-1", "mugs-1"]
    assert store.top_popular(5, scope="cat:Mugs").ids == ["mugs-1"]


def test_popularity_decays_with_event_time_across_one_batch(processor, store) -> None:
    # The same weight two half-lives older counts a quarter as much.
    t0 = 1_000_000.0
    processor.apply([view("u1", "mugs-1", t0), view("u2", "mugs-2", t0 + 2 * HOUR)])
    pop = store.popularity(["mugs-1", "mugs-2"]).as_dict()
    assert pop["mugs-1"] / pop["mugs-2"] == pytest.approx(0.25, rel=1e-6)


def test_an_unknown_item_counts_in_recency_and_popularity_but_not_the_profile(processor, store):
    update = processor.apply([view("u9", "not-in-catalog")])
    assert update.counters["events.unknown_item"] == 1
    assert store.recent_items("u9") == ["not-in-catalog"]
    assert store.get_profiles(["u9"]) == {}


def test_a_one_star_rating_does_not_pull_the_profile_toward_the_item(processor, store) -> None:
    processor.apply([view("u1", "bags-1", 10)])
    before = store.get_profiles(["u1"])["u1"].copy()
    processor.apply([Rated(user_id="u1", item_id="mugs-1", rating=1, timestamp=20.0)])  # type: ignore[arg-type]
    np.testing.assert_allclose(store.get_profiles(["u1"])["u1"], before)


def test_extra_counters_are_written_with_the_batch(processor, store) -> None:
    processor.apply([], counters={"events.dead_letter": 3})
    assert store.counters()["events.dead_letter"] == 3


def test_items_viewed_one_after_another_become_co_visited_both_ways(processor, store) -> None:
    processor.apply([view("u1", "bags-1", 10), view("u1", "mugs-1", 20)])
    processor.apply([view("u1", "candles-1", 30), view("u2", "bags-1", 40)])
    assert set(store.top_popular(10, scope="co:bags-1").ids) == {"mugs-1", "candles-1"}
    assert set(store.top_popular(10, scope="co:candles-1").ids) == {"bags-1", "mugs-1"}
    # u2 had no earlier item: nothing co-visited with its first view.
    assert store.top_popular(10, scope="co:bags-1").as_dict()["mugs-1"] > 0


def test_co_visitation_looks_back_only_over_the_window(store) -> None:
    catalog = toy_catalog()
    processor = StreamProcessor(store, toy_index(catalog), {}, half_life_s=HOUR,
                                profile=ContentProfile(0.3), covisit_window=2)
    processor.apply([view("u1", f"mugs-{n}", 10 + n) for n in range(4)])
    assert set(store.top_popular(10, scope="co:mugs-3").ids) == {"mugs-1", "mugs-2"}


def test_profiles_do_not_depend_on_how_the_stream_is_cut_into_batches(store) -> None:
    catalog = toy_catalog()
    index = toy_index(catalog)
    events = [view("u1", item, 10 + n) for n, item in
              enumerate(["bags-1", "mugs-2", "bags-3", "candles-1", "bags-4"])]
    whole, split = InMemoryStateStore(), InMemoryStateStore()
    for target, batches in ((whole, [events]), (split, [events[:2], events[2:3], events[3:]])):
        processor = StreamProcessor(target, index, {}, half_life_s=HOUR,
                                    profile=ContentProfile(0.3))
        for batch in batches:
            processor.apply(batch)
    np.testing.assert_allclose(whole.get_profiles(["u1"])["u1"],
                               split.get_profiles(["u1"])["u1"], atol=1e-6)
