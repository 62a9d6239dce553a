"""StateStore contract on the in-memory fake and on a real Redis, plus Redis specifics."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest
import redis

from core.errors import ConfigurationError, TemporaryFailure
from core.ports import ALL_ITEMS, StateUpdate
from core.settings import Settings
from infra.embedded import free_port
from infra.memory_store import InMemoryStateStore
from infra.redis_store import RedisStateStore, redis_client
from tests.contracts.state_store import T0, FakeClock, StateStoreContract


class TestInMemoryStateStore(StateStoreContract):
    def make_store(self, **options: Any) -> InMemoryStateStore:
        return InMemoryStateStore(**options)


@pytest.mark.integration
class TestRedisStateStore(StateStoreContract):
    @pytest.fixture(autouse=True)
    def _redis(self, redis_client: redis.Redis, redis_prefix: str) -> None:
        self.client = redis_client
        self.prefix = redis_prefix

    def make_store(self, **options: Any) -> RedisStateStore:
        return RedisStateStore(self.client, prefix=self.prefix, **options)

    def _pop_ref(self) -> float:
        raw = self.client.hget(self.prefix + "meta", "pop_ref")
        assert raw is not None
        return float(raw)

    def test_clear_deletes_only_keys_under_its_prefix(self) -> None:
        store = self.store()
        store.apply(StateUpdate(counters={"c": 1}, recent={"u": ["a"]}))
        neighbour = RedisStateStore(self.client, prefix=self.prefix + "n:")
        neighbour.apply(StateUpdate(counters={"c": 7}))
        self.client.set("foreign-" + self.prefix, b"1")
        try:
            # Glob characters in a prefix are literal: "<prefix>*" owns no key here.
            RedisStateStore(self.client, prefix=self.prefix + "*").clear()
            assert neighbour.counters() == {"c": 7}
            neighbour.clear()
            assert neighbour.counters() == {}
            assert store.counters() == {"c": 1}
            assert self.client.get("foreign-" + self.prefix) == b"1"
        finally:
            self.client.delete("foreign-" + self.prefix)

    def test_dedupe_keys_expire_after_the_window(self) -> None:
        ttl = 3600
        store = self.store(dedupe_ttl_s=ttl)
        store.apply(StateUpdate(event_ids=["e1"]))
        keys = list(self.client.scan_iter(match=self.prefix + "seen:*"))
        assert len(keys) == 1
        assert ttl <= self.client.ttl(keys[0]) <= ttl * 1.125 + 1

    def test_rebase_moves_the_stored_reference_time(self) -> None:
        store = self.store(half_life_s=10.0, max_exponent=4.0)
        store.apply(StateUpdate(popularity={ALL_ITEMS: {"a": 1.0}}, popularity_at=T0))
        assert self._pop_ref() == T0
        store.apply(StateUpdate(popularity={ALL_ITEMS: {"b": 1.0}}, popularity_at=T0 + 30))
        assert self._pop_ref() == T0
        store.apply(StateUpdate(popularity={ALL_ITEMS: {"c": 1.0}}, popularity_at=T0 + 50))
        assert self._pop_ref() == T0 + 50
        # Stored scores were rescaled to the new reference: c was added at scale 1.
        stored = dict(self.client.zrange(self.prefix + "pop:all", 0, -1, withscores=True))
        assert stored[b"c"] == pytest.approx(1.0)
        assert stored[b"a"] == pytest.approx(2.0**-5)

    def test_every_popularity_set_is_listed_for_the_rebase(self) -> None:
        # The rebase rescales the sets listed in meta:scopes: every set a batch created
        # must be listed, whether later batches touch it whole, in part or not at all.
        store = self.store(half_life_s=10.0, max_exponent=4.0)
        store.apply(StateUpdate(popularity={"co:a": {"b": 1.0, "c": 1.0}}, popularity_at=T0))
        store.apply(StateUpdate(popularity={"co:a": {"b": 1.0}, "co:b": {"a": 1.0},
                                            "cat:x": {"a": 2.0, "b": 1.0}},
                                popularity_at=T0 + 1))
        store.apply(StateUpdate(popularity={"co:a": {"b": 1.0, "c": 1.0, "d": 1.0},
                                            "co:c": {"a": 4.0}}, popularity_at=T0 + 2))
        scopes = {s.decode() for s in self.client.smembers(self.prefix + "meta:scopes")}
        assert scopes == {"co:a", "co:b", "co:c", "cat:x"}
        before = {s: store.top_popular(10, s) for s in sorted(scopes)}
        store.apply(StateUpdate(popularity={ALL_ITEMS: {"z": 1.0}}, popularity_at=T0 + 60))
        assert self._pop_ref() == T0 + 60
        for scope, scored in before.items():  # rescaled to the new reference, same reads
            after = store.top_popular(10, scope)
            assert after.ids == scored.ids, scope
            np.testing.assert_allclose(after.scores, scored.scores * 2.0**-5.8, rtol=1e-12)

    def test_apply_is_one_transaction_whose_size_does_not_grow_with_the_batch(self) -> None:
        store = self.store()
        calls: list[int] = []
        real_pipeline = self.client.pipeline

        def counting_pipeline(transaction: bool = True, shard_hint: Any = None) -> Any:
            pipe = real_pipeline(transaction=transaction, shard_hint=shard_hint)
            real_execute = pipe.execute

            def execute(raise_on_error: bool = True) -> Any:
                calls.append(len(pipe.command_stack))
                assert pipe.transaction
                return real_execute(raise_on_error)

            pipe.execute = execute  # type: ignore[method-assign]
            return pipe

        def update(n: int) -> StateUpdate:
            return StateUpdate(
                event_ids=[f"e{n}-{i}" for i in range(n)],
                recent={f"u{i}": ["a", "b"] for i in range(n)},
                popularity={ALL_ITEMS: {f"i{i}": 1.0 for i in range(n)}}, popularity_at=T0,
                profiles={"u1": np.ones(4, np.float32)}, counters={"view": n},
                last_event_ts=T0,
            )

        self.client.pipeline = counting_pipeline  # type: ignore[method-assign]
        try:
            store.apply(update(10))
            store.apply(update(1000))
        finally:
            del self.client.pipeline
        # One transaction each, and the command count does not grow with the batch.
        assert len(calls) == 2 and calls[0] == calls[1]
        assert store.counters() == {"view": 1010}

    def test_applies_batches_of_500_events_quickly(self) -> None:
        store = self.store()
        rng = np.random.default_rng(0)
        n_batches, size = 20, 500
        updates = []
        for b in range(n_batches):
            users = rng.integers(0, 2000, size)
            items = rng.integers(0, 3000, size)
            recent: dict[str, list[str]] = {}
            pop: dict[str, float] = {}
            for u, i in zip(users, items, strict=True):
                recent.setdefault(f"u{u}", []).append(f"i{i}")
                pop[f"i{i}"] = pop.get(f"i{i}", 0.0) + 1.0
            updates.append(StateUpdate(
                event_ids=[f"b{b}-{k}" for k in range(size)], recent=recent,
                popularity={ALL_ITEMS: pop, "cat:x": pop}, popularity_at=T0 + b,
                counters={"events.view": size}, last_event_ts=T0 + b,
            ))
        started = time.perf_counter()
        for update in updates:
            store.seen_events(update.event_ids)
            store.apply(update)
        rate = n_batches * size / (time.perf_counter() - started)
        print(f"redis state store: {rate:,.0f} events/s (seen_events + apply, batches of 500)")
        assert store.counters() == {"events.view": n_batches * size}
        assert rate > 8_000

    def test_from_settings_uses_the_settings_limits(self, tmp_settings: Settings) -> None:
        settings = tmp_settings.model_copy(update={"recent_items_max": 2})
        store = RedisStateStore.from_settings(self.client, settings, prefix=self.prefix)
        assert store.half_life_s == settings.popularity_half_life_s
        assert store.skiplist_min == settings.popularity_skiplist_min
        store.apply(StateUpdate(recent={"u": ["a", "b", "c"]}))
        assert store.recent_items("u") == ["c", "b"]


def test_redis_store_refuses_a_decoding_client() -> None:
    client = redis.Redis(port=free_port(), decode_responses=True)
    with pytest.raises(ConfigurationError, match="decode_responses"):
        RedisStateStore(client)


def test_redis_store_turns_connection_errors_into_temporary_failures() -> None:
    client = redis_client(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.5)
    store = RedisStateStore(client, prefix="down:")
    assert store.ping() is False
    with pytest.raises(TemporaryFailure, match="Redis apply failed"):
        store.apply(StateUpdate(counters={"c": 1}))
    with pytest.raises(TemporaryFailure):
        store.seen_events(["e1"])
    with pytest.raises(TemporaryFailure):
        store.top_popular(3)


def test_in_memory_store_forgets_expired_ids_when_it_purges() -> None:
    clock = FakeClock()
    store = InMemoryStateStore(dedupe_ttl_s=60, clock=clock)
    store.apply(StateUpdate(event_ids=[f"old{i}" for i in range(2000)]))
    clock.advance(61)
    store.apply(StateUpdate(event_ids=["new"]))
    assert store.seen_events(["old1", "new"]) == {"new"}
    assert len(store._seen) == 1  # purged, not merely hidden


@pytest.mark.integration
class TestRedisMatchesMemory:
    """The Redis apply script does what the in-memory store does, on real processor output."""

    @pytest.fixture(autouse=True)
    def _redis(self, redis_client: redis.Redis, redis_prefix: str) -> None:
        self.client = redis_client
        self.prefix = redis_prefix

    # skiplist_min 4: every set of 4 members or more is converted to a skiplist (and
    # converted again after each rebase, whose ZUNIONSTORE makes compact sets): what the
    # readers see must not change.
    @pytest.mark.parametrize("skiplist_min", [0, 4])
    def test_a_processed_stream_leaves_redis_in_the_memory_stores_state(
        self, skiplist_min: int
    ) -> None:
        from online_models.processor import StreamProcessor
        from online_models.profile import ContentProfile
        from online_models.rating_mf import OnlineRatingMF
        from tests.fakes import CATEGORIES, toy_catalog, toy_index
        from tests.test_processor import mixed_stream

        # A short half-life forces rebases; small caps make the trims work.
        options: dict[str, Any] = {"half_life_s": 300.0, "recent_max": 6, "covisit_max": 5}
        memory = InMemoryStateStore(**options)
        store = RedisStateStore(self.client, prefix=self.prefix, skiplist_min=skiplist_min,
                                **options)
        catalog = toy_catalog()
        index = toy_index(catalog)
        categories = {i: it.category for i, it in catalog.items()}
        events = mixed_stream(1500, 40, seed=4)
        for target in (memory, store):
            processor = StreamProcessor(
                target, index, categories, half_life_s=300.0, profile=ContentProfile(0.3),
                covisit_window=3, rating_model=OnlineRatingMF(n_factors=3))
            for start in range(0, len(events), 97):
                processor.apply(events[start:start + 97])
        assert float(self.client.hget(self.prefix + "meta", "pop_ref") or 0) > 1_000_000
        users = [f"u{n}" for n in range(40)]
        items = [*catalog, "not-in-catalog"]
        assert store.counters() == memory.counters()
        assert store.recent_items_many(users, 50) == memory.recent_items_many(users, 50)
        for scope in ["all", *(f"cat:{c}" for c in CATEGORIES), *(f"co:{i}" for i in items)]:
            got, want = store.top_popular(50, scope), memory.top_popular(50, scope)
            assert got.ids == want.ids, scope
            np.testing.assert_allclose(got.scores, want.scores, rtol=1e-9)
        assert store.get_histories(users).keys() == memory.get_histories(users).keys()
        for user, history in memory.get_histories(users).items():
            assert store.get_histories([user])[user] == pytest.approx(history, rel=1e-12)
        assert all(store.purchased_items(u) == memory.purchased_items(u) for u in users)
        mine, theirs = store.get_profiles(users), memory.get_profiles(users)
        assert mine.keys() == theirs.keys()
        for user in mine:
            np.testing.assert_array_equal(mine[user], theirs[user])
        got_r = store.get_rating_params(users, items)
        want_r = memory.get_rating_params(users, items)
        assert (got_r.n, got_r.mean) == (want_r.n, want_r.mean)
        assert got_r.users.keys() == want_r.users.keys()
        assert got_r.items.keys() == want_r.items.keys()
        ids = [e.event_id for e in events]
        assert store.seen_events(ids) == memory.seen_events(ids) == set(ids)
        assert store.last_event_ts() == memory.last_event_ts()
        for user in users:  # what a recommendation reads: co-visited items of recent ones
            got_s = store.user_state(user, 6, "", covisit_n=4, recent_anchors=3)
            want_s = memory.user_state(user, 6, "", covisit_n=4, recent_anchors=3)
            assert got_s.covisited.keys() == want_s.covisited.keys()
            for anchor, scored in want_s.covisited.items():
                assert got_s.covisited[anchor].ids == scored.ids
                np.testing.assert_allclose(got_s.covisited[anchor].scores, scored.scores,
                                           rtol=1e-9)
        encodings = {self.client.object("encoding", key) for key in
                     self.client.scan_iter(match=f"{self.prefix}pop:co:*")}
        assert (b"skiplist" in encodings) == (skiplist_min > 0), encodings

    def test_big_popularity_sets_become_skiplists_with_the_same_top_n(self) -> None:
        # The default threshold: a full co-visitation set (100 members) is a skiplist,
        # trimmed like a compact one; small sets stay compact.
        store = RedisStateStore(self.client, prefix=self.prefix, covisit_max=100)
        plain = RedisStateStore(self.client, prefix=self.prefix + "plain:", covisit_max=100,
                                skiplist_min=0)
        rng = np.random.default_rng(3)
        for batch in range(20):
            partners = {f"i{n}": float(w) for n, w in
                        enumerate(rng.exponential(size=40)) if rng.random() < 0.5}
            update = StateUpdate(popularity={"co:big": {f"{k}-{batch % 7}": w for k, w in
                                                        partners.items()},
                                             "co:small": {"a": 1.0, "b": 2.0}},
                                 popularity_at=T0 + batch)
            store.apply(update)
            plain.apply(update)
        try:
            assert self.client.object("encoding", self.prefix + "pop:co:big") == b"skiplist"
            assert self.client.object("encoding", self.prefix + "pop:co:small") != b"skiplist"
            assert self.client.object("encoding",
                                      self.prefix + "plain:pop:co:big") != b"skiplist"
            assert self.client.zcard(self.prefix + "pop:co:big") == 100
            for n in (1, 20, 100, 150):
                got, want = store.top_popular(n, "co:big"), plain.top_popular(n, "co:big")
                assert got.ids == want.ids
                np.testing.assert_array_equal(got.scores, want.scores)
        finally:
            plain.clear()

    def test_one_update_bigger_than_a_lua_unpack_is_applied_whole(self) -> None:
        # The script passes long lists to Redis a slice at a time (Lua's C stack is ~8000).
        store = RedisStateStore(self.client, prefix=self.prefix, recent_max=6000)
        ids = [f"e{i}" for i in range(9000)]
        items = [f"i{i}" for i in range(9000)]
        store.apply(StateUpdate(
            event_ids=ids, recent={"u": items}, purchased={"u": items},
            popularity={ALL_ITEMS: dict.fromkeys(items, 1.0)}, popularity_at=T0,
            profiles={f"p{i}": np.full(4, i, np.float32) for i in range(9000)},
        ))
        assert store.seen_events([*ids, "new"]) == set(ids)
        assert store.recent_items("u", 6000) == items[::-1][:6000]
        assert store.purchased_items("u") == set(items)
        assert len(store.top_popular(10_000)) == 9000
        profiles = store.get_profiles(["p0", "p8999"])
        assert profiles["p8999"].tolist() == [8999.0] * 4 and profiles["p0"].tolist() == [0.0] * 4
