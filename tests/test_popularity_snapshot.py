"""The API's popularity snapshot: read once, served from memory, re-read in the background."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from core.errors import TemporaryFailure
from core.ports import StateUpdate
from core.types import Item, ScoredItems
from infra.memory_store import InMemoryStateStore
from online_models.serving.popularity import PER_CATEGORY, PopularitySnapshot, Snapshot
from tests.fakes import wait_until

CATALOG = {
    "a": Item("a", "A", "Mugs", 1.0), "b": Item("b", "B", "Bags", 2.0),
    "c": Item("c", "C", "Mugs", 3.0), "d": Item("d", "D", "", 4.0),
}


class CountingStore(InMemoryStateStore):
    def __init__(self) -> None:
        super().__init__(half_life_s=3600.0)
        self.reads = 0
        self.fail = False
        self.release = threading.Event()
        self.release.set()

    def top_popular(self, n: int, scope: str = "all") -> ScoredItems:
        self.release.wait(5)
        self.reads += 1
        if self.fail:
            raise TemporaryFailure("Redis down (fake)")
        return super().top_popular(n, scope)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _pop(store: InMemoryStateStore, scores: dict[str, float]) -> None:
    store.apply(StateUpdate(popularity={"all": scores}))



def test_snapshot_splits_the_popular_list_by_catalog_category_best_first() -> None:
    snap = Snapshot.of(ScoredItems(["c", "x", "b", "a", "d"], np.array([5, 4, 3, 2, 1.0])),
                       CATALOG)
    assert snap.top(None, 2).ids == ["c", "x"]
    assert snap.top("Mugs", 5).ids == ["c", "a"]
    assert snap.top("Mugs", 5).scores.tolist() == [5.0, 2.0]
    assert snap.top("Bags", 5).ids == ["b"]
    assert snap.top("Unknown", 5).ids == []  # and items of no category join no list
    assert list(snap.ranked(None)) == ["c", "x", "b", "a", "d"]
    assert list(snap.ranked("Mugs")) == ["c", "a"] and list(snap.ranked("Unknown")) == []
    assert snap.scale == pytest.approx(np.log1p(5.0))
    assert np.isnan(snap.scores(["zz"])[0])  # cannot score: not a 0


def test_category_lists_are_capped() -> None:
    many = {f"i{j}": Item(f"i{j}", "I", "Mugs", 1.0) for j in range(PER_CATEGORY + 10)}
    ids = list(many)
    snap = Snapshot.of(ScoredItems(ids, np.arange(len(ids), 0, -1.0)), many)
    assert len(snap.top("Mugs", 10 * PER_CATEGORY)) == PER_CATEGORY


def test_an_empty_store_gives_an_empty_snapshot_with_no_scale() -> None:
    snap = PopularitySnapshot(InMemoryStateStore(), CATALOG, refresh_s=0).current()
    assert len(snap.top(None, 5)) == 0 and snap.scale == 0.0


def test_refresh_zero_reads_on_every_call() -> None:
    store = CountingStore()
    _pop(store, {"a": 1.0})
    popularity = PopularitySnapshot(store, CATALOG, refresh_s=0)
    popularity.current()
    _pop(store, {"b": 5.0})
    assert popularity.current().top(None, 1).ids == ["b"]
    assert store.reads == 2


def test_a_fresh_snapshot_is_served_from_memory() -> None:
    store, clock = CountingStore(), Clock()
    _pop(store, {"a": 1.0})
    popularity = PopularitySnapshot(store, CATALOG, refresh_s=0.5, clock=clock)
    first = popularity.current()
    _pop(store, {"b": 5.0})
    clock.now += 0.4
    assert popularity.current() is first and store.reads == 1


def test_a_stale_snapshot_is_served_while_the_background_reads_the_new_one() -> None:
    store, clock = CountingStore(), Clock()
    _pop(store, {"a": 1.0})
    popularity = PopularitySnapshot(store, CATALOG, refresh_s=0.5, clock=clock)
    first = popularity.current()
    _pop(store, {"b": 5.0})
    clock.now += 0.6
    store.release.clear()  # the background read waits: requests must not
    assert popularity.current() is first
    assert popularity.current() is first  # one re-read at a time
    store.release.set()
    wait_until(lambda: popularity.current() is not first)
    assert popularity.current().top(None, 1).ids == ["b"]
    assert store.reads == 2


def test_a_failed_background_read_keeps_the_old_snapshot_and_retries_later() -> None:
    store, clock = CountingStore(), Clock()
    _pop(store, {"a": 1.0})
    popularity = PopularitySnapshot(store, CATALOG, refresh_s=0.5, clock=clock)
    first = popularity.current()
    store.fail = True
    clock.now += 1.0
    popularity.current()
    wait_until(lambda: store.reads == 2 and not popularity._refreshing.locked())
    assert popularity.current() is first
    time.sleep(0.05)
    assert store.reads == 2  # no retry per request while the store is down
    clock.now += 0.5
    store.fail = False
    assert popularity.current() is first  # that call started the next try
    wait_until(lambda: popularity.current() is not first)


def test_without_any_snapshot_a_failure_is_the_callers() -> None:
    store = CountingStore()
    store.fail = True
    with pytest.raises(TemporaryFailure):
        PopularitySnapshot(store, CATALOG, refresh_s=0.5).current()
