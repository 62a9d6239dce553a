"""The Lua scripts of the Redis state store (see :mod:`infra.redis_store`).

Every script names its keys in full (computed by :class:`infra.redis_keys.KeySpace`), so
the same script serves one Redis (one call for a whole batch or request) and Redis
Cluster (one call per node, each touching only that node's keys: see
:func:`infra.redis_cluster.cross_slot`).
"""

from __future__ import annotations

__all__ = [
    "APPLY_LUA",
    "COVISIT_LUA",
    "JOURNAL_LUA",
    "NOTE_OWN_LUA",
    "SEEN_LUA",
    "USER_LUA",
    "USER_STATE_LUA",
]

# One script applies a batch (or, on a cluster, one node's part of it), sent as ONE
# MessagePack argument (decoded by the server's cmsgpack; for a 1,000-event batch
# msgpack.packb takes ~0.3 ms where json.dumps took ~3, cmsgpack ~0.6 ms where cjson took
# ~1.1, and floats travel as exact doubles) plus ONE binary argument (vectors and blobs,
# back to back): encoding two strings is far cheaper for the client than thousands of
# arguments. Lists are flat (``key, n, member...``): far fewer Lua tables to decode.
# Numbers go to redis.call as Lua numbers: Redis formats them with %.17g itself.
# ARGV[1]: the payload (see RedisStateStore._payload); ARGV[2]: the raw values of p.raw.
# Returns -1 when p.applied is set and this part was applied before (a replayed journal).
APPLY_LUA = """
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
if p.applied and not redis.call('SET', p.applied, '1', 'NX', 'EX', p.applied_ttl) then
  return -1
end
if p.ids and #p.ids > 0 then
  call_many('SADD', p.seen_key, p.ids, 1, #p.ids)
  redis.call('EXPIRE', p.seen_key, p.seen_ttl)
end
for _, field in ipairs({'last_event_ts', 'pop_now'}) do
  local value = p[field]
  if value then
    local old = redis.call('HGET', p.meta, field)
    if (not old) or tonumber(old) < value then
      redis.call('HSET', p.meta, field, string.format('%.17g', value))
    end
  end
end
-- recent_own: key, own-events key, n, n distinct items oldest first (LPUSH leaves the
-- last at the head). An applied item leaves the user's noted own events (NOTE_OWN_LUA).
-- recent: the same without the own-events key, as journals of older versions hold it.
local function push_recent(r, with_own)
  local i, step = 1, with_own and 1 or 0
  while i <= #r do
    local key, n = r[i], r[i + 1 + step]
    local own = with_own and r[i + 1]
    local noted = own and redis.call('EXISTS', own) == 1
    local first = i + 2 + step
    for j = first, first + n - 1 do
      redis.call('LREM', key, 0, r[j])
      if noted then redis.call('LREM', own, 0, r[j]) end
    end
    if call_many('LPUSH', key, r, first, first + n - 1) > p.recent_max then
      redis.call('LTRIM', key, 0, p.recent_max - 1)
    end
    i = first + n
  end
end
push_recent(p.recent_own or {}, true)
push_recent(p.recent or {}, false)
local i
-- hist: key, n, n (member, increment) pairs
local h = p.hist
i = 1
while i <= #h do
  local key, n = h[i], h[i + 1]
  for j = i + 2, i + 2 * n, 2 do redis.call('HINCRBYFLOAT', key, h[j], h[j + 1]) end
  i = i + 2 + 2 * n
end
-- bought: key, n, n items
local b = p.bought
i = 1
while i <= #b do
  call_many('SADD', b[i], b, i + 2, i + 1 + b[i + 1])
  i = i + 2 + b[i + 1]
end
-- raw: hash key, field, bytes; the values are consecutive in ARGV[2]
local v, offset = p.raw, 0
for j = 1, #v, 3 do
  redis.call('HSET', v[j], v[j + 1], string.sub(blob, offset + 1, offset + v[j + 2]))
  offset = offset + v[j + 2]
end
-- incr: hash key, field, increment
local c = p.incr
for j = 1, #c, 3 do redis.call('HINCRBY', c[j], c[j + 1], c[j + 2]) end
-- uver: the state version of every user whose own state this part changes
for _, key in ipairs(p.uver or {}) do redis.call('INCR', key) end
-- pop: key, cap (0: none), n, n (item, weight) pairs. Each set's scores are relative to
-- its own reference time (key .. ':ref', same slot): a set is rescaled alone when the
-- batch's time passes its reference by max_exp half-lives.
-- A sorted set of up to 128 members is a listpack (ziplist before Redis 7), whose every
-- ZINCRBY scans and re-parses the members: at 100 members, 2-3x the cost of the
-- skiplist form. Redis converts a set holding a member longer than 64 bytes and never
-- converts it back on removals, so adding and removing such a member (never an item id:
-- ids have at most 128 characters) turns a set into a skiplist with the same contents.
local long_member = string.rep('~', 1024)
local pop = p.pop
i = 1
while i <= #pop do
  local key, cap, n = pop[i], pop[i + 1], pop[i + 2]
  local ref_key = key .. ':ref'
  local stored = redis.call('GET', ref_key)
  local ref = tonumber(stored or t)
  if (t - ref) / hl > max_exp then
    redis.call('ZUNIONSTORE', key, 1, key, 'WEIGHTS', string.format('%.17g', 2 ^ ((ref - t) / hl)))
    ref, stored = t, false
  end
  if not stored then redis.call('SET', ref_key, string.format('%.17g', ref)) end
  local scale = 2 ^ ((t - ref) / hl)
  for j = i + 3, i + 1 + 2 * n, 2 do
    redis.call('ZINCRBY', key, pop[j + 1] * scale, pop[j])
  end
  local card = redis.call('ZCARD', key)
  if p.skiplist_min > 0 and card >= p.skiplist_min
      and redis.call('OBJECT', 'ENCODING', key) ~= 'skiplist' then
    redis.call('ZADD', key, 0, long_member)
    redis.call('ZREM', key, long_member)
  end
  if cap > 0 and card > cap then redis.call('ZREMRANGEBYRANK', key, 0, -(cap + 1)) end
  i = i + 3 + 2 * n
end
return 0
"""

# A cluster batch's first step, on the global slot: remember its event ids and its parts
# together, so a crash between parts loses nothing (the next call replays the journal).
# ARGV: dedupe bucket, journal hash, update id, journal record, MessagePack ids, TTL.
JOURNAL_LUA = """
local ids = cmsgpack.unpack(ARGV[5])
for i = 1, #ids, 4000 do
  redis.call('SADD', ARGV[1], unpack(ids, i, math.min(i + 3999, #ids)))
end
if #ids > 0 then redis.call('EXPIRE', ARGV[1], ARGV[6]) end
redis.call('HSET', ARGV[2], ARGV[3], ARGV[4])
return 0
"""

# One user's state. KEYS: recent list, purchases set, vector hash, history hash, state
# version, own events. Called with factors field, recent n, co-visit n, recent anchors,
# history mode, ... (see USER_STATE_LUA). The noted own events not applied yet come first
# among the recent items (read-your-writes, see NOTE_OWN_LUA); the version is the one of
# this same read.
_READ_USER = """
local function read_user(ffield, recent_n, n_anchors, mode)
  local want = math.max(recent_n, n_anchors, 1)
  local recent = redis.call('LRANGE', KEYS[1], 0, want - 1)
  local own = redis.call('LRANGE', KEYS[6], 0, want - 1)
  if #own > 0 then
    local merged, seen = {}, {}
    for _, list in ipairs({own, recent}) do
      for _, item in ipairs(list) do
        if #merged < want and not seen[item] then
          seen[item] = true; merged[#merged + 1] = item
        end
      end
    end
    recent = merged
  end
  local vectors = redis.call('HMGET', KEYS[3], 'p', ffield)
  local history = {}
  if mode == 'always' or (mode == 'without_factors' and not vectors[2]) then
    history = redis.call('HGETALL', KEYS[4])
  end
  return {recent, redis.call('SMEMBERS', KEYS[2]), vectors[1], vectors[2], history,
          redis.call('GET', KEYS[5]) or '0'}
end
"""

# The co_n strongest items co-visited with each anchor, leaving out ``skip``: a flat
# [anchor, reference time or '', [item, score, ...], ...] list. The first read allows for
# a few skipped items (one call per anchor, usually: an anchor's strongest links hold the
# few seen items of its sessions, not all of them); it reads on in chunks until co_n are
# kept or the set ends.
_READ_COVISITED = """
local function read_covisited(head, tail, anchors, skip, n_skip, co_n)
  local first = co_n + math.min(n_skip, 10)
  local lists = {}
  for _, a in ipairs(anchors) do
    local key = head .. a .. tail
    local kept, start, chunk = {}, 0, first
    while true do
      local got = redis.call('ZREVRANGE', key, start, start + chunk - 1, 'WITHSCORES')
      for j = 1, #got, 2 do
        if #kept < 2 * co_n and not skip[got[j]] then
          kept[#kept + 1] = got[j]; kept[#kept + 1] = got[j + 1]
        end
      end
      if #kept >= 2 * co_n or #got < 2 * chunk then break end
      start, chunk = start + chunk, co_n
    end
    lists[#lists + 1] = a
    lists[#lists + 1] = redis.call('GET', key .. ':ref') or ''
    lists[#lists + 1] = kept
  end
  return lists
end
"""

# One recommendation's reads on one Redis, in one call. KEYS: as _READ_USER.
# ARGV[1]: a MessagePack array A (one argument: redis-py packs each argument of a call
# separately, which cost a third of the client's time of this read with 18 arguments):
# factors field, recent n, co-visit n, recent anchors, history mode, co-visit skip
# mode, co-visit key head and tail (key = head .. item .. tail), meta key, anchors...
# Returns recent, purchased, profile, factors, history (flat), version, then, with
# co-visit n > 0, pop_now (or '') and read_covisited's list.
USER_STATE_LUA = _READ_USER + _READ_COVISITED + """
local A = cmsgpack.unpack(ARGV[1])
local recent_n, co_n, n_anchors = tonumber(A[2]), tonumber(A[3]), tonumber(A[4])
local out = read_user(A[1], recent_n, n_anchors, A[5])
if co_n > 0 then
  local recent, bought = out[1], out[2]
  local anchors, seen, skip = {}, {}, {}
  for j = 10, #A do
    if not seen[A[j]] then seen[A[j]] = true; anchors[#anchors + 1] = A[j] end
  end
  for j = 1, math.min(n_anchors, #recent) do
    local a = recent[j]
    if not seen[a] then seen[a] = true; anchors[#anchors + 1] = a end
  end
  if A[6] ~= 'nothing' then
    for j = 10, #A do skip[A[j]] = true end
    for j = 1, math.min(recent_n, #recent) do skip[recent[j]] = true end
    if A[6] == 'seen_and_purchased' then
      for _, item in ipairs(bought) do skip[item] = true end
    end
  end
  local n_skip = 0
  for _ in pairs(skip) do n_skip = n_skip + 1 end
  out[7] = redis.call('HGET', A[9], 'pop_now') or ''
  out[8] = read_covisited(A[7], A[8], anchors, skip, n_skip, co_n)
end
return out
"""

# The per-user half of USER_STATE_LUA (a cluster's first step: the user's node).
USER_LUA = _READ_USER + """
local A = cmsgpack.unpack(ARGV[1])
return read_user(A[1], tonumber(A[2]), tonumber(A[4]), A[5])
"""

# The co-visited half (a cluster's second step, one call per node holding anchors).
# ARGV[1]: MessagePack {head, tail, anchors, skip, co_n, meta (or '')}. Returns pop_now
# (or '' without meta) and read_covisited's list.
COVISIT_LUA = _READ_COVISITED + """
local q = cmsgpack.unpack(ARGV[1])
local skip = {}
for _, item in ipairs(q.skip) do skip[item] = true end
local now = ''
if q.meta ~= '' then now = redis.call('HGET', q.meta, 'pop_now') or '' end
return {now, read_covisited(q.head, q.tail, q.anchors, skip, #q.skip, q.co_n)}
"""

# Read-your-writes: note the items of events the API just accepted, per user, and move
# each user's state version (one call per node; no declared keys, as APPLY_LUA).
# ARGV[1]: MessagePack {ttl_ms, max, users = [own key, version key, n, n items oldest
# first, ...]}. The list is trimmed to ``max`` and expires ``ttl_ms`` after the last note
# (an event that is never applied is forgotten); APPLY_LUA removes applied items.
NOTE_OWN_LUA = """
local q = cmsgpack.unpack(ARGV[1])
local u, i = q.users, 1
while i <= #u do
  local own, version, n = u[i], u[i + 1], u[i + 2]
  for j = i + 3, i + 2 + n do
    redis.call('LREM', own, 0, u[j])
    redis.call('LPUSH', own, u[j])
  end
  redis.call('LTRIM', own, 0, q.max - 1)
  redis.call('PEXPIRE', own, q.ttl_ms)
  redis.call('INCR', version)
  i = i + 3 + n
end
return 0
"""

# KEYS: the live dedupe buckets. ARGV[1]: MessagePack list of event ids. Returns the ids found
# in any bucket (usually none): one SMISMEMBER per bucket, not one call per id and bucket.
SEEN_LUA = """
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
