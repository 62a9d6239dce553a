"""Redis StateStore: online state shared by consumers (writers) and the API (reader).

One :meth:`RedisStateStore.apply` is one MULTI/EXEC transaction sent in one
round trip, so a batch is applied whole or not at all and a consumer restarted
from its last commit double-counts nothing (its event ids are in the same
transaction). Keys, all under ``prefix``:

============================  =========  ==============================================
key                           type       content
============================  =========  ==============================================
``recent:<user>``             list       items, newest first, distinct, ``recent_max``
``pop:<scope>``               zset       item -> ``w * 2**((t - ref) / half_life)``;
                                         scope ``co:<item>`` = co-visitation, trimmed
``meta``                      hash       ``pop_ref``, ``pop_now``, ``last_event_ts``
``meta:scopes``               set        popularity scopes (for the rebase)
``profiles``                  hash       user -> float32 bytes
``hist:<user>``               hash       item -> accumulated implicit weight
``bought:<user>``             set        items the user purchased
``uver:<user>``               string     the user's state version (INCR by every apply
                                         that changes the user's own state)
``ihist:<item>``              hash       user -> weight, for items the ALS model never saw
``ifactors:<version>``        hash       item -> float32 bytes (folded-in new items)
``rating:{meta,u,i}``         hash       online rating model: global mean; user/item params
``shown:<rec_id>``            string     what a served list showed, encoded (expires)
``blobs``                     hash       name -> small model kept whole (online blender)
``ufactors:<version>``        hash       user -> float32 bytes (ALS fold-in vector)
``counters``                  hash       name -> integer
``seen:<bucket>``             set        event ids applied in a time bucket, expiring
============================  =========  ==============================================

Popularity is decayed lazily (see :mod:`infra.memory_store`); the rebase, which
must read the stored reference time and rescale every scope atomically, runs
server side in a Lua script queued inside the transaction, together with the
recent-list and popularity updates (one command for the whole batch instead of
one per item: the client's command packing was the bottleneck). Keys are
computed inside the script, so this store needs a single Redis (not Cluster).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from itertools import chain
from typing import TYPE_CHECKING, Any

import msgpack
import numpy as np
import redis
from redis.exceptions import BusyLoadingError
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

if TYPE_CHECKING:
    from core.settings import Settings

__all__ = ["DEFAULT_SKIPLIST_MIN", "REDIS_TIMEOUT_S", "RedisStateStore", "redis_client"]

#: Dedupe buckets per TTL: ``seen_events`` checks this many sets (plus one).
_DEDUPE_BUCKETS = 8
#: Popularity sets of this many members or more are kept as skiplists (see _APPLY_LUA).
DEFAULT_SKIPLIST_MIN = 64

# One script applies a whole batch, sent as ONE MessagePack argument (decoded by the
# server's cmsgpack; for a 1,000-event batch msgpack.packb takes ~0.3 ms where json.dumps
# took ~3, cmsgpack ~0.6 ms where cjson took ~1.1, and floats travel as exact doubles)
# plus ONE binary argument (the float32 vectors, back to back): encoding two strings is far
# cheaper for the client than thousands of arguments. It does what needs
# server-side reads (the popularity rebase, maxima) or would otherwise cost a command
# per item. Lists are flat (``key, n, member...``): far fewer Lua tables to decode.
# Numbers go to redis.call as Lua numbers: Redis formats them with %.17g itself (exact,
# and cheaper than string.format in the loop).
# KEYS: meta hash, scopes set. ARGV[1]: the payload (see RedisStateStore._payload);
# ARGV[2]: the vectors of ``p.vec``.
_APPLY_LUA = """
local meta, scopes = KEYS[1], KEYS[2]
local p = cmsgpack.unpack(ARGV[1])
local blob = ARGV[2]
local t, hl, max_exp = p.t, p.hl, p.max_exp
-- cmd(key, list[first..last]) a slice at a time (unpack is bounded by Lua's C stack);
-- returns the last reply.
local function call_many(cmd, key, list, first, last)
  local reply
  for i = first, last, 4000 do
    reply = redis.call(cmd, key, unpack(list, i, math.min(i + 3999, last)))
  end
  return reply
end
if #p.ids > 0 then
  call_many('SADD', p.seen_key, p.ids, 1, #p.ids)
  redis.call('EXPIRE', p.seen_key, p.seen_ttl)
end
-- the state version of every user whose own state this batch changes
for _, user in ipairs(p.users) do redis.call('INCR', p.uver_prefix .. user) end
if p.last then
  local old = redis.call('HGET', meta, 'last_event_ts')
  if (not old) or tonumber(old) < p.last then
    redis.call('HSET', meta, 'last_event_ts', string.format('%.17g', p.last))
  end
end
-- recent: user, n, n distinct items oldest first (LPUSH leaves the last at the head)
local r, i = p.recent, 1
while i <= #r do
  local key, n = p.recent_prefix .. r[i], r[i + 1]
  for j = i + 2, i + 1 + n do redis.call('LREM', key, 0, r[j]) end
  if call_many('LPUSH', key, r, i + 2, i + 1 + n) > p.recent_max then
    redis.call('LTRIM', key, 0, p.recent_max - 1)
  end
  i = i + 2 + n
end
-- hist, ihist: owner, n, n (member, increment) pairs
for _, section in ipairs({{p.hist_prefix, p.hist}, {p.ihist_prefix, p.ihist}}) do
  local prefix, h = section[1], section[2]
  i = 1
  while i <= #h do
    local key, n = prefix .. h[i], h[i + 1]
    for j = i + 2, i + 2 * n, 2 do redis.call('HINCRBYFLOAT', key, h[j], h[j + 1]) end
    i = i + 2 + 2 * n
  end
end
-- bought: user, n, n items
local b = p.bought
i = 1
while i <= #b do
  call_many('SADD', p.bought_prefix .. b[i], b, i + 2, i + 1 + b[i + 1])
  i = i + 2 + b[i + 1]
end
-- vec: hash key, bytes per value, n, n fields; the values are consecutive in ARGV[2]
local v, offset = p.vec, 0
i = 1
while i <= #v do
  local key, size, n = v[i], v[i + 1], v[i + 2]
  local args = {}
  for j = i + 3, i + 2 + n do
    args[#args + 1] = v[j]
    args[#args + 1] = string.sub(blob, offset + 1, offset + size)
    offset = offset + size
  end
  call_many('HSET', key, args, 1, #args)
  i = i + 3 + n
end
-- pop: scope, n, n (item, weight) pairs
local pop = p.pop
if #pop == 0 then return 0 end
local ref = tonumber(redis.call('HGET', meta, 'pop_ref') or t)
local rebased = 0
if (t - ref) / hl > max_exp then
  local factor = string.format('%.17g', 2 ^ ((ref - t) / hl))
  for _, scope in ipairs(redis.call('SMEMBERS', scopes)) do
    local key = p.pop_prefix .. scope
    redis.call('ZUNIONSTORE', key, 1, key, 'WEIGHTS', factor)
  end
  ref = t
  rebased = 1
end
redis.call('HSET', meta, 'pop_ref', string.format('%.17g', ref))
local now = redis.call('HGET', meta, 'pop_now')
if (not now) or tonumber(now) < t then
  redis.call('HSET', meta, 'pop_now', string.format('%.17g', t))
end
local scale = 2 ^ ((t - ref) / hl)
local names = {}
-- A sorted set of up to 128 members is a listpack (ziplist before Redis 7), whose every
-- ZINCRBY scans and re-parses the members: at 100 members, 2-3x the cost of the
-- skiplist form. Redis converts a set holding a member longer than 64 bytes and never
-- converts it back on removals, so adding and removing such a member (never an item id:
-- ids have at most 128 characters) turns a set into a skiplist with the same contents.
local long_member = string.rep('~', 1024)
i = 1
while i <= #pop do
  local scope, n = pop[i], pop[i + 1]
  local key = p.pop_prefix .. scope
  names[#names + 1] = scope
  for j = i + 2, i + 2 * n, 2 do
    redis.call('ZINCRBY', key, pop[j + 1] * scale, pop[j])
  end
  local card = redis.call('ZCARD', key)
  if p.skiplist_min > 0 and card >= p.skiplist_min
      and redis.call('OBJECT', 'ENCODING', key) ~= 'skiplist' then
    redis.call('ZADD', key, 0, long_member)
    redis.call('ZREM', key, long_member)
  end
  if card > p.co_cap and string.sub(scope, 1, 3) == 'co:' then
    redis.call('ZREMRANGEBYRANK', key, 0, -(p.co_cap + 1))
  end
  i = i + 2 + 2 * n
end
call_many('SADD', scopes, names, 1, #names)
return rebased
"""

# One recommendation's per-user reads, in one round trip. ARGV: recent key, purchased key,
# profiles hash, user id, factors hash, history key, recent n, co-visit n, recent anchors,
# co-visitation key prefix, meta key, history mode, co-visit skip mode, explicit anchors...
# Returns recent, purchased, profile, factors, history (flat), then, with co-visit n > 0, the
# popularity meta (pop_ref, pop_now) and a flat [anchor, [item, score, ...], ...] list whose
# lists leave out the skipped items (read on in chunks until n are kept or the set ends).
_USER_STATE_LUA = """
local recent_n, co_n, n_anchors = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local recent = redis.call('LRANGE', ARGV[1], 0, math.max(recent_n, n_anchors, 1) - 1)
local factors, history = redis.call('HGET', ARGV[5], ARGV[4]), {}
if ARGV[12] == 'always' or (ARGV[12] == 'without_factors' and not factors) then
  history = redis.call('HGETALL', ARGV[6])
end
local bought = redis.call('SMEMBERS', ARGV[2])
local out = {recent, bought, redis.call('HGET', ARGV[3], ARGV[4]), factors, history}
if co_n > 0 then
  local anchors, seen, skip = {}, {}, {}
  for j = 14, #ARGV do
    if not seen[ARGV[j]] then seen[ARGV[j]] = true; anchors[#anchors + 1] = ARGV[j] end
  end
  for j = 1, math.min(n_anchors, #recent) do
    local a = recent[j]
    if not seen[a] then seen[a] = true; anchors[#anchors + 1] = a end
  end
  if ARGV[13] ~= 'nothing' then
    for j = 14, #ARGV do skip[ARGV[j]] = true end
    for j = 1, math.min(recent_n, #recent) do skip[recent[j]] = true end
    if ARGV[13] == 'seen_and_purchased' then
      for _, item in ipairs(bought) do skip[item] = true end
    end
  end
  local n_skip = 0
  for _ in pairs(skip) do n_skip = n_skip + 1 end
  -- The first read allows for a few skipped items (one call per anchor, usually: an
  -- anchor's strongest links hold the few seen items of its sessions, not all of them).
  local first = co_n + math.min(n_skip, 10)
  local lists = {}
  for _, a in ipairs(anchors) do
    local kept, start, chunk = {}, 0, first
    while true do
      local got = redis.call('ZREVRANGE', ARGV[10] .. a, start, start + chunk - 1, 'WITHSCORES')
      for j = 1, #got, 2 do
        if #kept < 2 * co_n and not skip[got[j]] then
          kept[#kept + 1] = got[j]; kept[#kept + 1] = got[j + 1]
        end
      end
      if #kept >= 2 * co_n or #got < 2 * chunk then break end
      start, chunk = start + chunk, co_n
    end
    lists[#lists + 1] = a
    lists[#lists + 1] = kept
  end
  out[6] = redis.call('HMGET', ARGV[11], 'pop_ref', 'pop_now')
  out[7] = lists
end
return out
"""

# KEYS: meta key, then one sorted set per scope. ARGV[1]: n. Returns the meta pair
# (pop_ref, pop_now), then each scope's flat [item, score, ...] top n: raw strings,
# which parse far faster than redis-py's per-pair score conversion.
_TOP_MANY_LUA = """
local out = {redis.call('HMGET', KEYS[1], 'pop_ref', 'pop_now')}
for j = 2, #KEYS do
  out[j] = redis.call('ZREVRANGE', KEYS[j], 0, tonumber(ARGV[1]) - 1, 'WITHSCORES')
end
return out
"""

# KEYS: none. ARGV[1]: JSON list of keys. Returns each list's first ARGV[2] elements.
_LRANGE_MANY_LUA = """
local out = {}
for i, key in ipairs(cjson.decode(ARGV[1])) do
  out[i] = redis.call('LRANGE', key, 0, tonumber(ARGV[2]) - 1)
end
return out
"""

# KEYS: none. ARGV[1]: JSON list of hash keys. Returns each hash as a flat field/value list.
_HGETALL_MANY_LUA = """
local out = {}
for i, key in ipairs(cjson.decode(ARGV[1])) do out[i] = redis.call('HGETALL', key) end
return out
"""

# KEYS: the live dedupe buckets. ARGV[1]: MessagePack list of event ids. Returns the ids found
# in any bucket (usually none): one SMISMEMBER per bucket, not one call per id and bucket.
_SEEN_LUA = """
local ids = cmsgpack.unpack(ARGV[1])
local out = {}
for _, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then
    for i = 1, #ids, 4000 do
      local flags = redis.call('SMISMEMBER', key, unpack(ids, i, math.min(i + 3999, #ids)))
      for k = 1, #flags do
        if flags[k] == 1 then out[#out + 1] = ids[i + k - 1] end
      end
    end
  end
end
return out
"""


#: Socket (and connect) timeout of every Redis client, in seconds. Not shorter: the
#: consumer applies up to 4,000 records in one script call, and a timed-out script
#: still runs on the server, so a short timeout only turns slow batches on a busy
#: machine into retries. It matches the Kafka publisher's 5 s.
REDIS_TIMEOUT_S = 5.0


def redis_client(url: str, *, timeout_s: float = REDIS_TIMEOUT_S) -> redis.Redis:
    """A Redis client for ``url`` with bounded timeouts (built in ``infra.bootstrap``)."""
    return redis.Redis.from_url(
        url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
        health_check_interval=30,
    )


@contextmanager
def redis_failures(what: str) -> Iterator[None]:
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError, BusyLoadingError) as exc:
        raise TemporaryFailure(f"Redis {what} failed: {exc}") from exc


def _scored(flat: list[bytes], scale: float) -> ScoredItems:
    """A flat ``[item, score, item, score, ...]`` reply as scored items, scores times ``scale``."""
    ids = [item.decode() for item in flat[0::2]]
    return ScoredItems(ids, np.array(flat[1::2], dtype=np.float64) * scale)


def _num(value: float) -> str:
    return repr(float(value))


class RedisStateStore:
    """A :class:`core.ports.StateStore` on Redis (see the module doc for the key layout).

    Parameters
    ----------
    client
        A ``redis.Redis`` client returning bytes (``infra.redis_store.redis_client``).
    prefix
        Prefix of every key; :meth:`clear` deletes only these.
    recent_max
        Recent items kept per user.
    dedupe_ttl_s
        Applied event ids are remembered at least this long (at most an eighth more).
    half_life_s
        Half-life of popularity weights, in event time.
    max_exponent
        Rebase the popularity scores when ``(t - ref) / half_life_s`` passes this.
    clock
        Wall clock for the dedupe buckets.
    max_future_s
        Popularity's reference time never passes ``clock() + max_future_s`` (see
        :class:`infra.memory_store.InMemoryStateStore`).
    covisit_max
        Items kept per co-visitation scope (``co:<item>``): the lowest are trimmed.
    skiplist_min
        A popularity set (co-visitation included) of this many members or more is kept
        in Redis's skiplist form, cheaper to update than the compact form Redis uses up
        to 128 members, for more memory; 0: Redis's own choice. Same contents either way.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = "sr:",
        recent_max: int = 50,
        dedupe_ttl_s: float = 7 * 24 * 3600,
        half_life_s: float = 7 * 24 * 3600,
        max_exponent: float = DEFAULT_MAX_EXPONENT,
        clock: Callable[[], float] = time.time,
        covisit_max: int = DEFAULT_COVISIT_MAX,
        skiplist_min: int = DEFAULT_SKIPLIST_MIN,
        max_future_s: float = DEFAULT_MAX_FUTURE_S,
    ) -> None:
        self.max_future_s = max_future_s
        if half_life_s <= 0 or dedupe_ttl_s <= 0 or recent_max < 1 or covisit_max < 1:
            raise ValueError(
                "half_life_s and dedupe_ttl_s must be > 0, recent_max and covisit_max >= 1"
            )
        if skiplist_min < 0:
            raise ValueError("skiplist_min must be >= 0")
        if client.get_connection_kwargs().get("decode_responses"):
            # Profiles are raw float32 bytes; a decoding client would mangle them.
            raise ConfigurationError("RedisStateStore needs a client with decode_responses=False")
        self.client = client
        self.prefix = prefix
        self.recent_max = recent_max
        self.dedupe_ttl_s = dedupe_ttl_s
        self.half_life_s = half_life_s
        self.max_exponent = max_exponent
        self.clock = clock
        self.covisit_max = covisit_max
        self.skiplist_min = skiplist_min
        self._bucket_s = max(1.0, dedupe_ttl_s / _DEDUPE_BUCKETS)
        # Script objects run EVALSHA and reload the script on NOSCRIPT (a restarted Redis).
        self._seen_script = client.register_script(_SEEN_LUA)
        self._lrange_many = client.register_script(_LRANGE_MANY_LUA)
        self._hgetall_many = client.register_script(_HGETALL_MANY_LUA)
        self._user_state = client.register_script(_USER_STATE_LUA)
        self._top_many = client.register_script(_TOP_MANY_LUA)
        self._meta = f"{prefix}meta"
        self._scopes = f"{prefix}meta:scopes"
        self._profiles = f"{prefix}profiles"
        self._counters = f"{prefix}counters"

    @classmethod
    def from_settings(
        cls, client: redis.Redis, settings: Settings, *, prefix: str | None = None
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
            max_future_s=settings.event_max_future_s,
        )

    def __repr__(self) -> str:
        return (f"RedisStateStore(prefix={self.prefix!r}, recent_max={self.recent_max}, "
                f"dedupe_ttl_s={self.dedupe_ttl_s}, half_life_s={self.half_life_s})")

    # --- keys ----------------------------------------------------------------------------------
    def _recent_key(self, user_id: str) -> str:
        return f"{self.prefix}recent:{user_id}"

    def _history_key(self, user_id: str) -> str:
        return f"{self.prefix}hist:{user_id}"

    def _user_version_key(self, user_id: str) -> str:
        return f"{self.prefix}uver:{user_id}"

    def _rating_key(self, kind: str) -> str:
        return f"{self.prefix}rating:{kind}"

    def _purchased_key(self, user_id: str) -> str:
        return f"{self.prefix}bought:{user_id}"

    def _factors_key(self, version: str) -> str:
        return f"{self.prefix}ufactors:{version}"

    def _pop_key(self, scope: str) -> str:
        return f"{self.prefix}pop:{scope}"

    def _seen_key(self, bucket: int) -> str:
        return f"{self.prefix}seen:{bucket}"

    def _live_buckets(self, now: float) -> range:
        first = math.floor((now - self.dedupe_ttl_s) / self._bucket_s)
        return range(first, math.floor(now / self._bucket_s) + 1)

    # --- StateStore ----------------------------------------------------------------------------
    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except redis.RedisError:
            return False

    def seen_events(self, event_ids: Sequence[str]) -> set[str]:
        ids = list(dict.fromkeys(event_ids))
        if not ids:
            return set()
        keys = [self._seen_key(b) for b in self._live_buckets(self.clock())]
        with redis_failures("seen_events"):
            found: list[bytes] = self._seen_script(keys=keys, args=[msgpack.packb(ids)])
        return {i.decode() for i in found}

    def apply(self, update: StateUpdate) -> None:
        pipe = self.client.pipeline(transaction=True)
        queued = False
        script = self._script_args(update)
        if script is not None:
            # Plain EVAL inside MULTI: a NOSCRIPT error there would leave the rest applied.
            pipe.eval(_APPLY_LUA, 2, self._meta, self._scopes, *script)
            queued = True
        if update.blobs:
            pipe.hset(f"{self.prefix}blobs", mapping=dict(update.blobs.items()))
            queued = True
        if update.rating is not None:
            pipe.hset(self._rating_key("meta"), mapping={
                "n": repr(update.rating.n), "mean": repr(update.rating.mean)})
            queued = True
        for name, delta in update.counters.items():
            pipe.hincrby(self._counters, name, int(delta))
            queued = True
        if queued:
            with redis_failures("apply"):
                pipe.execute()

    def _script_args(self, update: StateUpdate) -> tuple[bytes, bytes] | None:
        """The apply script's payload (MessagePack) and vectors (float32 bytes); None: no work."""
        recent: list[str | int] = []
        for user, items in update.recent.items():
            newest = unique_newest_first(items)[: self.recent_max] if len(items) > 1 else items
            if newest:
                recent += (user, len(newest), *reversed(newest))
        vec: list[str | int] = []
        blob: list[bytes] = []
        for key, vectors in self._vector_hashes(update):
            # One section per value size (a hash's vectors normally share one).
            by_size: dict[int, list[tuple[str, bytes]]] = {}
            for field_, vector in vectors.items():
                raw = np.asarray(vector, dtype=np.float32).tobytes()
                by_size.setdefault(len(raw), []).append((field_, raw))
            for size, entries in by_size.items():
                vec += (key, size, len(entries), *(f for f, _ in entries))
                blob += (raw for _, raw in entries)
        pop = _flat_pairs(update.popularity)
        hist = _flat_pairs(update.history)
        ihist = _flat_pairs(update.item_history)
        bought: list[str | int] = []
        for user, items in update.purchased.items():
            if items:
                distinct = list(dict.fromkeys(items))
                bought += (user, len(distinct), *distinct)
        if not (update.event_ids or recent or vec or pop or hist or ihist or bought
                or update.last_event_ts is not None):
            return None
        now = self.clock()
        bucket = math.floor(now / self._bucket_s)
        payload: dict[str, Any] = {
            # Clamped: no event moves the decay reference past what later ones can reach.
            "t": min(update.popularity_at, now + self.max_future_s),
            "hl": self.half_life_s, "max_exp": self.max_exponent,
            "co_cap": self.covisit_max, "recent_max": self.recent_max,
            "skiplist_min": self.skiplist_min,
            "ids": update.event_ids, "seen_key": self._seen_key(bucket),
            # The bucket lives until its last member is older than the TTL.
            "seen_ttl": math.ceil((bucket + 1) * self._bucket_s + self.dedupe_ttl_s - now),
            "recent_prefix": self._recent_key(""), "pop_prefix": self._pop_key(""),
            "hist_prefix": self._history_key(""), "ihist_prefix": f"{self.prefix}ihist:",
            "bought_prefix": self._purchased_key(""),
            "users": sorted(update.users()), "uver_prefix": self._user_version_key(""),
            "recent": recent, "pop": pop, "hist": hist, "ihist": ihist, "bought": bought,
            "vec": vec,
        }
        if update.last_event_ts is not None:  # absent, not nil: the script tests "if p.last"
            payload["last"] = min(update.last_event_ts, now + self.max_future_s)
        return msgpack.packb(payload), b"".join(blob)

    def _vector_hashes(self, update: StateUpdate) -> Iterator[tuple[str, dict[str, Vector]]]:
        """(hash key, field -> vector) of every float32 vector the update writes."""
        yield self._profiles, update.profiles
        if update.rating is not None:
            yield self._rating_key("u"), update.rating.users
            yield self._rating_key("i"), update.rating.items
        yield f"{self.prefix}ifactors:{update.factors_version}", update.item_factors
        yield self._factors_key(update.factors_version), update.user_factors

    def recent_items(self, user_id: str, n: int = 50) -> list[str]:
        if n <= 0:
            return []
        with redis_failures("recent_items"):
            raw: list[Any] = self.client.lrange(self._recent_key(user_id), 0, n - 1)
        return [item.decode() for item in raw]

    def user_version(self, user_id: str) -> int:
        with redis_failures("user_version"):
            raw: Any = self.client.get(self._user_version_key(user_id))
        return 0 if raw is None else int(raw)

    def user_state(
        self, user_id: str, recent_n: int, factors_version: str, *,
        covisit_n: int = 0, anchors: Sequence[str] = (), recent_anchors: int = 0,
        history: HistoryMode = "always", covisit_skip: CovisitSkip = "nothing",
    ) -> UserState:
        args: list[str | int] = [
            self._recent_key(user_id), self._purchased_key(user_id), self._profiles,
            user_id, self._factors_key(factors_version), self._history_key(user_id),
            max(recent_n, 0), max(covisit_n, 0), max(recent_anchors, 0),
            self._pop_key(covisit_scope("")), self._meta, history, covisit_skip, *anchors]
        with redis_failures("user_state"):
            reply: list[Any] = self._user_state(keys=[], args=args)
        recent, bought, profile, factors, weights = reply[:5]
        covisited: dict[str, ScoredItems] = {}
        if len(reply) > 5:
            scale, lists = self._read_scale(reply[5]), reply[6]
            covisited = {lists[j].decode(): _scored(lists[j + 1], scale)
                         for j in range(0, len(lists), 2)}
        return UserState(
            recent=[i.decode() for i in recent][: max(recent_n, 0)],
            purchased={i.decode() for i in bought},
            profile=None if profile is None else np.frombuffer(profile, np.float32).copy(),
            factors=None if factors is None else np.frombuffer(factors, np.float32).copy(),
            history={weights[j].decode(): float(weights[j + 1])
                     for j in range(0, len(weights), 2)},
            covisited=covisited,
        )

    def recent_items_many(self, user_ids: Sequence[str], n: int = 50) -> dict[str, list[str]]:
        ids = list(dict.fromkeys(user_ids))
        if n <= 0 or not ids:
            return {u: [] for u in ids}
        keys = json.dumps([self._recent_key(u) for u in ids])
        with redis_failures("recent_items_many"):
            lists: list[list[bytes]] = self._lrange_many(keys=[], args=[keys, n])
        return {u: [i.decode() for i in items] for u, items in zip(ids, lists, strict=True)}

    def top_popular_many(self, scopes: Sequence[str], n: int) -> dict[str, ScoredItems]:
        wanted = list(dict.fromkeys(scopes))
        if n <= 0 or not wanted:
            return {scope: ScoredItems.empty() for scope in wanted}
        with redis_failures("top_popular_many"):
            meta, *ranked = self._top_many(
                keys=[self._meta, *(self._pop_key(scope) for scope in wanted)], args=[n])
        scale = self._read_scale(meta)
        return {scope: _scored(flat, scale) for scope, flat in zip(wanted, ranked, strict=True)}

    def _read_scale(self, pipe_result: list[Any]) -> float:
        ref, now = pipe_result
        if ref is None or now is None:
            return 1.0
        return decay_scale(float(ref), float(now), self.half_life_s)

    def top_popular(self, n: int, scope: str = ALL_ITEMS) -> ScoredItems:
        if n <= 0:
            return ScoredItems.empty()
        return self.top_popular_many([scope], n)[scope]

    def popularity(self, item_ids: Sequence[str], scope: str = ALL_ITEMS) -> ScoredItems:
        ids = list(dict.fromkeys(item_ids))
        if not ids:
            return ScoredItems.empty()
        with redis_failures("popularity"):
            pipe = self.client.pipeline(transaction=True)
            pipe.zmscore(self._pop_key(scope), ids)
            pipe.hmget(self._meta, ["pop_ref", "pop_now"])
            scores, meta = pipe.execute()
        scale = self._read_scale(meta)
        return ScoredItems.from_pairs(
            [(i, s * scale) for i, s in zip(ids, scores, strict=True) if s is not None]
        )

    def get_profiles(self, user_ids: Sequence[str]) -> dict[str, Vector]:
        ids = list(dict.fromkeys(user_ids))
        if not ids:
            return {}
        with redis_failures("get_profiles"):
            raw: list[Any] = self.client.hmget(self._profiles, ids)
        return {
            user: np.frombuffer(blob, dtype=np.float32).copy()
            for user, blob in zip(ids, raw, strict=True)
            if blob is not None
        }

    def get_histories(self, user_ids: Sequence[str]) -> dict[str, dict[str, float]]:
        ids = list(dict.fromkeys(user_ids))
        if not ids:
            return {}
        keys = json.dumps([self._history_key(u) for u in ids])
        with redis_failures("get_histories"):
            raw: list[list[bytes]] = self._hgetall_many(keys=[], args=[keys])
        return {
            user: {flat[j].decode(): float(flat[j + 1]) for j in range(0, len(flat), 2)}
            for user, flat in zip(ids, raw, strict=True)
            if flat
        }

    def remember_impressions(self, shown: Mapping[str, str], ttl_s: int) -> None:
        if not shown:
            return
        with redis_failures("remember_impressions"):
            pipe = self.client.pipeline(transaction=False)  # independent keys
            for rec_id, encoded in shown.items():
                pipe.set(f"{self.prefix}shown:{rec_id}", encoded, ex=ttl_s)
            pipe.execute()

    def get_blob(self, name: str) -> bytes | None:
        with redis_failures("get_blob"):
            raw: Any = self.client.hget(f"{self.prefix}blobs", name)
        return None if raw is None else bytes(raw)

    def impressions(self, rec_id: str) -> str | None:
        with redis_failures("impressions"):
            raw: Any = self.client.get(f"{self.prefix}shown:{rec_id}")
        return None if raw is None else bytes(raw).decode()

    def get_rating_params(self, user_ids: Sequence[str], item_ids: Sequence[str]) -> RatingParams:
        users, items = list(dict.fromkeys(user_ids)), list(dict.fromkeys(item_ids))
        with redis_failures("get_rating_params"):
            pipe = self.client.pipeline(transaction=True)
            pipe.hmget(self._rating_key("meta"), ["n", "mean"])
            pipe.hmget(self._rating_key("u"), users or ["-"])
            pipe.hmget(self._rating_key("i"), items or ["-"])
            meta, raw_users, raw_items = pipe.execute()

        def vectors(ids: list[str], raw: list[Any]) -> dict[str, Vector]:
            return {k: np.frombuffer(b, dtype=np.float32).copy()
                    for k, b in zip(ids, raw[: len(ids)], strict=True) if b is not None}

        return RatingParams(
            float(meta[0] or 0.0), float(meta[1] or 0.0),
            vectors(users, raw_users), vectors(items, raw_items),
        )

    def get_item_histories(self, item_ids: Sequence[str]) -> dict[str, dict[str, float]]:
        ids = list(dict.fromkeys(item_ids))
        if not ids:
            return {}
        keys = json.dumps([f"{self.prefix}ihist:{i}" for i in ids])
        with redis_failures("get_item_histories"):
            raw: list[list[bytes]] = self._hgetall_many(keys=[], args=[keys])
        return {
            item: {flat[j].decode(): float(flat[j + 1]) for j in range(0, len(flat), 2)}
            for item, flat in zip(ids, raw, strict=True)
            if flat
        }

    def get_item_factors(self, version: str) -> dict[str, Vector]:
        with redis_failures("get_item_factors"):
            raw: dict[Any, Any] = self.client.hgetall(f"{self.prefix}ifactors:{version}")
        return {k.decode(): np.frombuffer(v, dtype=np.float32).copy() for k, v in raw.items()}

    def purchased_items(self, user_id: str) -> set[str]:
        with redis_failures("purchased_items"):
            raw: set[Any] = self.client.smembers(self._purchased_key(user_id))
        return {item.decode() for item in raw}

    def get_user_factors(self, user_ids: Sequence[str], version: str) -> dict[str, Vector]:
        ids = list(dict.fromkeys(user_ids))
        if not ids:
            return {}
        with redis_failures("get_user_factors"):
            raw: list[Any] = self.client.hmget(self._factors_key(version), ids)
        return {
            user: np.frombuffer(blob, dtype=np.float32).copy()
            for user, blob in zip(ids, raw, strict=True)
            if blob is not None
        }

    def counters(self) -> dict[str, int]:
        with redis_failures("counters"):
            raw: dict[Any, Any] = self.client.hgetall(self._counters)
        return {name.decode(): int(value) for name, value in raw.items()}

    def last_event_ts(self) -> float | None:
        with redis_failures("last_event_ts"):
            raw = self.client.hget(self._meta, "last_event_ts")
        return None if raw is None else float(raw)

    def clear(self) -> None:
        """Delete every key under this store's prefix (SCAN + UNLINK; never FLUSHDB)."""
        pattern = _glob_escape(self.prefix) + "*"
        with redis_failures("clear"):
            batch: list[bytes] = []
            for key in self.client.scan_iter(match=pattern, count=1000):
                batch.append(key)
                if len(batch) >= 1000:
                    self.client.unlink(*batch)
                    batch.clear()
            if batch:
                self.client.unlink(*batch)


def _flat_pairs(nested: dict[str, dict[str, float]]) -> list[str | int | float]:
    """``{key: {member: x}}`` as the script's flat ``key, n, member, x, ...``."""
    flat: list[str | int | float] = []
    for key, members in nested.items():
        if members:
            flat += (key, len(members))
            flat += chain.from_iterable(members.items())
    return flat


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
