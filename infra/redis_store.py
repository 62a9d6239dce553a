"""Redis StateStore: online state shared by consumers (writers) and the API (reader).

The same code serves one Redis and Redis Cluster (:mod:`infra.redis_cluster` tells
them apart). Every key carries a hash tag (:mod:`infra.redis_keys`): a user's keys
share one slot, an item's keys another, the few global keys a third.

Writes. :meth:`RedisStateStore.apply` groups a batch's work by the node holding each
key and runs one Lua script per group (:data:`infra.redis_scripts.APPLY_LUA`). On one
Redis that is one group: the whole batch, its event ids included, in one atomic call,
so a consumer restarted from its last commit double-counts nothing. On a cluster the
batch first records its event ids and all its groups in a journal on the global slot
(one atomic call), then applies each group atomically under a marker that makes a
second application of that group a no-op, then drops the journal entry. A crash or a
failover between groups leaves the entry behind; the next call of this process (or,
after ``journal_grace_s``, of any) replays it, so every group is applied exactly once.

Reads for a request take one call per node involved: a user's state in one script on
the user's node (with its co-visited lists too on one Redis; on a cluster those follow
in one script per node holding them), popularity reads in one pipeline.

============================  =========  ==============================================
key (``<p>`` = prefix)        type       content
============================  =========  ==============================================
``<p>recent:{u:<user>}``      list       items, newest first, distinct, ``recent_max``
``<p>hist:{u:<user>}``        hash       item -> accumulated implicit weight
``<p>bought:{u:<user>}``      set        items the user purchased
``<p>uvec:{u:<user>}``        hash       ``p`` profile, ``r`` rating params,
                                         ``f:<version>`` ALS vector (float32 bytes)
``<p>uver:{u:<user>}``        string     the user's state version (INCR by every apply
                                         that changes the user's own state)
``<p>ihist:{i:<item>}``       hash       user -> weight, for items the model never saw
``<p>ivec:{i:<item>}``        hash       ``r`` rating params (float32 bytes)
``<p>co:{i:<item>}``          zset       co-visited item -> decayed weight, trimmed
``<p>pop:{p:<scope>:<k>}``    zset       shard ``k`` of scope ``all`` / ``cat:<name>``
``<zset key>:ref``            string     time the set's scores are relative to
``<p>ifactors:{v:<version>}`` hash       item -> float32 bytes (folded-in new items)
``<p>meta:{g}``               hash       ``pop_now``, ``last_event_ts``
``<p>counters:{g}``           hash       name -> integer
``<p>blobs:{g}``              hash       name -> small model kept whole
``<p>rating:{g}``             hash       online rating model: ``n``, ``mean``
``<p>seen:{g}:<bucket>``      set        event ids applied in a time bucket, expiring
``<p>journal:{g}``            hash       cluster updates not yet applied everywhere
``<p>applied:{tag}:<id>``     string     a journal entry's group applied (expiring)
``<p>shown:<rec_id>``         string     what a served list showed, encoded (expires)
============================  =========  ==============================================

Popularity is decayed lazily: a set's stored score is ``w * 2**((t - ref) / half_life)``
for its own reference time ``ref``; a read scales it by ``2**((ref - pop_now) /
half_life)``. The script rescales a set alone (``ZUNIONSTORE ... WEIGHTS``) when a batch's
time passes its reference by ``max_exponent`` half-lives, so no step touches every set.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from itertools import chain
from typing import TYPE_CHECKING, Any

import msgpack
import numpy as np
import redis
from redis.exceptions import BusyLoadingError, ClusterError, ResponseError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from core.errors import ConfigurationError, TemporaryFailure
from core.ports import (
    ALL_ITEMS,
    CovisitSkip,
    HistoryMode,
    RatingParams,
    StateUpdate,
    UserState,
    Vector,
    covisit_anchors,
    covisit_scope,
)
from core.types import ScoredItems
from infra.memory_store import (
    DEFAULT_COVISIT_MAX,
    DEFAULT_MAX_EXPONENT,
    DEFAULT_MAX_FUTURE_S,
    decay_scale,
    unique_newest_first,
)
from infra.redis_cluster import REDIS_TIMEOUT_S, RedisClient, Router, cross_slot, redis_client
from infra.redis_keys import PROFILE_FIELD, RATING_FIELD, KeySpace, factors_field
from infra.redis_scripts import (
    APPLY_LUA,
    COVISIT_LUA,
    JOURNAL_LUA,
    NOTE_OWN_LUA,
    SEEN_LUA,
    USER_LUA,
    USER_STATE_LUA,
)

if TYPE_CHECKING:
    from core.settings import Settings

__all__ = ["DEFAULT_SKIPLIST_MIN", "REDIS_TIMEOUT_S", "RedisStateStore", "redis_client"]

#: Dedupe buckets per TTL: ``seen_events`` checks this many sets (plus one).
_DEDUPE_BUCKETS = 8
#: Popularity sets of this many members or more are kept as skiplists (see APPLY_LUA).
DEFAULT_SKIPLIST_MIN = 64
#: Popularity shards per scope when the setting says "auto" (0), on a cluster.
CLUSTER_POPULARITY_SHARDS = 8
#: How long a cluster group's "applied" marker lives: one key per node and batch, so not the
#: whole dedupe window; an entry is replayed within ``journal_grace_s`` of any writer running.
_APPLIED_TTL_S = 24 * 3600
#: Replies that mean "the cluster is moving under us": retry once the slot map is read again.
_MOVED = ("non local key", "MOVED", "ASK", "CLUSTERDOWN", "TRYAGAIN")


@contextmanager
def redis_failures(what: str, router: Router | None = None) -> Iterator[None]:
    """Outages (and, on a cluster, failovers in progress) as :class:`TemporaryFailure`."""
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError, BusyLoadingError, ClusterError,
            TryAgainError) as exc:
        if router is not None:
            _refresh_quietly(router)
        raise TemporaryFailure(f"Redis {what} failed: {exc}") from exc
    except ResponseError as exc:
        if router is None or not router.cluster or not any(m in str(exc) for m in _MOVED):
            raise
        _refresh_quietly(router)
        raise TemporaryFailure(f"Redis {what} failed while the cluster moved: {exc}") from exc


def _refresh_quietly(router: Router) -> None:
    # The cluster may still be electing a new master: the next try reads the map again.
    with suppress(redis.RedisError):
        router.refresh()


def _scored(flat: list[bytes], scale: float) -> ScoredItems:
    """A flat ``[item, score, item, score, ...]`` reply as scored items, scores times ``scale``."""
    ids = [item.decode() for item in flat[0::2]]
    return ScoredItems(ids, np.array(flat[1::2], dtype=np.float64) * scale)


def _scored_pairs(pairs: list[tuple[bytes, float]], scale: float) -> ScoredItems:
    """redis-py's ``(item, score)`` pairs as scored items, scores times ``scale``."""
    return ScoredItems([item.decode() for item, _ in pairs],
                       np.array([score for _, score in pairs], dtype=np.float64) * scale)


def _merged(parts: list[ScoredItems], n: int) -> ScoredItems:
    """The ``n`` best of several shards, ties in reverse item order (as ZREVRANGE)."""
    if len(parts) == 1:
        return parts[0]
    pairs = sorted(((float(s), i) for p in parts for i, s in zip(p.ids, p.scores, strict=True)),
                   reverse=True)[:n]
    return ScoredItems.from_pairs([(i, s) for s, i in pairs])


def _vector(raw: Any) -> Vector | None:
    return None if raw is None else np.frombuffer(raw, dtype=np.float32).copy()


def _flat_hash(flat: list[bytes]) -> dict[str, float]:
    return {flat[j].decode(): float(flat[j + 1]) for j in range(0, len(flat), 2)}


@dataclass
class _Group:
    """One node's part of a batch, as APPLY_LUA's payload sections (see the script)."""

    recent: list[Any] = field(default_factory=list)
    hist: list[Any] = field(default_factory=list)
    bought: list[Any] = field(default_factory=list)
    raw: list[Any] = field(default_factory=list)
    values: list[bytes] = field(default_factory=list)
    incr: list[Any] = field(default_factory=list)
    #: State-version keys of the group's users whose own state the batch changes.
    versions: list[str] = field(default_factory=list)
    pop: list[Any] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    #: A key of the group: where its "applied" marker lives (same slot).
    key: str = ""


class RedisStateStore:
    """A :class:`core.ports.StateStore` on Redis or Redis Cluster (see the module doc).

    Parameters
    ----------
    client
        A client returning bytes (``infra.redis_cluster.redis_client``): ``redis.Redis``
        or ``redis.cluster.RedisCluster``.
    prefix
        Prefix of every key; :meth:`clear` deletes only these.
    recent_max
        Recent items kept per user.
    dedupe_ttl_s
        Applied event ids are remembered at least this long (at most an eighth more).
    half_life_s
        Half-life of popularity weights, in event time.
    max_exponent
        Rescale a popularity set when ``(t - ref) / half_life_s`` passes this.
    clock
        Wall clock for the dedupe buckets and the journal.
    max_future_s
        Popularity's reference times (and ``last_event_ts``) never pass ``clock() +
        max_future_s`` (see :class:`infra.memory_store.InMemoryStateStore`).
    covisit_max
        Items kept per co-visitation scope (``co:<item>``): the lowest are trimmed.
    skiplist_min
        A popularity set (co-visitation included) of this many members or more is kept
        in Redis's skiplist form, cheaper to update than the compact form Redis uses up
        to 128 members, for more memory; 0: Redis's own choice. Same contents either way.
    popularity_shards
        Sub-keys per popularity scope (0: 1 on one Redis, 8 on a cluster).
    journal_grace_s
        A cluster journal entry older than this is replayed by any store (a writer died).
    """

    def __init__(
        self,
        client: RedisClient,
        *,
        prefix: str = "sr:",
        recent_max: int = 50,
        dedupe_ttl_s: float = 7 * 24 * 3600,
        half_life_s: float = 7 * 24 * 3600,
        max_exponent: float = DEFAULT_MAX_EXPONENT,
        clock: Callable[[], float] = time.time,
        covisit_max: int = DEFAULT_COVISIT_MAX,
        skiplist_min: int = DEFAULT_SKIPLIST_MIN,
        popularity_shards: int = 0,
        journal_grace_s: float = 30.0,
        max_future_s: float = DEFAULT_MAX_FUTURE_S,
    ) -> None:
        if half_life_s <= 0 or dedupe_ttl_s <= 0 or recent_max < 1 or covisit_max < 1:
            raise ValueError(
                "half_life_s and dedupe_ttl_s must be > 0, recent_max and covisit_max >= 1"
            )
        if skiplist_min < 0 or popularity_shards < 0:
            raise ValueError("skiplist_min and popularity_shards must be >= 0")
        if client.get_connection_kwargs().get("decode_responses"):
            # Profiles are raw float32 bytes; a decoding client would mangle them.
            raise ConfigurationError("RedisStateStore needs a client with decode_responses=False")
        self.client = client
        self.router = Router(client)
        self.prefix = prefix
        self.recent_max = recent_max
        self.dedupe_ttl_s = dedupe_ttl_s
        self.half_life_s = half_life_s
        self.max_exponent = max_exponent
        self.clock = clock
        self.max_future_s = max_future_s
        self.covisit_max = covisit_max
        self.skiplist_min = skiplist_min
        self.popularity_shards = popularity_shards or (
            CLUSTER_POPULARITY_SHARDS if self.router.cluster else 1)
        self.journal_grace_s = journal_grace_s
        self.keys = KeySpace(prefix, popularity_shards=self.popularity_shards)
        self._bucket_s = max(1.0, dedupe_ttl_s / _DEDUPE_BUCKETS)
        # Script objects run EVALSHA and reload the script on NOSCRIPT (a restarted Redis);
        # each declares its keys, all of one slot, so a cluster client routes it.
        self._seen_script = client.register_script(SEEN_LUA)
        self._apply_script = client.register_script(APPLY_LUA)
        self._user_state = client.register_script(
            USER_LUA if self.router.cluster else USER_STATE_LUA)
        self._note_script = client.register_script(NOTE_OWN_LUA)
        self._note_cross_slot = cross_slot(NOTE_OWN_LUA)
        self._apply_cross_slot = cross_slot(APPLY_LUA)
        self._covisit_cross_slot = cross_slot(COVISIT_LUA)
        self._journal_cross_slot = cross_slot(JOURNAL_LUA)
        #: Journal entries this store wrote and has not seen applied everywhere.
        self._pending: set[str] = set()
        self._journal_checked = 0.0

    @classmethod
    def from_settings(
        cls, client: RedisClient, settings: Settings, *, prefix: str | None = None
    ) -> RedisStateStore:
        """A store with the settings' limits; ``prefix`` defaults to ``settings.redis_prefix``."""
        return cls(
            client,
            prefix=settings.redis_prefix if prefix is None else prefix,
            recent_max=settings.recent_items_max,
            dedupe_ttl_s=settings.dedupe_ttl_s,
            half_life_s=settings.popularity_half_life_s,
            covisit_max=settings.covisit_max,
            skiplist_min=settings.popularity_skiplist_min,
            popularity_shards=settings.popularity_shards,
            max_future_s=settings.event_max_future_s,
        )

    def __repr__(self) -> str:
        return (f"RedisStateStore(prefix={self.prefix!r}, recent_max={self.recent_max}, "
                f"dedupe_ttl_s={self.dedupe_ttl_s}, half_life_s={self.half_life_s}, "
                f"cluster={self.router.cluster}, popularity_shards={self.popularity_shards})")

    def _failures(self, what: str) -> Any:
        return redis_failures(what, self.router)

    def _live_buckets(self, now: float) -> range:
        first = math.floor((now - self.dedupe_ttl_s) / self._bucket_s)
        return range(first, math.floor(now / self._bucket_s) + 1)

    def _read_scale(self, ref: Any, now: Any) -> float:
        if not ref or not now:
            return 1.0
        return decay_scale(float(ref), float(now), self.half_life_s)

    # --- dedupe log and batch writes ------------------------------------------------------
    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except redis.RedisError:
            return False

    def seen_events(self, event_ids: Sequence[str]) -> set[str]:
        ids = list(dict.fromkeys(event_ids))
        if not ids:
            return set()
        self._finish_journal()  # ids a journal holds count as seen: apply their work first
        keys = [self.keys.seen(b) for b in self._live_buckets(self.clock())]
        with self._failures("seen_events"):
            found: list[bytes] = self._seen_script(keys=keys, args=[msgpack.packb(ids)])
        return {i.decode() for i in found}

    def apply(self, update: StateUpdate) -> None:
        if not self.router.cluster:
            now = self.clock()
            groups = self._groups(update, now, with_ids=True)
            if groups:
                (group,) = groups.values()
                with self._failures("apply"):
                    self._apply_script(keys=[], args=self._payload(group, update, now))
            return
        self._finish_journal()
        update_id = uuid.uuid4().hex
        now = self.clock()
        groups = self._groups(update, now, with_ids=False)
        parts = [(g.key, *self._payload(g, update, now, update_id)) for g in groups.values()]
        if not (parts or update.event_ids):
            return
        bucket = math.floor(now / self._bucket_s)
        record = msgpack.packb([now, parts])
        with self._failures("apply"):
            self.router.run_at(
                self.keys.journal, self._journal_cross_slot, self.keys.seen(bucket),
                self.keys.journal, update_id, record, msgpack.packb(update.event_ids),
                self._seen_ttl(now, bucket), replicated=True)
        self._pending.add(update_id)
        self._replay(update_id, parts)

    def _seen_ttl(self, now: float, bucket: int) -> int:
        # The bucket lives until its last member is older than the TTL.
        return math.ceil((bucket + 1) * self._bucket_s + self.dedupe_ttl_s - now)

    def _replay(self, update_id: str, parts: Iterable[Sequence[Any]]) -> None:
        """Apply each group of a journal entry (again: a group applied before is a no-op)."""
        with self._failures("apply"):
            for key, payload, values in parts:
                key = key.decode() if isinstance(key, bytes) else key
                self.router.run_at(key, self._apply_cross_slot, payload, values,
                                   replicated=True)
            self.client.hdel(self.keys.journal, update_id)
        self._pending.discard(update_id)

    def _finish_journal(self) -> None:
        """Replay this store's unfinished journal entries, and every stale one now and then."""
        if not self.router.cluster:
            return
        now = self.clock()
        stale_check = now - self._journal_checked > self.journal_grace_s / 2
        if not (self._pending or stale_check):
            return
        with self._failures("journal"):
            entries: dict[Any, Any] = self.client.hgetall(self.keys.journal)
        self._journal_checked = now
        for raw_id, record in entries.items():
            update_id = raw_id.decode()
            written, parts = msgpack.unpackb(record)
            if update_id in self._pending or now - written > self.journal_grace_s:
                self._replay(update_id, parts)
        self._pending &= {i.decode() for i in entries}

    def _clamped(self, event_time: float, now: float) -> float:
        """``event_time``, at most ``max_future_s`` past the clock: an event stamped far in
        the future must not move decay state where later events cannot follow."""
        return min(event_time, now + self.max_future_s)

    def _groups(self, update: StateUpdate, now: float, *,
                with_ids: bool) -> dict[str, _Group]:
        """The batch's work per node (one group on a single Redis), as script sections."""
        keys, groups = self.keys, dict[str, _Group]()

        def at(key: str) -> _Group:
            name = self.router.group_of(key)
            group = groups.get(name)
            if group is None:
                group = groups[name] = _Group(key=key)
            return group

        for user, items in update.recent.items():
            newest = unique_newest_first(items)[: self.recent_max] if len(items) > 1 else items
            if newest:
                key = keys.recent(user)
                at(key).recent.extend((key, keys.own_events(user), len(newest),
                                       *reversed(newest)))
        for owners, key_of in ((update.history, keys.history),
                               (update.item_history, keys.item_history)):
            for owner, weights in owners.items():
                if weights:
                    key = key_of(owner)
                    at(key).hist.extend((key, len(weights), *chain.from_iterable(weights.items())))
        for user, items in update.purchased.items():
            if items:
                key, distinct = keys.purchased(user), list(dict.fromkeys(items))
                at(key).bought.extend((key, len(distinct), *distinct))
        for key, name, value in self._raw_values(update):
            group = at(key)
            group.raw.extend((key, name, len(value)))
            group.values.append(value)
        for user in sorted(update.users()):  # in the user's group: moved atomically with it
            key = keys.user_version(user)
            at(key).versions.append(key)
        for name, delta in update.counters.items():
            at(keys.counters).incr.extend((keys.counters, name, int(delta)))
        for scope, weights in update.popularity.items():
            cap = self.covisit_max if scope.startswith("co:") else 0
            homes = keys.popularity_keys(scope)
            if len(homes) == 1:  # one set (co-visitation, or one shard): no per-item routing
                shards = {homes[0]: list(chain.from_iterable(weights.items()))}
            else:
                shards = {}
                for item, weight in weights.items():
                    shards.setdefault(keys.popularity_key(scope, item), []).extend((item, weight))
            for key, pairs in shards.items():
                if pairs:
                    at(key).pop.extend((key, cap, len(pairs) // 2, *pairs))
        meta: dict[str, Any] = {}
        if update.last_event_ts is not None:  # absent, not nil: the script tests p[field]
            meta["last_event_ts"] = self._clamped(update.last_event_ts, now)
        if update.popularity:
            meta["pop_now"] = self._clamped(update.popularity_at, now)
        if with_ids and update.event_ids:
            bucket = math.floor(now / self._bucket_s)
            meta.update(ids=update.event_ids, seen_key=keys.seen(bucket),
                        seen_ttl=self._seen_ttl(now, bucket))
        if meta:
            at(keys.meta).meta.update(meta, meta=keys.meta)
        return groups

    def _raw_values(self, update: StateUpdate) -> Iterator[tuple[str, str, bytes]]:
        """(hash key, field, bytes) of every vector and blob the update writes."""
        keys = self.keys

        def f32(vector: Vector) -> bytes:
            return np.asarray(vector, dtype=np.float32).tobytes()

        for user, vector in update.profiles.items():
            yield keys.user_vectors(user), PROFILE_FIELD, f32(vector)
        ffield = factors_field(update.factors_version)
        for user, vector in update.user_factors.items():
            yield keys.user_vectors(user), ffield, f32(vector)
        item_factors = keys.item_factors(update.factors_version)
        for item, vector in update.item_factors.items():
            yield item_factors, item, f32(vector)
        if update.rating is not None:
            for user, vector in update.rating.users.items():
                yield keys.user_vectors(user), RATING_FIELD, f32(vector)
            for item, vector in update.rating.items.items():
                yield keys.item_vectors(item), RATING_FIELD, f32(vector)
            yield keys.rating_meta, "n", repr(update.rating.n).encode()
            yield keys.rating_meta, "mean", repr(update.rating.mean).encode()
        for name, blob in update.blobs.items():
            yield keys.blobs, name, bytes(blob)

    def _payload(self, group: _Group, update: StateUpdate, now: float,
                 update_id: str | None = None) -> tuple[bytes, bytes]:
        """APPLY_LUA's two arguments for one group (marked applied once with ``update_id``)."""
        payload: dict[str, Any] = {
            # Clamped: no event moves a set's reference time past what later ones can reach.
            "t": self._clamped(update.popularity_at, now),
            "hl": self.half_life_s, "max_exp": self.max_exponent,
            "recent_max": self.recent_max, "skiplist_min": self.skiplist_min,
            # "recent_own", not "recent": a journal written before the own-events key
            # existed still replays with its old section (see APPLY_LUA).
            "recent_own": group.recent, "hist": group.hist, "bought": group.bought,
            "raw": group.raw, "incr": group.incr, "uver": group.versions, "pop": group.pop,
            **group.meta,
        }
        if update_id is not None:
            payload.update(applied=self.keys.applied(group.key, update_id),
                           applied_ttl=math.ceil(min(self.dedupe_ttl_s, _APPLIED_TTL_S)))
        return msgpack.packb(payload), b"".join(group.values)

    # --- per-user state -------------------------------------------------------------------
    def recent_items(self, user_id: str, n: int = 50) -> list[str]:
        if n <= 0:
            return []
        with self._failures("recent_items"):
            raw: list[Any] = self.client.lrange(self.keys.recent(user_id), 0, n - 1)
        return [item.decode() for item in raw]

    def user_version(self, user_id: str) -> int:
        with self._failures("user_version"):
            raw: Any = self.client.get(self.keys.user_version(user_id))
        return 0 if raw is None else int(raw)

    def user_state(
        self, user_id: str, recent_n: int, factors_version: str, *,
        covisit_n: int = 0, anchors: Sequence[str] = (), recent_anchors: int = 0,
        history: HistoryMode = "always", covisit_skip: CovisitSkip = "nothing",
    ) -> UserState:
        keys = self.keys
        co_head, co_tail = keys.covisit("\0").split("\0")
        args: list[str | int] = [
            factors_field(factors_version), max(recent_n, 0), max(covisit_n, 0),
            max(recent_anchors, 0), history, covisit_skip, co_head, co_tail, keys.meta,
            *anchors]
        user_keys = [keys.recent(user_id), keys.purchased(user_id),
                     keys.user_vectors(user_id), keys.history(user_id),
                     keys.user_version(user_id), keys.own_events(user_id)]
        with self._failures("user_state"):
            reply: list[Any] = self._user_state(keys=user_keys, args=[msgpack.packb(args)])
            recent, bought, profile, factors, weights, version = reply[:6]
            if self.router.cluster and covisit_n > 0:
                reply += self._covisited_per_node(
                    [i.decode() for i in recent], {i.decode() for i in bought}, recent_n,
                    covisit_n, anchors, recent_anchors, covisit_skip)
        covisited: dict[str, ScoredItems] = {}
        if len(reply) > 6:
            now, lists = reply[6], reply[7]
            covisited = {lists[j].decode(): _scored(lists[j + 2],
                                                    self._read_scale(lists[j + 1], now))
                         for j in range(0, len(lists), 3)}
        return UserState(
            recent=[i.decode() for i in recent][: max(recent_n, 0)],
            purchased={i.decode() for i in bought},
            profile=_vector(profile),
            factors=_vector(factors),
            history=_flat_hash(weights),
            covisited=covisited,
            version=int(version),
        )

    def note_own_events(self, items_by_user: Mapping[str, Sequence[str]],
                        ttl_s: float = 120.0) -> None:
        """See :class:`core.ports.OwnEvents`: one script per node (:data:`NOTE_OWN_LUA`)."""
        per_node: dict[str, tuple[str, list[Any]]] = {}
        for user, items in items_by_user.items():
            if items:
                own = self.keys.own_events(user)
                # Oldest first, distinct, at most what the list keeps.
                newest = unique_newest_first(items)[: self.recent_max]
                per_node.setdefault(self.router.group_of(own), (own, []))[1].extend(
                    (own, self.keys.user_version(user), len(newest), *reversed(newest)))
        ttl_ms = max(1, math.ceil(ttl_s * 1000))
        with self._failures("note_own_events"):
            for own, users in per_node.values():
                query = msgpack.packb({"ttl_ms": ttl_ms, "max": self.recent_max, "users": users})
                if self.router.cluster:
                    self.router.run_at(own, self._note_cross_slot, query)
                else:
                    self._note_script(keys=[], args=[query])

    def _covisited_per_node(
        self, recent: list[str], bought: set[str], recent_n: int, covisit_n: int,
        anchors: Sequence[str], recent_anchors: int, covisit_skip: CovisitSkip,
    ) -> list[Any]:
        """USER_STATE_LUA's co-visited part on a cluster: one script per node involved."""
        linked = covisit_anchors(anchors, recent[: max(recent_anchors, 0)])
        skip: set[str] = set()
        if covisit_skip != "nothing":
            skip = {*anchors, *recent[: max(recent_n, 0)]}
        if covisit_skip == "seen_and_purchased":
            skip |= bought
        # node -> (a key there, its anchors); the meta node reads pop_now as well.
        meta_node = self.router.group_of(self.keys.meta)
        per_node: dict[str, tuple[str, list[str]]] = {meta_node: (self.keys.meta, [])}
        for anchor in linked:
            key = self.keys.covisit(anchor)
            per_node.setdefault(self.router.group_of(key), (key, []))[1].append(anchor)
        co_head, co_tail = self.keys.covisit("\0").split("\0")
        now: Any = b""
        found: dict[bytes, list[Any]] = {}
        for node, (key, mine) in per_node.items():
            query = {"head": co_head, "tail": co_tail, "anchors": mine, "skip": sorted(skip),
                     "co_n": covisit_n, "meta": self.keys.meta if node == meta_node else ""}
            node_now, lists = self.router.run_at(key, self._covisit_cross_slot,
                                                 msgpack.packb(query))
            now = node_now or now
            found.update({lists[j]: lists[j:j + 3] for j in range(0, len(lists), 3)})
        # In the anchors' order, as one Redis returns them.
        return [now, list(chain.from_iterable(found[a.encode()] for a in linked))]

    def recent_items_many(self, user_ids: Sequence[str], n: int = 50) -> dict[str, list[str]]:
        ids = list(dict.fromkeys(user_ids))
        if n <= 0 or not ids:
            return {u: [] for u in ids}
        with self._failures("recent_items_many"):
            lists = self._pipelined(("LRANGE", self.keys.recent(u), 0, n - 1) for u in ids)
        return {u: [i.decode() for i in items] for u, items in zip(ids, lists, strict=True)}

    def _pipelined(self, commands: Iterable[Sequence[Any]]) -> list[Any]:
        """Raw replies of independent commands, one round trip per node involved."""
        pipe = self.client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        return list(pipe.execute())

    def get_histories(self, user_ids: Sequence[str]) -> dict[str, dict[str, float]]:
        return self._hashes(user_ids, self.keys.history, "get_histories")

    def _hashes(self, owners: Sequence[str], key_of: Callable[[str], str],
                what: str) -> dict[str, dict[str, float]]:
        ids = list(dict.fromkeys(owners))
        if not ids:
            return {}
        with self._failures(what):
            raw = self._pipelined(("HGETALL", key_of(i)) for i in ids)
        return {owner: {k.decode(): float(v) for k, v in flat.items()}
                for owner, flat in zip(ids, raw, strict=True) if flat}

    def purchased_items(self, user_id: str) -> set[str]:
        with self._failures("purchased_items"):
            raw: set[Any] = self.client.smembers(self.keys.purchased(user_id))
        return {item.decode() for item in raw}

    # --- decayed counters and item neighbours ---------------------------------------------
    def top_popular_many(self, scopes: Sequence[str], n: int) -> dict[str, ScoredItems]:
        wanted = list(dict.fromkeys(scopes))
        if n <= 0 or not wanted:
            return {scope: ScoredItems.empty() for scope in wanted}
        per_scope = [self.keys.popularity_keys(scope) for scope in wanted]
        with self._failures("top_popular_many"):
            pipe = self.client.pipeline(transaction=False)
            pipe.hget(self.keys.meta, "pop_now")
            for key in chain.from_iterable(per_scope):
                pipe.zrevrange(key, 0, n - 1, withscores=True)
                pipe.get(self.keys.reference(key))
            now, *replies = pipe.execute()
        out, at = {}, 0
        for scope, keys in zip(wanted, per_scope, strict=True):
            parts = [_scored_pairs(replies[at + 2 * j],
                                   self._read_scale(replies[at + 2 * j + 1], now))
                     for j in range(len(keys))]
            at += 2 * len(keys)
            out[scope] = _merged(parts, n)
        return out

    def top_popular(self, n: int, scope: str = ALL_ITEMS) -> ScoredItems:
        if n <= 0:
            return ScoredItems.empty()
        return self.top_popular_many([scope], n)[scope]

    def popularity(self, item_ids: Sequence[str], scope: str = ALL_ITEMS) -> ScoredItems:
        ids = list(dict.fromkeys(item_ids))
        if not ids:
            return ScoredItems.empty()
        per_key: dict[str, list[str]] = {}
        for item in ids:
            per_key.setdefault(self.keys.popularity_key(scope, item), []).append(item)
        commands: list[Sequence[Any]] = [("HGET", self.keys.meta, "pop_now")]
        for key, items in per_key.items():
            commands += [("ZMSCORE", key, *items), ("GET", self.keys.reference(key))]
        with self._failures("popularity"):
            now, *replies = self._pipelined(commands)
        pairs: list[tuple[str, float]] = []
        for j, items in enumerate(per_key.values()):
            scale = self._read_scale(replies[2 * j + 1], now)
            pairs += [(i, float(s) * scale)
                      for i, s in zip(items, replies[2 * j], strict=True) if s is not None]
        return ScoredItems.from_pairs(pairs)

    def covisited(self, item_ids: Sequence[str], n: int) -> dict[str, ScoredItems]:
        found = self.top_popular_many([covisit_scope(i) for i in item_ids], n)
        return {i: found[covisit_scope(i)] for i in dict.fromkeys(item_ids)}

    def get_item_histories(self, item_ids: Sequence[str]) -> dict[str, dict[str, float]]:
        return self._hashes(item_ids, self.keys.item_history, "get_item_histories")

    # --- vector tables --------------------------------------------------------------------
    def _user_vectors(self, user_ids: Sequence[str], name: str,
                      what: str) -> dict[str, Vector]:
        ids = list(dict.fromkeys(user_ids))
        if not ids:
            return {}
        with self._failures(what):
            raw = self._pipelined(("HGET", self.keys.user_vectors(u), name) for u in ids)
        return {u: v for u, blob in zip(ids, raw, strict=True)
                if (v := _vector(blob)) is not None}

    def get_profiles(self, user_ids: Sequence[str]) -> dict[str, Vector]:
        return self._user_vectors(user_ids, PROFILE_FIELD, "get_profiles")

    def get_user_factors(self, user_ids: Sequence[str], version: str) -> dict[str, Vector]:
        return self._user_vectors(user_ids, factors_field(version), "get_user_factors")

    def get_item_factors(self, version: str) -> dict[str, Vector]:
        with self._failures("get_item_factors"):
            raw: dict[Any, Any] = self.client.hgetall(self.keys.item_factors(version))
        return {k.decode(): np.frombuffer(v, dtype=np.float32).copy() for k, v in raw.items()}

    def get_rating_params(self, user_ids: Sequence[str], item_ids: Sequence[str]) -> RatingParams:
        users, items = list(dict.fromkeys(user_ids)), list(dict.fromkeys(item_ids))
        keys = self.keys
        with self._failures("get_rating_params"):
            meta, *raw = self._pipelined([
                ("HMGET", keys.rating_meta, "n", "mean"),
                *(("HGET", keys.user_vectors(u), RATING_FIELD) for u in users),
                *(("HGET", keys.item_vectors(i), RATING_FIELD) for i in items)])

        def vectors(ids: list[str], blobs: list[Any]) -> dict[str, Vector]:
            return {k: v for k, b in zip(ids, blobs, strict=True)
                    if (v := _vector(b)) is not None}

        return RatingParams(
            float(meta[0] or 0.0), float(meta[1] or 0.0),
            vectors(users, raw[: len(users)]), vectors(items, raw[len(users):]),
        )

    # --- blobs, counters, meta ------------------------------------------------------------
    def remember_impressions(self, shown: Mapping[str, str], ttl_s: int) -> None:
        if not shown:
            return
        with self._failures("remember_impressions"):
            self._pipelined(("SET", self.keys.shown(rec_id), encoded, "EX", ttl_s)
                            for rec_id, encoded in shown.items())

    def get_blob(self, name: str) -> bytes | None:
        with self._failures("get_blob"):
            raw: Any = self.client.hget(self.keys.blobs, name)
        return None if raw is None else bytes(raw)

    def impressions(self, rec_id: str) -> str | None:
        with self._failures("impressions"):
            raw: Any = self.client.get(self.keys.shown(rec_id))
        return None if raw is None else bytes(raw).decode()

    def counters(self) -> dict[str, int]:
        with self._failures("counters"):
            raw: dict[Any, Any] = self.client.hgetall(self.keys.counters)
        return {name.decode(): int(value) for name, value in raw.items()}

    def last_event_ts(self) -> float | None:
        with self._failures("last_event_ts"):
            raw = self.client.hget(self.keys.meta, "last_event_ts")
        return None if raw is None else float(raw)

    def clear(self) -> None:
        """Delete every key under this store's prefix (SCAN + UNLINK; never FLUSHDB)."""
        pattern = _glob_escape(self.prefix) + "*"
        with self._failures("clear"):
            batch: list[bytes] = []
            for key in self.client.scan_iter(match=pattern, count=1000):
                batch.append(key)
                if len(batch) >= 1000:
                    self.client.unlink(*batch)
                    batch.clear()
            if batch:
                self.client.unlink(*batch)
        self._pending.clear()


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
