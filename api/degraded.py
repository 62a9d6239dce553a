"""The degraded path: popular items while the state store (Redis) is down.

A recommendation needs the online state (recent items, profiles, popularity). When
the state store raises :class:`core.errors.TemporaryFailure`, the API still answers
``200`` with the most popular items it saw last, marked ``"degraded": true`` with a
``"reason"``, instead of failing the shop's page. The list comes from a small
in-process cache of the last good trending list, refreshed at most every
``refresh_s`` seconds after a successful request (one extra state read then); a
worker that never saw one answers in catalog order. Request filters (category,
price range, stock, excluded categories, the item being viewed) still apply;
personal filters (seen and bought items) cannot, since they live in Redis.

>>> from core.types import Item
>>> catalog = {"a": Item("a", "A", "Mugs", 1.0), "b": Item("b", "B", "Bags", 2.0)}
>>> fallback = PopularFallback(catalog)
>>> [r.item.item_id for r in fallback.items(k=1)]
['a']
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from flask import current_app

from core.errors import TemporaryFailure
from core.ports import RecRequest
from core.types import Item
from online_models.serving.filters import CandidateFilter
from online_models.serving.pipeline import Recommendation, Recommender, ScoredRecommendation

__all__ = ["DEFAULT_REFRESH_S", "PopularFallback", "degraded_body", "popular_fallback"]

log = logging.getLogger(__name__)

#: Default seconds between two refreshes of the cached list (``degraded_refresh_s``).
DEFAULT_REFRESH_S = 10.0
#: Items kept in the cached list: enough for k=200 after the request filters.
CACHED_ITEMS = 500


class PopularFallback:
    """The last good trending list of one worker, served while the state store is down.

    Parameters
    ----------
    catalog
        item id -> item (the live mapping: items added later are served too).
    refresh_s
        Minimum seconds between two refreshes from the recommender.
    size
        Items kept.
    clock
        Monotonic seconds (tests pass a fake).
    """

    def __init__(
        self, catalog: Mapping[str, Item], refresh_s: float = DEFAULT_REFRESH_S,
        size: int = CACHED_ITEMS, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.catalog = catalog
        self.refresh_s = refresh_s
        self.size = size
        self.clock = clock
        self._popular: list[tuple[str, float]] = []
        self._refreshed_at: float | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"PopularFallback(refresh_s={self.refresh_s:g}, size={self.size})"

    @property
    def has_popular(self) -> bool:
        """Whether a trending list was cached (else answers are in catalog order)."""
        return bool(self._popular)

    def maybe_refresh(self, recommender: Recommender) -> bool:
        """Cache the current trending list if the last one is ``refresh_s`` old.

        Returns whether it refreshed. A state store failure here is not the
        caller's problem: the old list stays.
        """
        now = self.clock()
        with self._lock:
            if self._refreshed_at is not None and now - self._refreshed_at < self.refresh_s:
                return False
            self._refreshed_at = now  # one refresher at a time, even if this one fails
        try:
            trending = recommender.trending(self.size)
        except TemporaryFailure as exc:
            log.warning("could not refresh the degraded-path list: %s", exc)
            return False
        if trending.items:
            self._popular = [(r.item.item_id, r.score) for r in trending.items]
        return True

    def items(
        self, k: int, request: RecRequest | None = None,
        candidate_filter: CandidateFilter | None = None,
    ) -> list[ScoredRecommendation]:
        """Up to ``k`` popular items that pass the request's and the rules' filters (the
        recommender's own filter object)."""
        ranked = self._popular or [(i, 0.0) for i in self.catalog]
        label = "Popular right now" if self._popular else "From our catalog"
        allowed = (candidate_filter or CandidateFilter()).allowed(request)
        out: list[ScoredRecommendation] = []
        for item_id, score in ranked:
            item = self.catalog.get(item_id)
            if item is None or not allowed(item):
                continue
            sources = {"popularity": score} if self._popular else {}
            out.append(ScoredRecommendation(item, score, sources, label))
            if len(out) == k:
                break
        return out


def popular_fallback() -> PopularFallback:
    """The current app's fallback (built with its services)."""
    found: PopularFallback = current_app.extensions["streamrec"].fallback
    return found


def degraded_body(recommendation: Recommendation, reason: str) -> dict[str, Any]:
    """The JSON of a degraded answer: the usual shape plus ``degraded`` and ``reason``."""
    return {**recommendation.to_dict(), "degraded": True, "reason": reason}
