"""One process's snapshot of item popularity, re-read at most every ``refresh_s`` seconds.

Popularity is global: every request of every user reads the same decayed counts.
Reading them per request (the top lists, then each candidate's count) cost two
Redis round trips and most of a recommendation's parsing time; a snapshot of the
``size`` most popular items, re-read in the background once it is ``refresh_s``
old, serves every request in between from memory. What a user did themselves
is still read per request (recent items, profile, co-visitation), so their own
clicks change their next list at once; the popularity they add to items shows
after at most ``refresh_s`` (default 15 s, ``STREAMREC_POPULARITY_REFRESH_S``;
0 re-reads on every request). Items past the snapshot's ``size`` (default 5,000)
get no popularity score (left out, as a source that cannot score does): the long
tail's counts are small, and a re-read holds the worker's GIL for its parsing,
so it is kept short (about 8 ms for 5,000 items) and rare.

>>> from core.types import Item
>>> from infra.memory_store import InMemoryStateStore
>>> from core.ports import StateUpdate
>>> store = InMemoryStateStore()
>>> store.apply(StateUpdate(popularity={"all": {"a": 3.0, "b": 1.0}}))
>>> catalog = {"a": Item("a", "A", "Mugs", 1.0), "b": Item("b", "B", "Bags", 2.0)}
>>> snapshot = PopularitySnapshot(store, catalog, refresh_s=0).current()
>>> snapshot.top(None, 5).ids, snapshot.top("Bags", 5).ids
(['a', 'b'], ['b'])
>>> snapshot.scores(["b", "zz"]).tolist()
[1.0, nan]
"""

from __future__ import annotations

import logging
import math
import threading
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice, repeat
from pathlib import Path

import numpy as np
import numpy.typing as npt

from core.errors import TemporaryFailure
from core.ports import DecayedCounters
from core.types import Item, ScoredItems
from online_models.artifacts import read_arrays, write_arrays

__all__ = ["COUNTS_FILE", "ItemCounts", "PopularitySnapshot", "Snapshot", "log_scale"]

log = logging.getLogger(__name__)

#: Items kept per category list: enough for k=200 after a user's exclusions.
PER_CATEGORY = 500


def log_scale(popular: ScoredItems) -> float:
    """log1p of the top score of ``popular`` (best first): the popularity source's 1.0."""
    return math.log1p(max(float(popular.scores[0]), 0.0)) if len(popular) else 0.0


@dataclass(frozen=True)
class Snapshot:
    """Decayed popularity of the most popular items at one moment."""

    popular: ScoredItems
    by_category: dict[str, ScoredItems] = field(default_factory=dict)
    read_at: float = 0.0
    _scores: dict[str, float] = field(init=False, repr=False, compare=False)
    _scale: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_scores", self.popular.as_dict())
        object.__setattr__(self, "_scale", log_scale(self.popular))

    @classmethod
    def of(cls, popular: ScoredItems, catalog: Mapping[str, Item],
           read_at: float = 0.0) -> Snapshot:
        """Split ``popular`` (best first) into per-category lists of the catalog's categories."""
        lists: dict[str, list[int]] = {}
        for j, item_id in enumerate(popular.ids):
            item = catalog.get(item_id)
            if item is not None and item.category:
                rows = lists.setdefault(item.category, [])
                if len(rows) < PER_CATEGORY:
                    rows.append(j)
        by_category = {
            c: ScoredItems([popular.ids[j] for j in rows], popular.scores[rows])
            for c, rows in lists.items()
        }
        return cls(popular, by_category, read_at)

    @property
    def scale(self) -> float:
        """log1p of the top popularity (the popularity source's 1.0)."""
        return self._scale

    def ranked(self, category: str | None) -> Sequence[str]:
        """Every item the snapshot ranks, best first, overall (``None``) or of one category
        (the snapshot's own list, not a copy: callers read as far as they need)."""
        found = self.popular if category is None else self.by_category.get(category)
        return () if found is None else found.ids

    def top(self, category: str | None, n: int) -> ScoredItems:
        """The ``n`` most popular items, overall (``None``) or of one category."""
        found = self.popular if category is None else self.by_category.get(category)
        if found is None:
            return ScoredItems.empty()
        return ScoredItems(found.ids[:n], found.scores[:n])

    def scores(self, item_ids: Sequence[str]) -> npt.NDArray[np.float64]:
        """Popularity of each item; NaN where the snapshot does not know it."""
        # map over dict.get: the lookups run in C, not in a generator's frame.
        return np.fromiter(map(self._scores.get, item_ids, repeat(math.nan)), np.float64,
                           count=len(item_ids))


class PopularitySnapshot:
    """Keeps a :class:`Snapshot` of the state store's popularity, re-read when stale.

    Parameters
    ----------
    state
        Where popularity lives.
    catalog
        item id -> item (the live mapping), for the per-category lists.
    refresh_s
        Age after which the next request triggers a re-read in the background
        (it is served from the old snapshot meanwhile); 0 re-reads on every call.
    size
        How many of the most popular items the snapshot holds.
    clock
        Monotonic seconds (tests pass a fake).
    wall
        Unix seconds, for :meth:`epoch` (the same in every worker and host).
    """

    def __init__(self, state: DecayedCounters, catalog: Mapping[str, Item],
                 refresh_s: float = 1.0, size: int = 5_000,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.state = state
        self.catalog = catalog
        self.refresh_s = refresh_s
        self.size = size
        self.clock = clock
        self.wall = wall
        self._snapshot: Snapshot | None = None
        self._refreshing = threading.Lock()
        #: After a failed re-read, the next waits ``refresh_s`` (not one per request).
        self._next_try = -math.inf

    def current(self) -> Snapshot:
        """The latest snapshot (read now when there is none or ``refresh_s`` is 0).

        Raises :class:`core.errors.TemporaryFailure` only when no snapshot could
        ever be read; a failed background re-read keeps the old one (and logs).
        """
        snapshot = self._snapshot
        if snapshot is None or self.refresh_s <= 0:
            return self.refresh()
        due = max(snapshot.read_at + self.refresh_s, self._next_try)
        if self.clock() >= due and self._refreshing.acquire(blocking=False):
            threading.Thread(target=self._refresh_in_background, daemon=True,
                             name="streamrec-popularity").start()
        return snapshot

    def epoch(self, key: str) -> int:
        """The popularity epoch of ``key`` (a user): moves once every ``refresh_s``.

        A list built from popularity is at most an epoch old with respect to other
        shoppers' activity when its cache key holds this number. Epochs follow the wall
        clock, so every worker and host agrees on them; each key's boundaries are
        shifted by a phase hashed from it, so the lists of all users do not expire in
        the same instant (a recomputation stampede) but evenly over the period.
        With ``refresh_s`` 0 the epoch moves on every call.

        >>> snapshot = PopularitySnapshot(None, {}, refresh_s=10, wall=lambda: 1_000.0)
        >>> snapshot.epoch("u1") == snapshot.epoch("u1")
        True
        >>> later = PopularitySnapshot(None, {}, refresh_s=10, wall=lambda: 1_010.0)
        >>> later.epoch("u1") - snapshot.epoch("u1")
        1
        """
        if self.refresh_s <= 0:
            return time.time_ns()
        phase = zlib.crc32(key.encode()) / 2**32 * self.refresh_s
        return math.floor((self.wall() + phase) / self.refresh_s)

    def refresh(self) -> Snapshot:
        """Read the popularity now."""
        read_at = self.clock()
        snapshot = Snapshot.of(self.state.top_popular(self.size), self.catalog, read_at)
        self._snapshot = snapshot
        return snapshot

    def _refresh_in_background(self) -> None:
        try:
            self.refresh()
        except TemporaryFailure as exc:  # served from the old snapshot until Redis is back
            self._next_try = self.clock() + self.refresh_s
            log.warning("popularity snapshot not refreshed: %s", exc)
        finally:
            self._refreshing.release()


#: The all-time popularity artifact's base name in a model version folder.
COUNTS_FILE = "item_counts"
COUNTS_FORMAT = 1


@dataclass(frozen=True)
class ItemCounts:
    """All-time popularity of the trained log: distinct users per item, written by
    ``streamrec train`` (the ``popularity`` model's serving artifact) and read by the
    ``alltime`` source.

    The stream's popularity decays (a week's half-life): it says what sells now. How
    many shoppers ever bought an item is another signal, which the learned ranker
    weighs against the decayed one (an item rising now, or a steady seller); the state
    store keeps no undecayed count, so it comes with the model version, like the EASE
    neighbours. Data only: ``<base>.npz`` (ids, counts; read with ``allow_pickle=False``)
    and ``<base>.json`` (format, number of users).

    >>> import tempfile, pathlib
    >>> counts = ItemCounts(["a", "b"], np.array([3.0, 1.0]), users=4)
    >>> base = pathlib.Path(tempfile.mkdtemp()) / COUNTS_FILE
    >>> counts.save(base)
    >>> again = ItemCounts.load(base)
    >>> again.scores(["b", "zz", "a"]).round(3).tolist()
    [0.5, nan, 1.0]
    >>> again.top(1, set()).ids
    ['a']
    """

    item_ids: list[str]
    counts: npt.NDArray[np.float64]
    users: int = 0
    _index: dict[str, float] = field(init=False, repr=False, compare=False)
    _scale: float = field(init=False, repr=False, compare=False)
    _order: list[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.item_ids) != len(self.counts):
            raise ValueError("one count per item id")
        log_counts = np.log1p(np.maximum(np.asarray(self.counts, dtype=np.float64), 0.0))
        object.__setattr__(self, "_scale", float(log_counts.max()) if len(log_counts) else 0.0)
        object.__setattr__(self, "_index", dict(zip(self.item_ids, log_counts.tolist(),
                                                    strict=True)))
        # Best first, ties by id: what the source proposes.
        order = sorted(range(len(self.item_ids)), key=lambda j: (-self.counts[j],
                                                                  self.item_ids[j]))
        object.__setattr__(self, "_order", [self.item_ids[j] for j in order])

    def scores(self, item_ids: Sequence[str]) -> npt.NDArray[np.float64]:
        """log1p(count) / log1p(top count) in [0, 1]; NaN for an item the log never had
        (newer than the model: unknown, not unpopular)."""
        raw = np.fromiter(map(self._index.get, item_ids, repeat(math.nan)), np.float64,
                          count=len(item_ids))
        return raw / self._scale if self._scale > 0 else np.full(len(item_ids), math.nan)

    def top(self, n: int, excluded: set[str]) -> ScoredItems:
        """The ``n`` items most users had, not in ``excluded``, with their scores."""
        ids = list(islice((i for i in self._order if i not in excluded), max(n, 0)))
        return ScoredItems(ids, self.scores(ids))

    def save(self, base: Path) -> None:
        """Write ``<base>.npz`` and ``<base>.json`` (data only)."""
        write_arrays(base, {"format": COUNTS_FORMAT, "items": len(self.item_ids),
                            "users": self.users},
                     item_ids=np.array(self.item_ids, dtype=np.str_),
                     counts=np.asarray(self.counts, dtype=np.float64))

    @classmethod
    def load(cls, base: Path) -> ItemCounts:
        """Read what :meth:`save` wrote; no code is executed (``allow_pickle=False``)."""
        header, data = read_arrays(base, COUNTS_FORMAT, "item counts")
        return cls(data["item_ids"].tolist(), data["counts"].astype(np.float64),
                   int(header.get("users", 0)))
