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
from infra.redis_keys import KeySpace, hash_tag
from infra.redis_store import RedisStateStore, redis_client
from tests.contracts.state_store import T0, FakeClock, StateStoreContract


class TestInMemoryStateStore(StateStoreContract):
    def make_store(self, **options: Any) -> InMemoryStateStore:
        return InMemoryStateStore(**options)

    def test_noted_own_events_are_forgotten_after_their_ttl(self) -> None:
        clock = FakeClock()
        store = self.store(clock=clock)
        store.note_own_events({"u": ["a"]}, ttl_s=60.0)
        clock.advance(59.0)
        assert store.user_state("u", 5, "").recent == ["a"]
        clock.advance(2.0)  # never applied (a dead-lettered event): no longer shown
        assert store.user_state("u", 5, "").recent == []


@pytest.mark.integration
class TestRedisStateStore(StateStoreContract):
    @pytest.fixture(autouse=True)
    def _redis(self, redis_client: redis.Redis, redis_prefix: str) -> None:
        self.client = redis_client
        self.prefix = redis_prefix

    def make_store(self, **options: Any) -> RedisStateStore:
        return RedisStateStore(self.client, prefix=self.prefix, **options)

    def _pop_ref(self, store: RedisStateStore, scope: str = ALL_ITEMS, item: str = "a") -> float:
        """The reference time of the popularity set of ``scope`` holding ``item``."""
        raw = self.client.get(store.keys.reference(store.keys.popularity_key(scope, item)))
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

    def test_a_batch_journaled_in_the_format_before_own_events_still_applies(self) -> None:
        # A cluster journal written by the previous version replays with this script.
        import msgpack

        store = self.store()
        old = {"t": T0, "hl": 3600.0, "max_exp": 30.0, "recent_max": 50, "skiplist_min": 0,
               "recent": [store.keys.recent("u"), 2, "a", "b"], "hist": [], "bought": [],
               "raw": [], "incr": [], "uver": [], "pop": []}
        store._apply_script(keys=[], args=[msgpack.packb(old), b""])
        assert store.recent_items("u") == ["b", "a"]

    def test_noted_own_events_expire_with_their_ttl(self) -> None:
        store = self.store()
        store.note_own_events({"u": ["a"]}, ttl_s=60.0)
        assert 0 < self.client.pttl(store.keys.own_events("u")) <= 60_000

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
        assert self._pop_ref(store) == T0
        store.apply(StateUpdate(popularity={ALL_ITEMS: {"b": 1.0}}, popularity_at=T0 + 30))
        assert self._pop_ref(store) == T0
        store.apply(StateUpdate(popularity={ALL_ITEMS: {"c": 1.0}}, popularity_at=T0 + 50))
        assert self._pop_ref(store) == T0 + 50
        # Stored scores were rescaled to the new reference: c was added at scale 1.
        key = store.keys.popularity_key(ALL_ITEMS, "a")
        stored = dict(self.client.zrange(key, 0, -1, withscores=True))
        assert stored[b"c"] == pytest.approx(1.0)
        assert stored[b"a"] == pytest.approx(2.0**-5)

    def test_each_popularity_set_is_rescaled_alone_and_reads_stay_the_same(self) -> None:
        # A set's scores are relative to its own reference time: a batch rescales only the
        # sets it writes to (no step touches every set, which a cluster could not do at
        # once), and every read still sees the same decayed weights.
        store = self.store(half_life_s=10.0, max_exponent=4.0)
        store.apply(StateUpdate(popularity={"co:a": {"b": 1.0, "c": 1.0}}, popularity_at=T0))
        store.apply(StateUpdate(popularity={"co:a": {"b": 1.0}, "co:b": {"a": 1.0},
                                            "cat:x": {"a": 2.0, "b": 1.0}},
                                popularity_at=T0 + 1))
        scopes = ["co:a", "co:b", "cat:x"]
        before = {s: store.top_popular(10, s) for s in scopes}
        store.apply(StateUpdate(popularity={"co:a": {"z": 1.0}}, popularity_at=T0 + 60))
        assert self._pop_ref(store, "co:a") == T0 + 60
        assert self._pop_ref(store, "co:b") == T0 + 1  # untouched: still its old reference
        for scope, scored in before.items():  # decayed to the newest time, same order
            after = store.top_popular(10, scope)
            kept = [i for i in after.ids if i != "z"]
            assert kept == scored.ids, scope
            np.testing.assert_allclose([s for i, s in zip(after.ids, after.scores, strict=True)
                                        if i != "z"], scored.scores * 2.0**-5.9, rtol=1e-12)

    def test_apply_and_a_request_are_one_script_call_each_on_one_redis(self) -> None:
        store = self.store()
        sent: list[str] = []
        real_execute = self.client.execute_command

        def counting(*args: Any, **options: Any) -> Any:
            sent.append(str(args[0]))
            return real_execute(*args, **options)

        def update(n: int) -> StateUpdate:
            return StateUpdate(
                event_ids=[f"e{n}-{i}" for i in range(n)],
                recent={f"u{i}": ["a", "b"] for i in range(n)},
                popularity={ALL_ITEMS: {f"i{i}": 1.0 for i in range(n)},
                            **{f"co:i{i}": {"a": 1.0} for i in range(n)}}, popularity_at=T0,
                profiles={"u1": np.ones(4, np.float32)}, counters={"view": n},
                blobs={"model": b"\x00\x01"}, last_event_ts=T0,
            )

        self.client.execute_command = counting  # type: ignore[method-assign]
        try:
            store.apply(update(10))
            store.apply(update(1000))
            assert sent == ["EVALSHA", "EVALSHA"]
            sent.clear()
            state = store.user_state("u1", 10, "v1", covisit_n=5, recent_anchors=3)
            assert sent == ["EVALSHA"]
        finally:
            del self.client.execute_command
        assert store.counters() == {"view": 1010}
        assert state.recent == ["b", "a"] and state.covisited.keys() == {"b", "a"}

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
        all_items = store.keys.popularity_keys(ALL_ITEMS)
        assert all(float(self.client.get(store.keys.reference(k)) or 0) > 1_000_000
                   for k in all_items if self.client.exists(k))
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
                     self.client.scan_iter(match=f"{self.prefix}co:*", _type="zset")}
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
            big, small = store.keys.covisit("big"), store.keys.covisit("small")
            assert self.client.object("encoding", big) == b"skiplist"
            assert self.client.object("encoding", small) != b"skiplist"
            assert self.client.object("encoding", plain.keys.covisit("big")) != b"skiplist"
            assert self.client.zcard(big) == 100
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


def test_a_users_keys_share_one_slot_and_an_items_keys_another() -> None:
    keys = KeySpace("sr:", popularity_shards=8)
    user = {hash_tag(k) for k in (keys.recent("u1"), keys.history("u1"), keys.purchased("u1"),
                                  keys.user_vectors("u1"))}
    item = {hash_tag(k) for k in (keys.covisit("i1"), keys.item_history("i1"),
                                  keys.item_vectors("i1"),
                                  keys.reference(keys.covisit("i1")))}
    assert user == {"{u:u1}"} and item == {"{i:i1}"}
    # Popularity of a scope is spread over its shards, each item always in the same one.
    shards = keys.popularity_keys(ALL_ITEMS)
    assert len({hash_tag(k) for k in shards}) == 8
    homes = {keys.popularity_key(ALL_ITEMS, f"i{n}") for n in range(200)}
    assert homes == set(shards)
    assert keys.popularity_key(ALL_ITEMS, "i7") == keys.popularity_key(ALL_ITEMS, "i7")
    with pytest.raises(ValueError, match="hash tags"):
        KeySpace("sr:{x}:")


def _wide_update(n: int = 300) -> StateUpdate:
    """A batch whose keys land on every node of a 3-master cluster."""
    return StateUpdate(
        event_ids=[f"w{i}" for i in range(n)],
        recent={f"u{i}": [f"i{i}", f"i{i + 1}"] for i in range(n)},
        history={f"u{i}": {f"i{i}": 1.0} for i in range(n)},
        purchased={f"u{i}": [f"i{i}"] for i in range(0, n, 5)},
        popularity={ALL_ITEMS: {f"i{i}": 1.0 + i % 3 for i in range(n)},
                    **{f"co:i{i}": {f"i{i + 1}": 1.0} for i in range(n)}},
        popularity_at=T0, profiles={f"u{i}": np.full(3, i, np.float32) for i in range(n)},
        counters={"events.view": n}, last_event_ts=T0, blobs={"blender": b"\x00\x01"},
    )


def _assert_same_state(store: Any, want: InMemoryStateStore, n: int = 300) -> None:
    users, items = [f"u{i}" for i in range(n)], [f"i{i}" for i in range(n)]
    assert store.counters() == want.counters()
    assert store.recent_items_many(users, 10) == want.recent_items_many(users, 10)
    assert store.get_histories(users) == want.get_histories(users)
    assert all(store.purchased_items(u) == want.purchased_items(u) for u in users[::5])
    got, ref = store.top_popular(50), want.top_popular(50)
    assert got.ids == ref.ids
    np.testing.assert_allclose(got.scores, ref.scores, rtol=1e-12)
    assert store.covisited(items, 5).keys() == want.covisited(items, 5).keys()
    for item, scored in want.covisited(items, 5).items():
        assert store.covisited([item], 5)[item].ids == scored.ids
    assert store.get_profiles(users).keys() == want.get_profiles(users).keys()
    assert store.get_blob("blender") == want.get_blob("blender")
    assert store.last_event_ts() == want.last_event_ts()


@pytest.mark.integration
class TestRedisClusterStateStore(StateStoreContract):
    """The same contract on a real 3+3 Redis Cluster, and what only a cluster has."""

    @pytest.fixture(autouse=True)
    def _cluster(self, cluster_client: Any, cluster_prefix: str) -> None:
        self.client = cluster_client
        self.prefix = cluster_prefix

    def make_store(self, **options: Any) -> RedisStateStore:
        return RedisStateStore(self.client, prefix=self.prefix, **options)

    def test_the_cluster_is_detected_and_popularity_is_sharded(self) -> None:
        store = self.store()
        assert store.router.cluster and store.popularity_shards == 8
        groups = store._groups(_wide_update(), store.clock(), with_ids=False)
        assert len(groups) == 3  # one per master

    def test_what_a_failover_raises_is_a_temporary_failure_and_nothing_else_is(self) -> None:
        # The consumer retries a batch on TemporaryFailure: every error a cluster raises
        # while a master is replaced must become one, and only those.
        from redis.exceptions import (
            ClusterDownError,
            MasterDownError,
            ResponseError,
            TryAgainError,
        )

        from infra.redis_store import redis_failures

        router = self.store().router
        moving = [redis.ConnectionError("gone"), redis.TimeoutError("slow"),
                  ClusterDownError("The cluster is down"), MasterDownError("master down"),
                  TryAgainError("TRYAGAIN"),
                  ResponseError("Script attempted to access a non local key in a cluster node")]
        for error in moving:
            with pytest.raises(TemporaryFailure), redis_failures("apply", router):
                raise error
        with pytest.raises(ResponseError, match="WRONGTYPE"), redis_failures("apply", router):
            raise ResponseError("WRONGTYPE Operation against a key holding the wrong kind")

    def _crash_after_first_group(self, store: RedisStateStore) -> None:
        real_run_at = store.router.run_at
        calls: list[str] = []

        def run_at(key: str, script: str, *args: Any, **options: Any) -> Any:
            calls.append(key)
            if len(calls) == 3:  # the journal, one group, then the node dies
                raise redis.ConnectionError("the node died")
            return real_run_at(key, script, *args, **options)

        store.router.run_at = run_at  # type: ignore[method-assign]
        try:
            with pytest.raises(TemporaryFailure):
                store.apply(_wide_update())
        finally:
            del store.router.run_at
        assert len(calls) == 3

    def test_a_crash_between_groups_then_the_retry_applies_every_group_once(self) -> None:
        store = self.store()
        self._crash_after_first_group(store)
        # The consumer's retry asks which events were applied: all of them (the journal
        # holds their work), and asking finished the journal first.
        update = _wide_update()
        assert store.seen_events(update.event_ids) == set(update.event_ids)
        assert self.client.hgetall(store.keys.journal) == {}
        want = InMemoryStateStore()
        want.apply(update)
        _assert_same_state(store, want)

    def test_another_writer_finishes_a_dead_writers_journal_once(self) -> None:
        dead = self.store()
        self._crash_after_first_group(dead)
        other = RedisStateStore(self.client, prefix=self.prefix, journal_grace_s=0.0)
        other.seen_events(["anything"])  # a stale entry: replayed, its applied group skipped
        dead.seen_events(["anything"])  # the dead writer's own retry finds nothing left
        want = InMemoryStateStore()
        want.apply(_wide_update())
        _assert_same_state(other, want)

    def test_a_request_reads_in_one_call_per_node(self) -> None:
        store = self.store()
        store.apply(_wide_update())
        nodes: list[str] = []
        real_run_at = store.router.run_at

        def run_at(key: str, script: str, *args: Any, **options: Any) -> Any:
            nodes.append(store.router.group_of(key))
            return real_run_at(key, script, *args, **options)

        store.router.run_at = run_at  # type: ignore[method-assign]
        try:
            anchors = [f"i{i}" for i in range(40)]  # co-visitation sets on every node
            state = store.user_state("u3", 10, "", covisit_n=3, anchors=anchors,
                                     recent_anchors=2)
        finally:
            del store.router.run_at
        assert sorted(nodes) == sorted(set(nodes)) and len(nodes) == 3
        assert state.recent == ["i4", "i3"] and state.profile is not None
        assert state.covisited["i7"].ids == ["i8"]


@pytest.mark.integration
class TestRedisClusterMatchesMemory(TestRedisMatchesMemory):
    """The Redis-versus-memory checks again, on the cluster (popularity in 8 shards)."""

    @pytest.fixture(autouse=True)
    def _redis(self, cluster_client: Any, cluster_prefix: str) -> None:  # type: ignore[override]
        self.client = cluster_client
        self.prefix = cluster_prefix
