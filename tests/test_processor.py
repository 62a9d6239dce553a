"""The stream processor: events -> one atomic state update, each event applied once."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest

from core.events import (
    AddedToCart,
    InteractionEvent,
    ItemClicked,
    ItemViewed,
    Purchased,
    Rated,
)
from core.ports import Vector
from core.settings import Settings
from infra.bootstrap import build_processor
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


def test_forward_co_visitation_lists_only_what_was_viewed_after_an_item(store) -> None:
    processor = StreamProcessor(store, toy_index(toy_catalog()), {}, half_life_s=HOUR,
                                profile=ContentProfile(0.3), covisit_direction="forward")
    processor.apply([view("u1", "bags-1", 10), view("u1", "mugs-1", 20)])
    processor.apply([view("u1", "candles-1", 30)])
    assert set(store.top_popular(10, scope="co:bags-1").ids) == {"mugs-1", "candles-1"}
    assert store.top_popular(10, scope="co:mugs-1").ids == ["candles-1"]
    assert store.top_popular(10, scope="co:candles-1").ids == []


def test_the_co_visitation_settings_reach_the_processor(store) -> None:
    settings = Settings(covisit_window=4, covisit_direction="forward")
    catalog = toy_catalog()
    processor = build_processor(settings, store, toy_index(catalog), catalog)
    assert (processor.covisit_window, processor.covisit_direction) == (4, "forward")


def test_an_unknown_co_visitation_direction_is_refused(store) -> None:
    with pytest.raises(ValueError, match="covisit_direction"):
        StreamProcessor(store, toy_index(toy_catalog()), {}, half_life_s=HOUR,
                        profile=ContentProfile(0.3), covisit_direction="backward")  # type: ignore[arg-type]


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


def mixed_stream(n: int, users: int, seed: int) -> list[InteractionEvent]:
    """Mixed kinds (ratings and unknown items too) in time order; some ids redelivered later."""
    rng = np.random.default_rng(seed)
    items = [*toy_catalog(), "not-in-catalog"]
    kinds = (ItemViewed, ItemClicked, AddedToCart, Purchased, Rated)
    keyed: list[tuple[float, InteractionEvent]] = []
    for k in range(n):
        kind = kinds[int(rng.integers(len(kinds)))]
        extra = {"rating": int(rng.integers(1, 6))} if kind is Rated else {}
        event = kind(user_id=f"u{rng.integers(users)}",
                     item_id=items[int(rng.integers(len(items)))],
                     timestamp=1_000_000.0 + 7 * k + float(rng.uniform(0, 6)), **extra)
        keyed.append((k, event))
        if rng.random() < 0.05:  # a producer's retry, somewhere after the original
            keyed.append((float(rng.uniform(k + 0.5, n)), event))
    return [event for _, event in sorted(keyed, key=lambda pair: pair[0])]


class _State(NamedTuple):
    counters: dict[str, int]
    recent: dict[str, list[str]]
    popularity: dict[str, dict[str, float]]
    histories: dict[str, dict[str, float]]
    purchased: dict[str, set[str]]
    profiles: dict[str, Vector]


def _state(store: InMemoryStateStore, users: list[str]) -> _State:
    scopes = ["all", *(f"cat:{c}" for c in CATEGORIES), *(f"co:{i}" for i in toy_catalog())]
    return _State(
        store.counters(), store.recent_items_many(users, 50),
        {s: store.top_popular(100, s).as_dict() for s in scopes},
        store.get_histories(users), {u: store.purchased_items(u) for u in users},
        store.get_profiles(users),
    )


@pytest.mark.parametrize("seed", [1, 2])
def test_summing_a_batch_gives_the_state_of_one_event_at_a_time(seed: int) -> None:
    # The processor adds up a batch (per scope and item, per user) before the store sees
    # it; however the stream is cut, the state must be that of one event per batch.
    index = toy_index(toy_catalog())
    categories = {i: it.category for i, it in toy_catalog().items()}
    events = mixed_stream(600, 25, seed)
    users = [f"u{n}" for n in range(25)]
    cuts = np.random.default_rng(seed).integers(1, 120, len(events)).tolist()
    states = []
    for sizes in ([1] * len(events), cuts, [len(events)]):
        store = InMemoryStateStore(half_life_s=HOUR, covisit_max=1000)
        processor = StreamProcessor(store, index, categories, half_life_s=HOUR,
                                    profile=ContentProfile(0.3), covisit_window=3)
        start = 0
        for size in sizes:
            processor.apply(events[start:start + size])
            start += size
        states.append(_state(store, users))
    one_by_one = states[0]
    assert one_by_one.counters["events.duplicate"] > 0
    for other in states[1:]:
        assert other.counters == one_by_one.counters
        assert other.recent == one_by_one.recent
        assert other.purchased == one_by_one.purchased
        for scope, scores in one_by_one.popularity.items():
            assert other.popularity[scope] == pytest.approx(scores, rel=1e-9)
        for user, history in one_by_one.histories.items():
            assert other.histories[user] == pytest.approx(history)
        assert other.profiles.keys() == one_by_one.profiles.keys()
        for user, profile in one_by_one.profiles.items():
            np.testing.assert_allclose(other.profiles[user], profile, atol=1e-5)


def test_folding_many_users_at_once_equals_each_users_own_fold() -> None:
    rng = np.random.default_rng(3)
    profile = ContentProfile(0.3)
    owners = [f"u{k}" for k in rng.integers(0, 6, 40)]
    vectors = rng.normal(size=(40, 8)).astype(np.float32)
    weights = rng.choice([0.5, 1.0, 2.0, 8.0], 40)
    start = {"u0": rng.normal(size=8).astype(np.float32), "u3": np.zeros(8, np.float32)}
    together = profile.fold_many(start, owners, vectors, weights)
    assert set(together) == set(owners)
    for user in set(owners):
        mine = [k for k, owner in enumerate(owners) if owner == user]
        np.testing.assert_allclose(
            together[user], profile.fold(start.get(user), vectors[mine], weights[mine]),
            rtol=1e-5, atol=1e-6)
