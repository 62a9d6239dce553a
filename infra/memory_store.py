"""In-memory StateStore: the fake for unit tests, with the Redis store's exact behaviour.

Both stores keep decayed popularity the same way (see :class:`DecayedScores`):
every increment is stored as ``w * 2**((t - ref) / half_life)`` relative to a
reference time ``ref``, so adding weight never rewrites older entries and the
ranking is the stored order. Reads scale by ``2**((ref - now) / half_life)``
where ``now`` is the newest event time seen, which makes a replay of old data
decay by event time, not wall time. When the exponent would pass
``max_exponent`` every score is rescaled once and ``ref`` moves to ``t``.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np

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
from online_models.decay import decay_scale

# ``decay_scale`` is re-exported for the Redis store, which reads scores the same way.
__all__ = [
    "DEFAULT_MAX_FUTURE_S",
    "DecayedScores",
    "InMemoryStateStore",
    "decay_scale",
    "unique_newest_first",
]

#: A rebase keeps stored scores below ``w * 2**64``: far from float overflow, and
#: the relative precision of a double does not depend on magnitude.
DEFAULT_MAX_EXPONENT = 64.0
#: Items kept per co-visitation scope (``co:<item>``).
DEFAULT_COVISIT_MAX = 100
#: Seconds past the wall clock that decay state may reach (``Settings.event_max_future_s``).
DEFAULT_MAX_FUTURE_S = 300.0


def unique_newest_first(items_oldest_first: Sequence[str]) -> list[str]:
    """Distinct items, the most recently touched first.

    >>> unique_newest_first(["a", "b", "a", "c"])
    ['c', 'a', 'b']
    """
    return list(dict.fromkeys(reversed(items_oldest_first)))


class DecayedScores:
    """Exponentially decayed sums per scope and item, as the Redis store keeps them.

    >>> s = DecayedScores(half_life_s=10.0)
    >>> s.add({"all": {"a": 1.0}}, at=0.0)
    >>> s.add({"all": {"b": 1.0}}, at=10.0)
    >>> s.value("all", "a"), s.value("all", "b")
    (0.5, 1.0)
    """

    def __init__(self, half_life_s: float, max_exponent: float = DEFAULT_MAX_EXPONENT) -> None:
        self.half_life_s = half_life_s
        self.max_exponent = max_exponent
        self.ref: float | None = None
        self.now: float | None = None
        self.scores: dict[str, dict[str, float]] = {}

    def add(self, increments: dict[str, dict[str, float]], at: float) -> None:
        if not increments:
            return
        if self.ref is None:
            self.ref = at
        elif (at - self.ref) / self.half_life_s > self.max_exponent:
            factor = decay_scale(self.ref, at, self.half_life_s)
            for scores in self.scores.values():
                for item in scores:
                    scores[item] *= factor
            self.ref = at
        self.now = at if self.now is None else max(self.now, at)
        scale = decay_scale(at, self.ref, self.half_life_s)
        for scope, weights in increments.items():
            scores = self.scores.setdefault(scope, {})
            for item, weight in weights.items():
                scores[item] = scores.get(item, 0.0) + weight * scale

    def trim(self, scopes: Sequence[str], keep: int) -> None:
        """Keep the ``keep`` best items of each of ``scopes``."""
        for scope in scopes:
            scores = self.scores.get(scope, {})
            if len(scores) > keep:
                best = sorted(scores.items(), key=lambda kv: (kv[1], kv[0]), reverse=True)
                self.scores[scope] = dict(best[:keep])

    def _read_scale(self) -> float:
        if self.ref is None or self.now is None:
            return 1.0
        return decay_scale(self.ref, self.now, self.half_life_s)

    def value(self, scope: str, item: str) -> float | None:
        stored = self.scores.get(scope, {}).get(item)
        return None if stored is None else stored * self._read_scale()

    def top(self, scope: str, n: int) -> list[tuple[str, float]]:
        # Ties: reverse lexicographic order, as Redis' ZREVRANGE returns them.
        ranked = sorted(self.scores.get(scope, {}).items(), key=lambda kv: (kv[1], kv[0]),
                        reverse=True)[: max(0, n)]
        scale = self._read_scale()
        return [(item, score * scale) for item, score in ranked]


class InMemoryStateStore:
    """A :class:`core.ports.StateStore` in process memory (thread-safe).

    Parameters
    ----------
    recent_max
        Recent items kept per user.
    dedupe_ttl_s
        How long applied event ids are remembered.
    half_life_s
        Half-life of popularity weights, in event time.
    clock
        Wall clock for the dedupe window (tests move it).
    max_future_s
        Popularity's reference time never passes ``clock() + max_future_s``: an event
        from the far future (which would decay every score to 0, for good) counts as
        if it happened then.

    Examples
    --------
    >>> from core.ports import StateUpdate
    >>> store = InMemoryStateStore()
    >>> store.apply(StateUpdate(event_ids=["e1"], recent={"u1": ["a", "b", "a"]}))
    >>> store.recent_items("u1"), store.seen_events(["e1", "e2"])
    (['a', 'b'], {'e1'})
    """

    def __init__(
        self,
        *,
        recent_max: int = 50,
        dedupe_ttl_s: float = 7 * 24 * 3600,
        half_life_s: float = 7 * 24 * 3600,
        max_exponent: float = DEFAULT_MAX_EXPONENT,
        clock: Callable[[], float] = time.time,
        covisit_max: int = DEFAULT_COVISIT_MAX,
        max_future_s: float = DEFAULT_MAX_FUTURE_S,
    ) -> None:
        self.recent_max = recent_max
        self.max_future_s = max_future_s
        self.covisit_max = covisit_max
        self.dedupe_ttl_s = dedupe_ttl_s
        self.half_life_s = half_life_s
        self.max_exponent = max_exponent
        self.clock = clock
        self._lock = threading.Lock()
        self._seen: dict[str, float] = {}  # event id -> expiry (wall clock)
        self._purge_at = 1024
        self._recent: dict[str, list[str]] = {}
        self._popularity = DecayedScores(half_life_s, max_exponent)
        self._profiles: dict[str, Vector] = {}
        self._history: dict[str, dict[str, float]] = {}
        self._item_history: dict[str, dict[str, float]] = {}
        self._item_factors: dict[str, dict[str, Vector]] = {}
        self._purchased: dict[str, set[str]] = {}
        self._rating = RatingParams()
        self._impressions: dict[str, tuple[float, str]] = {}
        self._blobs: dict[str, bytes] = {}
        self._factors: dict[str, dict[str, Vector]] = {}
        self._counters: dict[str, int] = {}
        self._last_ts: float | None = None
        self._versions: dict[str, int] = {}
        #: user -> (expiry on ``clock``, noted own items not applied yet, newest first).
        self._own: dict[str, tuple[float, list[str]]] = {}

    def ping(self) -> bool:
        return True

    def seen_events(self, event_ids: Sequence[str]) -> set[str]:
        now = self.clock()
        with self._lock:
            return {e for e in event_ids if self._seen.get(e, -math.inf) > now}

    def apply(self, update: StateUpdate) -> None:
        now = self.clock()
        with self._lock:
            if update.event_ids:
                expires = now + self.dedupe_ttl_s
                if len(self._seen) > self._purge_at:  # amortised: O(1) per id
                    self._seen = {e: t for e, t in self._seen.items() if t > now}
                    self._purge_at = max(1024, 2 * len(self._seen))
                self._seen.update(dict.fromkeys(update.event_ids, expires))
            for user in update.users():
                self._versions[user] = self._versions.get(user, 0) + 1
            for user, items in update.recent.items():
                noted = self._own.get(user)
                if noted is not None:  # applied: no longer only noted
                    applied = set(items)
                    left = [i for i in noted[1] if i not in applied]
                    if left:
                        self._own[user] = (noted[0], left)
                    else:
                        del self._own[user]
                newest = unique_newest_first(items)
                fresh = set(newest)
                old = [i for i in self._recent.get(user, []) if i not in fresh]
                self._recent[user] = (newest + old)[: self.recent_max]
            self._popularity.add(update.popularity,
                                 min(update.popularity_at, now + self.max_future_s))
            self._popularity.trim(
                [scope for scope in update.popularity if scope.startswith("co:")],
                self.covisit_max,
            )
            for user, vector in update.profiles.items():
                self._profiles[user] = np.array(vector, dtype=np.float32)
            for user, items in update.purchased.items():
                self._purchased.setdefault(user, set()).update(items)
            self._blobs.update(update.blobs)
            if update.rating is not None:
                self._rating.n, self._rating.mean = update.rating.n, update.rating.mean
                self._rating.users.update(update.rating.users)
                self._rating.items.update(update.rating.items)
            for item, weights in update.item_history.items():
                theirs = self._item_history.setdefault(item, {})
                for user, weight in weights.items():
                    theirs[user] = theirs.get(user, 0.0) + weight
            if update.item_factors:
                self._item_factors.setdefault(update.factors_version, {}).update(
                    {i: np.array(v, dtype=np.float32) for i, v in update.item_factors.items()})
            for user, weights in update.history.items():
                mine = self._history.setdefault(user, {})
                for item, weight in weights.items():
                    mine[item] = mine.get(item, 0.0) + weight
            if update.user_factors:
                factors = self._factors.setdefault(update.factors_version, {})
                for user, vector in update.user_factors.items():
                    factors[user] = np.array(vector, dtype=np.float32)
            for name, delta in update.counters.items():
                self._counters[name] = self._counters.get(name, 0) + int(delta)
            last = (None if update.last_event_ts is None
                    else min(update.last_event_ts, now + self.max_future_s))
            if last is not None and (self._last_ts is None or last > self._last_ts):
                self._last_ts = float(last)

    def recent_items(self, user_id: str, n: int = 50) -> list[str]:
        with self._lock:
            return list(self._recent.get(user_id, [])[: max(0, n)])

    def user_version(self, user_id: str) -> int:
        with self._lock:
            return self._versions.get(user_id, 0)

    def note_own_events(self, items_by_user: Mapping[str, Sequence[str]],
                        ttl_s: float = 120.0) -> None:
        """See :class:`core.ports.OwnEvents`."""
        expires = self.clock() + ttl_s
        with self._lock:
            for user, items in items_by_user.items():
                if not items:
                    continue
                newest = unique_newest_first(items)
                fresh = set(newest)
                old = self._own_items(user)
                self._own[user] = (expires, (newest + [i for i in old if i not in fresh])
                                   [: self.recent_max])
                self._versions[user] = self._versions.get(user, 0) + 1

    def _own_items(self, user_id: str) -> list[str]:
        """The user's noted own items, newest first ([] once expired); under the lock."""
        noted = self._own.get(user_id)
        if noted is None:
            return []
        if noted[0] <= self.clock():  # expired: forgotten, as Redis's TTL does
            del self._own[user_id]
            return []
        return noted[1]

    def user_state(
        self, user_id: str, recent_n: int, factors_version: str, *,
        covisit_n: int = 0, anchors: Sequence[str] = (), recent_anchors: int = 0,
        history: HistoryMode = "always", covisit_skip: CovisitSkip = "nothing",
    ) -> UserState:
        want = max(recent_n, recent_anchors)
        with self._lock:  # recent items, the noted own ones first, and the version at once
            version = self._versions.get(user_id, 0)
            recent = self._recent.get(user_id, [])
            own = self._own_items(user_id) if self._own else []
            if own:
                recent = list(dict.fromkeys([*own, *recent]))
            recent = recent[: max(want, 0)]
        linked = covisit_anchors(anchors, recent[:recent_anchors]) if covisit_n > 0 else []
        factors = self.get_user_factors([user_id], factors_version).get(user_id)
        wanted = history == "always" or (history == "without_factors" and factors is None)
        purchased = self.purchased_items(user_id)
        skip: set[str] = set()
        if covisit_skip != "nothing":
            skip = {*anchors, *recent[: max(recent_n, 0)]}
        if covisit_skip == "seen_and_purchased":
            skip |= purchased
        with self._lock:
            covisited = {a: ScoredItems.from_pairs(
                [(i, s) for i, s in self._popularity.top(covisit_scope(a), covisit_n + len(skip))
                 if i not in skip][:covisit_n]) for a in linked}
        return UserState(
            recent=recent[: max(recent_n, 0)],
            purchased=purchased,
            profile=self.get_profiles([user_id]).get(user_id),
            factors=factors,
            history=self.get_histories([user_id]).get(user_id, {}) if wanted else {},
            covisited=covisited,
            version=version,
        )

    def recent_items_many(self, user_ids: Sequence[str], n: int = 50) -> dict[str, list[str]]:
        return {u: self.recent_items(u, n) for u in dict.fromkeys(user_ids)}

    def top_popular_many(self, scopes: Sequence[str], n: int) -> dict[str, ScoredItems]:
        return {scope: self.top_popular(n, scope) for scope in dict.fromkeys(scopes)}

    def covisited(self, item_ids: Sequence[str], n: int) -> dict[str, ScoredItems]:
        return {i: self.top_popular(n, covisit_scope(i)) for i in dict.fromkeys(item_ids)}

    def top_popular(self, n: int, scope: str = ALL_ITEMS) -> ScoredItems:
        with self._lock:
            return ScoredItems.from_pairs(self._popularity.top(scope, n))

    def popularity(self, item_ids: Sequence[str], scope: str = ALL_ITEMS) -> ScoredItems:
        with self._lock:
            pairs = [(i, self._popularity.value(scope, i)) for i in dict.fromkeys(item_ids)]
        return ScoredItems.from_pairs([(i, v) for i, v in pairs if v is not None])

    def get_profiles(self, user_ids: Sequence[str]) -> dict[str, Vector]:
        with self._lock:
            return {u: self._profiles[u].copy() for u in user_ids if u in self._profiles}

    def get_histories(self, user_ids: Sequence[str]) -> dict[str, dict[str, float]]:
        with self._lock:
            return {u: dict(self._history[u]) for u in user_ids if u in self._history}

    def remember_impressions(self, shown: Mapping[str, str], ttl_s: int) -> None:
        with self._lock:
            for rec_id, encoded in shown.items():
                self._impressions[rec_id] = (self.clock() + ttl_s, encoded)

    def get_blob(self, name: str) -> bytes | None:
        with self._lock:
            return self._blobs.get(name)

    def impressions(self, rec_id: str) -> str | None:
        with self._lock:
            expires, encoded = self._impressions.get(rec_id, (0.0, ""))
            return encoded if expires > self.clock() else None

    def get_rating_params(self, user_ids: Sequence[str], item_ids: Sequence[str]) -> RatingParams:
        with self._lock:
            r = self._rating
            return RatingParams(
                r.n, r.mean,
                {u: r.users[u].copy() for u in user_ids if u in r.users},
                {i: r.items[i].copy() for i in item_ids if i in r.items},
            )

    def get_item_histories(self, item_ids: Sequence[str]) -> dict[str, dict[str, float]]:
        with self._lock:
            return {i: dict(self._item_history[i]) for i in item_ids if i in self._item_history}

    def get_item_factors(self, version: str) -> dict[str, Vector]:
        with self._lock:
            return {i: v.copy() for i, v in self._item_factors.get(version, {}).items()}

    def purchased_items(self, user_id: str) -> set[str]:
        with self._lock:
            return set(self._purchased.get(user_id, set()))

    def get_user_factors(self, user_ids: Sequence[str], version: str) -> dict[str, Vector]:
        with self._lock:
            factors = self._factors.get(version, {})
            return {u: factors[u].copy() for u in user_ids if u in factors}

    def counters(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counters)

    def last_event_ts(self) -> float | None:
        with self._lock:
            return self._last_ts

    def clear(self) -> None:
        with self._lock:
            self._seen = {}
            self._purge_at = 1024
            self._recent = {}
            self._popularity = DecayedScores(self.half_life_s, self.max_exponent)
            self._profiles = {}
            self._history = {}
            self._item_history = {}
            self._item_factors = {}
            self._purchased = {}
            self._rating = RatingParams()
            self._impressions = {}
            self._blobs = {}
            self._factors = {}
            self._counters = {}
            self._last_ts = None
            self._versions = {}
            self._own = {}
