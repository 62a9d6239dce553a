"""Attempt counters (``core.ports.AttemptCounter``): Redis for every worker, memory for one.

Redis: one Lua script per call increments every key and starts its expiry on the
first attempt, so the count and the window are atomic across gunicorn workers and
hosts. Memory: the same fixed windows in this process (tests and single-process runs
without Redis).

>>> counter = MemoryAttemptCounter(clock=lambda: 0.0)
>>> [counter.hit(["alice"], 60.0) for _ in range(3)]
[[1], [2], [3]]
>>> counter.undo(["alice"]); counter.hit(["alice"], 60.0)
[3]
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from infra.redis_cluster import RedisClient
from infra.redis_store import redis_failures

__all__ = ["MemoryAttemptCounter", "RedisAttemptCounter"]

# KEYS: the counters; ARGV[1]: the window in ms. A new key (count 1) gets its expiry.
_HIT_LUA = """
local out = {}
for i, key in ipairs(KEYS) do
  local n = redis.call('INCR', key)
  if n == 1 then redis.call('PEXPIRE', key, ARGV[1]) end
  out[i] = n
end
return out
"""

# Decrement what exists and is above zero (an expired key stays gone).
_UNDO_LUA = """
for _, key in ipairs(KEYS) do
  local n = tonumber(redis.call('GET', key) or '0')
  if n > 0 then redis.call('DECR', key) end
end
return 0
"""


class RedisAttemptCounter:
    """Counters in Redis under ``<prefix>attempts:{<key>}`` (one hash slot per key).

    Parameters
    ----------
    client
        A redis-py client, one Redis or a cluster (built in ``infra.bootstrap``).
    prefix
        The deployment's key prefix (``Settings.redis_prefix``).
    """

    def __init__(self, client: RedisClient, prefix: str = "sr:") -> None:
        self.client = client
        self.prefix = prefix
        self._hit = client.register_script(_HIT_LUA)
        self._undo = client.register_script(_UNDO_LUA)

    def _key(self, key: str) -> str:
        # Hash tags keep each key in its own slot, so a Cluster runs the script per key.
        return f"{self.prefix}attempts:{{{key}}}"

    def hit(self, keys: Sequence[str], window_s: float) -> list[int]:
        window_ms = max(1, int(window_s * 1000))
        with redis_failures("count attempts"):
            # One call per key: keys in different Cluster slots cannot share a script.
            return [int(self._hit(keys=[self._key(k)], args=[window_ms])[0]) for k in keys]

    def undo(self, keys: Sequence[str]) -> None:
        with redis_failures("undo attempts"):
            for key in keys:
                self._undo(keys=[self._key(key)])

    def reset(self, key: str) -> None:
        with redis_failures("reset attempts"):
            self.client.delete(self._key(key))


class MemoryAttemptCounter:
    """The same counters in this process (thread-safe); expired keys are dropped on use."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._counts: dict[str, tuple[int, float]] = {}
        self._lock = threading.Lock()

    def _live(self, key: str, now: float) -> tuple[int, float] | None:
        found = self._counts.get(key)
        if found is not None and found[1] <= now:
            del self._counts[key]
            return None
        return found

    def hit(self, keys: Sequence[str], window_s: float) -> list[int]:
        now = self.clock()
        counts = []
        with self._lock:
            for key in keys:
                count, expires = self._live(key, now) or (0, now + window_s)
                self._counts[key] = (count + 1, expires)
                counts.append(count + 1)
        return counts

    def undo(self, keys: Sequence[str]) -> None:
        now = self.clock()
        with self._lock:
            for key in keys:
                found = self._live(key, now)
                if found is not None and found[0] > 0:
                    self._counts[key] = (found[0] - 1, found[1])

    def reset(self, key: str) -> None:
        with self._lock:
            self._counts.pop(key, None)
