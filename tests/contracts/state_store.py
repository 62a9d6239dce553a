"""The contract every :class:`core.ports.StateStore` passes.

Use it as a mixin::

    class TestMyStore(StateStoreContract):
        def make_store(self, **options):
            return MyStore(**options)

``make_store`` receives keyword options the store must honour: ``recent_max``,
``dedupe_ttl_s``, ``half_life_s``, ``max_exponent`` and ``clock`` (the wall clock
of the dedupe window, a zero-argument callable returning Unix seconds).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from core.ports import (
    ALL_ITEMS,
    BatchWriter,
    BlobStore,
    CovisitSkip,
    DecayedCounters,
    DedupeLog,
    ItemNeighbours,
    OwnEvents,
    StateMeta,
    StateStore,
    StateUpdate,
    UserStateReader,
    VectorTables,
)

HOUR = 3600.0
#: 2011-06-01, in the Online Retail data set's period.
T0 = 1_306_886_400.0


class FakeClock:
    """A wall clock the test moves by hand."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class StateStoreContract:
    """Behaviour shared by every StateStore; subclasses implement :meth:`make_store`."""

    def make_store(self, **options: Any) -> StateStore:
        raise NotImplementedError

    def store(self, **options: Any) -> StateStore:
        store = self.make_store(**options)
        store.clear()
        return store

    # --- basics ---------------------------------------------------------------------------
    def test_store_satisfies_the_port_and_answers_ping(self) -> None:
        store = self.store()
        assert isinstance(store, StateStore)
        assert store.ping() is True

    def test_store_serves_every_role_port(self) -> None:
        store = self.store()
        for role in (DedupeLog, BatchWriter, UserStateReader, OwnEvents, DecayedCounters,
                     ItemNeighbours, VectorTables, BlobStore, StateMeta):
            assert isinstance(store, role), role.__name__

    def test_covisited_reads_each_items_co_visitation_scope(self) -> None:
        store = self.store()
        store.apply(StateUpdate(popularity={"co:a": {"x": 1.0, "y": 3.0, "z": 2.0},
                                            "co:b": {"x": 5.0}}, popularity_at=T0))
        found = store.covisited(["a", "b", "never", "a"], 2)
        assert list(found) == ["a", "b", "never"]
        assert found["a"].ids == ["y", "z"] and found["b"].ids == ["x"]
        assert found["never"].ids == []
        np.testing.assert_allclose(found["a"].scores, store.top_popular(2, "co:a").scores)

    def test_new_store_is_empty(self) -> None:
        store = self.store()
        assert store.seen_events(["e1"]) == set()
        assert store.recent_items("u1") == []
        assert len(store.top_popular(10)) == 0
        assert len(store.popularity(["a"])) == 0
        assert store.get_profiles(["u1"]) == {}
        assert store.counters() == {}
        assert store.last_event_ts() is None

    def test_empty_update_changes_nothing(self) -> None:
        store = self.store()
        store.apply(StateUpdate())
        assert store.counters() == {} and store.last_event_ts() is None

    # --- dedupe ---------------------------------------------------------------------------
    def test_applied_event_ids_are_seen_and_others_are_not(self) -> None:
        store = self.store()
        store.apply(StateUpdate(event_ids=["e1", "e2"]))
        store.apply(StateUpdate(event_ids=["e3"]))
        assert store.seen_events(["e1", "e3", "e4", "e1"]) == {"e1", "e3"}
        assert store.seen_events([]) == set()

    def test_event_ids_are_remembered_for_the_dedupe_window_then_forgotten(self) -> None:
        clock = FakeClock()
        ttl = 800.0
        store = self.store(dedupe_ttl_s=ttl, clock=clock)
        store.apply(StateUpdate(event_ids=["e1"]))
        clock.advance(ttl - 1)
        assert store.seen_events(["e1"]) == {"e1"}
        # Stores may round the window up to a time bucket, by at most a quarter of it.
        clock.advance(ttl * 0.25 + 2)
        assert store.seen_events(["e1"]) == set()

    # --- recent items ---------------------------------------------------------------------
    def test_recent_items_are_newest_first_without_repeats(self) -> None:
        store = self.store()
        store.apply(StateUpdate(recent={"u1": ["a", "b", "a", "c"]}))
        assert store.recent_items("u1") == ["c", "a", "b"]
        store.apply(StateUpdate(recent={"u1": ["b"], "u2": ["z"]}))
        assert store.recent_items("u1") == ["b", "c", "a"]
        assert store.recent_items("u1", n=2) == ["b", "c"]
        assert store.recent_items("u2") == ["z"]
        assert store.recent_items("nobody") == []

    def test_recent_items_keep_only_the_newest_recent_max(self) -> None:
        store = self.store(recent_max=3)
        store.apply(StateUpdate(recent={"u1": ["a", "b", "c", "d"]}))
        store.apply(StateUpdate(recent={"u1": ["e"]}))
        assert store.recent_items("u1", n=10) == ["e", "d", "c"]

    # --- popularity -----------------------------------------------------------------------
    def test_top_popular_ranks_by_weight_best_first(self) -> None:
        store = self.store(half_life_s=HOUR)
        store.apply(StateUpdate(popularity={ALL_ITEMS: {"a": 1.0, "b": 3.0, "c": 2.0}},
                                popularity_at=T0))
        top = store.top_popular(2)
        assert top.ids == ["b", "c"]
        np.testing.assert_allclose(top.scores, [3.0, 2.0])

    def test_popularity_halves_per_half_life_of_event_time(self) -> None:
        store = self.store(half_life_s=HOUR)
        store.apply(StateUpdate(popularity={ALL_ITEMS: {"old": 4.0}}, popularity_at=T0))
        store.apply(StateUpdate(popularity={ALL_ITEMS: {"new": 1.5}},
                                popularity_at=T0 + 2 * HOUR))
        got = store.popularity(["old", "new"]).as_dict()
        assert got == pytest.approx({"old": 1.0, "new": 1.5})
        assert store.top_popular(5).ids == ["new", "old"]

    def test_popularity_accumulates_weights_of_one_item(self) -> None:
        store = self.store(half_life_s=HOUR)
        store.apply(StateUpdate(popularity={ALL_ITEMS: {"a": 1.0}}, popularity_at=T0))
        store.apply(StateUpdate(popularity={ALL_ITEMS: {"a": 1.0}}, popularity_at=T0 + HOUR))
        assert store.popularity(["a"]).as_dict() == pytest.approx({"a": 1.5})

    def test_late_events_decay_from_their_own_time(self) -> None:
        store = self.store(half_life_s=HOUR)
        store.apply(StateUpdate(popularity={ALL_ITEMS: {"a": 1.0}}, popularity_at=T0 + HOUR))
        store.apply(StateUpdate(popularity={ALL_ITEMS: {"b": 1.0}}, popularity_at=T0))
        assert store.popularity(["a", "b"]).as_dict() == pytest.approx({"a": 1.0, "b": 0.5})

    @pytest.mark.parametrize("far", [253_402_214_400.0, 4_070_908_800.0])  # 9999-12-31, 2099
    def test_an_event_from_the_far_future_cannot_freeze_popularity(self, far: float) -> None:
        clock = FakeClock(T0)
        store = self.store(half_life_s=24 * HOUR, clock=clock, max_future_s=300.0)
        store.apply(StateUpdate(popularity={ALL_ITEMS: {"a": 1.0}, "co:a": {"x": 1.0}},
                                popularity_at=T0))
        store.apply(StateUpdate(popularity={ALL_ITEMS: {"bot": 1.0}, "co:a": {"bot": 1.0}},
                                popularity_at=far, last_event_ts=far))
        clock.advance(HOUR)  # later real events still count, at their own time
        store.apply(StateUpdate(popularity={ALL_ITEMS: {"b": 5.0, "c": 3.0}, "co:a": {"y": 4.0}},
                                popularity_at=T0 + HOUR, last_event_ts=T0 + HOUR))
        top = store.top_popular(4)
        assert top.ids == ["b", "c", "bot", "a"]
        np.testing.assert_allclose(top.scores[:2], [5.0, 3.0], rtol=0.01)  # not 0.0
        assert store.top_popular(3, scope="co:a").ids == ["y", "bot", "x"]
        last = store.last_event_ts()
        assert last is not None and last <= T0 + 300.0 + HOUR

    def test_popularity_leaves_out_unknown_items_and_keeps_scopes_apart(self) -> None:
        store = self.store(half_life_s=HOUR)
        store.apply(StateUpdate(
            popularity={ALL_ITEMS: {"a": 1.0, "b": 1.0}, "cat:toys": {"b": 5.0}},
            popularity_at=T0,
        ))
        assert store.popularity(["a", "zzz"]).ids == ["a"]
        assert store.popularity(["a", "b"], scope="cat:toys").as_dict() == pytest.approx(
            {"b": 5.0})
        assert store.top_popular(10, scope="cat:toys").ids == ["b"]
        assert len(store.top_popular(10, scope="cat:none")) == 0
        assert len(store.top_popular(0)) == 0

    def test_covisitation_scopes_keep_only_the_strongest_items(self) -> None:
        store = self.store(half_life_s=HOUR, covisit_max=3)
        weights = {f"i{n}": float(n) for n in range(1, 7)}
        store.apply(StateUpdate(popularity={"co:x": weights, "cat:big": weights},
                                popularity_at=T0))
        assert store.top_popular(10, scope="co:x").ids == ["i6", "i5", "i4"]
        assert len(store.top_popular(10, scope="cat:big")) == 6  # only co: scopes are trimmed

    def test_histories_accumulate_weights_per_user_and_item(self) -> None:
        store = self.store()
        store.apply(StateUpdate(history={"u1": {"a": 1.0, "b": 8.0}}))
        store.apply(StateUpdate(history={"u1": {"a": 2.0}, "u2": {"c": 0.5}}))
        assert store.get_histories(["u1", "u2", "nobody"]) == {
            "u1": {"a": 3.0, "b": 8.0}, "u2": {"c": 0.5}}

    def test_purchased_items_are_remembered_as_a_set(self) -> None:
        store = self.store()
        store.apply(StateUpdate(purchased={"u1": ["a", "b", "a"]}))
        store.apply(StateUpdate(purchased={"u1": ["c"]}))
        assert store.purchased_items("u1") == {"a", "b", "c"}
        assert store.purchased_items("nobody") == set()

    def test_rating_parameters_round_trip_and_unknown_ids_are_left_out(self) -> None:
        from core.ports import RatingParams

        store = self.store()
        assert store.get_rating_params(["u"], ["i"]) == RatingParams()
        vec = np.array([0.25, 1.0, -2.0], dtype=np.float32)
        store.apply(StateUpdate(rating=RatingParams(n=3, mean=3.5, users={"u": vec},
                                                    items={"i": vec * 2})))
        got = store.get_rating_params(["u", "x"], ["i", "y"])
        assert (got.n, got.mean) == (3, 3.5)
        assert list(got.users) == ["u"] and list(got.items) == ["i"]
        np.testing.assert_array_equal(got.items["i"], vec * 2)

    def test_impressions_are_remembered_until_they_expire(self) -> None:
        store = self.store()
        store.remember_impressions({"rec1": '{"a":[0,"content",{}]}', "rec2": "list 2",
                                    "empty": ""}, ttl_s=60)
        store.remember_impressions({}, ttl_s=60)  # nothing to write: no round trip, no error
        assert store.impressions("rec1") == '{"a":[0,"content",{}]}'
        assert store.impressions("rec2") == "list 2"
        assert store.impressions("empty") == ""
        assert store.impressions("unknown") is None

    def test_user_state_reads_everything_of_one_user_at_once(self) -> None:
        store = self.store()
        vec = np.array([1.0, 2.0], dtype=np.float32)
        store.apply(StateUpdate(recent={"u": ["a", "b"]}, purchased={"u": ["b"]},
                                profiles={"u": vec}, history={"u": {"a": 1.0}},
                                user_factors={"u": vec * 3}, factors_version="v"))
        state = store.user_state("u", 1, "v")
        assert state.recent == ["b"] and state.purchased == {"b"}
        assert state.history == {"a": 1.0}
        np.testing.assert_array_equal(state.profile, vec)
        np.testing.assert_array_equal(state.factors, vec * 3)
        assert store.user_state("u", 1, "v", history="never").history == {}
        assert store.user_state("u", 1, "v", history="without_factors").history == {}
        assert store.user_state("u", 1, "new", history="without_factors").history == {"a": 1.0}
        nobody = store.user_state("nobody", 5, "v")
        assert (nobody.recent, nobody.purchased, nobody.profile, nobody.factors,
                nobody.history) == ([], set(), None, None, {})

    def test_user_state_reads_the_items_co_visited_with_its_anchors(self) -> None:
        store = self.store()
        store.apply(StateUpdate(recent={"u": ["c", "b", "a"]}, popularity={
            "co:a": {"x": 1.0, "y": 3.0}, "co:ctx": {"z": 2.0}, "co:b": {"x": 5.0},
        }))
        state = store.user_state("u", 1, "v", covisit_n=1, anchors=["ctx"], recent_anchors=2)
        assert state.recent == ["a"]  # recent_n still bounds the recent list
        assert list(state.covisited) == ["ctx", "a", "b"]  # anchors, then the latest items
        assert state.covisited["a"].ids == ["y"]  # the strongest covisit_n of each
        assert state.covisited["ctx"].ids == ["z"] and state.covisited["b"].ids == ["x"]
        assert store.user_state("u", 5, "v").covisited == {}  # only when asked
        lonely = store.user_state("nobody", 5, "v", covisit_n=3, anchors=["ctx"],
                                  recent_anchors=3)
        assert list(lonely.covisited) == ["ctx"]

    @pytest.mark.parametrize(("skip", "n", "expected"), [
        ("nothing", 2, ["b", "p"]),
        ("seen", 2, ["p", "x"]),  # the anchors and the recent items returned (not "c")
        ("seen_and_purchased", 2, ["x", "c"]),  # the next strongest take their places
        ("seen_and_purchased", 5, ["x", "c", "y", "z"]),  # until the set ends
        ("seen_and_purchased", 1, ["x"]),  # read on past a first read of skipped items
    ])
    def test_user_state_leaves_what_it_is_told_to_skip_out_of_co_visited_lists(
            self, skip: CovisitSkip, n: int, expected: list[str]) -> None:
        store = self.store()
        store.apply(StateUpdate(recent={"u": ["c", "b", "a"]}, purchased={"u": ["p"]},
                                popularity={"co:a": {"b": 9.0, "p": 8.0, "x": 7.0, "c": 6.0,
                                                     "y": 5.0, "z": 4.0, "ctx": 3.5}}))
        state = store.user_state("u", 2, "v", covisit_n=n, anchors=["ctx"], recent_anchors=1,
                                 covisit_skip=skip)
        assert state.recent == ["a", "b"]
        assert state.covisited["a"].ids == expected

    def test_user_state_reads_on_past_many_skipped_co_visited_items(self) -> None:
        store = self.store()
        seen = [f"s{j:02d}" for j in range(30)]  # all linked to the anchor, above the rest
        links = {item: 100.0 - j for j, item in enumerate(seen)}
        store.apply(StateUpdate(recent={"u": [*seen, "a"]}, popularity={
            "co:a": {**links, "x": 2.0, "y": 1.0, "z": 0.5}}))
        state = store.user_state("u", 31, "v", covisit_n=2, recent_anchors=1,
                                 covisit_skip="seen")
        assert state.covisited["a"].ids == ["x", "y"]

    def test_new_items_histories_and_factors_are_kept(self) -> None:
        store = self.store()
        store.apply(StateUpdate(item_history={"new": {"u1": 1.0}}))
        store.apply(StateUpdate(item_history={"new": {"u1": 2.0, "u2": 8.0}},
                                item_factors={"new": np.ones(3, np.float32)},
                                factors_version="v1"))
        assert store.get_item_histories(["new", "old"]) == {"new": {"u1": 3.0, "u2": 8.0}}
        assert list(store.get_item_factors("v1")) == ["new"]
        assert store.get_item_factors("v2") == {}

    def test_blobs_are_replaced_whole(self) -> None:
        store = self.store()
        assert store.get_blob("m") is None
        store.apply(StateUpdate(blobs={"m": b"\x00one"}))
        store.apply(StateUpdate(blobs={"m": b"two"}))
        assert store.get_blob("m") == b"two"

    def test_user_factors_are_kept_per_model_version(self) -> None:
        store = self.store()
        vector = np.array([0.5, -1.0, 2.0], dtype=np.float32)
        store.apply(StateUpdate(user_factors={"u1": vector}, factors_version="v1"))
        got = store.get_user_factors(["u1", "u2"], "v1")
        assert list(got) == ["u1"] and got["u1"].dtype == np.float32
        np.testing.assert_array_equal(got["u1"], vector)
        assert store.get_user_factors(["u1"], "v2") == {}

    def test_batched_reads_equal_the_single_reads(self) -> None:
        store = self.store(half_life_s=HOUR)
        store.apply(StateUpdate(
            recent={"u1": ["a", "b"], "u2": ["c"]},
            popularity={ALL_ITEMS: {"a": 2.0, "b": 1.0}, "co:a": {"b": 1.0}},
            popularity_at=T0,
        ))
        assert store.recent_items_many(["u1", "u2", "nobody"], 1) == {
            "u1": ["b"], "u2": ["c"], "nobody": []}
        many = store.top_popular_many([ALL_ITEMS, "co:a", "co:zzz"], 5)
        assert many[ALL_ITEMS].as_dict() == pytest.approx(store.top_popular(5).as_dict())
        assert many["co:a"].ids == ["b"]
        assert len(many["co:zzz"]) == 0

    def test_popularity_survives_a_rebase_of_the_reference_time(self) -> None:
        # max_exponent=4: the 2nd and 3rd batches are 10 and 20 half-lives later -> rebases.
        hl = 10.0
        store = self.store(half_life_s=hl, max_exponent=4.0)
        batches = [(0.0, {"a": 512.0, "b": 2048.0}), (100.0, {"c": 1.0, "a": 1.0}),
                   (200.0, {"d": 3.0}), (205.0, {"c": 1.0})]
        for at, weights in batches:
            store.apply(StateUpdate(popularity={ALL_ITEMS: weights}, popularity_at=T0 + at))
        now = 205.0
        expected: dict[str, float] = {}
        for at, weights in batches:
            for item, w in weights.items():
                expected[item] = expected.get(item, 0.0) + w * 2 ** ((at - now) / hl)
        got = store.popularity(list(expected)).as_dict()
        assert got == pytest.approx(expected, rel=1e-9)
        assert store.top_popular(4).ids == sorted(expected, key=lambda i: -expected[i])

    def test_popularity_of_a_replay_far_in_the_past_decays_correctly(self) -> None:
        store = self.store(half_life_s=7 * 24 * HOUR)
        dec_2010, week = 1_291_161_600.0, 7 * 24 * HOUR
        for i in range(30):  # 30 weekly batches: several rebases at the default exponent
            store.apply(StateUpdate(popularity={ALL_ITEMS: {f"w{i}": 1.0}},
                                    popularity_at=dec_2010 + i * week))
        got = store.popularity(["w0", "w29"]).as_dict()
        assert got["w29"] == pytest.approx(1.0)
        assert got["w0"] == pytest.approx(2.0**-29)

    # --- profiles, counters, freshness ----------------------------------------------------
    def test_profiles_round_trip_as_float32_and_replace_old_ones(self) -> None:
        store = self.store()
        store.apply(StateUpdate(profiles={"u1": np.array([0.5, -1.25, 3.0], np.float32),
                                          "u2": np.ones(2, dtype=np.float32)}))
        store.apply(StateUpdate(profiles={"u2": np.array([2.0, 0.0], dtype=np.float32)}))
        got = store.get_profiles(["u1", "u2", "nobody"])
        assert set(got) == {"u1", "u2"}
        assert got["u1"].dtype == np.float32
        np.testing.assert_array_equal(got["u1"], np.array([0.5, -1.25, 3.0], np.float32))
        np.testing.assert_array_equal(got["u2"], np.array([2.0, 0.0], np.float32))

    def test_counters_add_up_across_updates(self) -> None:
        store = self.store()
        store.apply(StateUpdate(counters={"events.view": 3, "dead_letters": 1}))
        store.apply(StateUpdate(counters={"events.view": 2}))
        assert store.counters() == {"events.view": 5, "dead_letters": 1}

    # --- user state versions (conditional requests) ------------------------------------------
    def test_user_version_moves_with_every_update_of_the_users_own_state(self) -> None:
        store = self.store()
        assert store.user_version("u1") == 0
        store.apply(StateUpdate(event_ids=["e1"], recent={"u1": ["a"]}))
        assert store.user_version("u1") == 1
        store.apply(StateUpdate(purchased={"u1": ["a"]}))
        store.apply(StateUpdate(history={"u1": {"a": 1.0}}))
        store.apply(StateUpdate(profiles={"u1": np.ones(3, np.float32)}))
        store.apply(StateUpdate(user_factors={"u1": np.ones(3, np.float32)},
                                factors_version="v1"))
        assert store.user_version("u1") == 5
        # One update touching several parts of a user's state moves it once.
        store.apply(StateUpdate(recent={"u1": ["b"]}, history={"u1": {"b": 1.0}}))
        assert store.user_version("u1") == 6

    def test_user_version_ignores_other_users_and_global_state(self) -> None:
        store = self.store(half_life_s=HOUR)
        store.apply(StateUpdate(recent={"u1": ["a"]}))
        store.apply(StateUpdate(recent={"u2": ["a"]}, popularity={ALL_ITEMS: {"a": 1.0}},
                                popularity_at=T0, counters={"c": 1}, blobs={"b": b"x"}))
        store.apply(StateUpdate(popularity={"co:a": {"b": 1.0}}, popularity_at=T0))
        assert store.user_version("u1") == 1
        assert store.user_version("u2") == 1
        store.clear()
        assert store.user_version("u1") == 0

    def test_user_state_carries_the_version_of_the_same_read(self) -> None:
        store = self.store()
        assert store.user_state("u1", 5, "").version == 0
        store.apply(StateUpdate(recent={"u1": ["a"]}))
        store.apply(StateUpdate(history={"u1": {"a": 1.0}}))
        assert store.user_state("u1", 5, "").version == store.user_version("u1") == 2

    # --- read-your-writes: a shopper's own events before the consumers apply them --------
    def test_an_accepted_event_shows_in_the_next_read_before_it_is_applied(self) -> None:
        store = self.store()
        store.apply(StateUpdate(recent={"u1": ["a", "b"]}))
        before = store.user_version("u1")
        store.note_own_events({"u1": ["c", "a"]})
        # The next read reflects it: newest first, without repeats, and a new version.
        state = store.user_state("u1", 5, "")
        assert state.recent == ["a", "c", "b"]
        assert state.version == store.user_version("u1") > before
        assert store.user_state("u1", 2, "").recent == ["a", "c"]  # recent_n still bounds
        # Only the recommendation read: the learners read what was applied.
        assert store.recent_items_many(["u1"])["u1"] == ["b", "a"]
        assert store.user_state("u2", 5, "").recent == []
        assert store.user_version("u2") == 0

    def test_noted_items_anchor_co_visitation_and_are_skipped_as_seen(self) -> None:
        store = self.store()
        store.apply(StateUpdate(popularity={"co:c": {"x": 2.0, "a": 1.0}}))
        store.note_own_events({"u1": ["a", "c"]})
        state = store.user_state("u1", 5, "", covisit_n=2, recent_anchors=1,
                                 covisit_skip="seen")
        assert state.covisited["c"].ids == ["x"]

    def test_applying_a_noted_event_leaves_its_item_where_the_batch_puts_it(self) -> None:
        store = self.store()
        store.note_own_events({"u1": ["a"]})
        store.apply(StateUpdate(recent={"u1": ["a"]}))  # the consumer applied the click
        store.apply(StateUpdate(recent={"u1": ["b"]}))  # then a later event
        # "a" is no longer held at the front as a noted item: "b" is the newest.
        assert store.user_state("u1", 5, "").recent == ["b", "a"]

    def test_last_event_ts_is_the_newest_applied_event_time(self) -> None:
        store = self.store()
        store.apply(StateUpdate(counters={"x": 1}, last_event_ts=T0 + 10))
        store.apply(StateUpdate(counters={"x": 1}, last_event_ts=T0))
        assert store.last_event_ts() == pytest.approx(T0 + 10)

    def test_clear_forgets_everything(self) -> None:
        store = self.store(half_life_s=HOUR)
        store.apply(StateUpdate(
            event_ids=["e1"], recent={"u1": ["a"]}, popularity={ALL_ITEMS: {"a": 1.0}},
            popularity_at=T0, profiles={"u1": np.ones(3, np.float32)}, counters={"c": 1},
            last_event_ts=T0,
        ))
        store.note_own_events({"u2": ["b"]})
        store.clear()
        assert store.user_state("u2", 5, "").recent == []
        assert store.seen_events(["e1"]) == set()
        assert store.recent_items("u1") == []
        assert len(store.top_popular(5)) == 0
        assert store.get_profiles(["u1"]) == {}
        assert store.counters() == {}
        assert store.last_event_ts() is None
        # Still usable, with a fresh reference time.
        store.apply(StateUpdate(popularity={ALL_ITEMS: {"b": 2.0}}, popularity_at=T0 + 1))
        assert store.popularity(["b"]).as_dict() == pytest.approx({"b": 2.0})
        assert math.isfinite(store.top_popular(1).scores[0])
