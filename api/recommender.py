"""The recommender behind the API: candidates -> score -> blend -> filter -> explain.

Sources (each proposes candidates and scores them in [0, 1]):

* ``content`` -- cosine between the user's content profile and each item's
  embedding (candidates from the FAISS index);
* ``collab`` -- cosine between the user's ALS vector (folded in from their
  weighted history after every event) and each item's factors (candidates from
  a FAISS index over the item factors), when a model was trained;
* ``covisit`` -- items co-visited with the user's most recent items (decayed
  co-occurrence counts, scaled by the strongest one);
* ``popularity`` -- decayed popularity, log-scaled to [0, 1] against the most
  popular item (candidates from the state store).

An item's blended score is the weighted sum of the sources that could score it;
a source that cannot score an item is left out of its ``sources`` (never a 0).
A user with no profile (a new user) gets popular items.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.ports import ALL_ITEMS, StateStore, VectorIndex, category_scope, covisit_scope
from core.types import Item, ScoredItems
from online_models.als_foldin import ALSFoldIn

__all__ = ["Recommendation", "Recommender", "ScoredRecommendation"]


CollaborativeModels = Callable[[], tuple[ALSFoldIn | None, VectorIndex | None]]

#: How many of the user's latest items anchor co-visitation candidates.
COVISIT_ANCHORS = 3


@dataclass(frozen=True, slots=True)
class ScoredRecommendation:
    item: Item
    score: float
    sources: dict[str, float]
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "item_id": self.item.item_id,
            "name": self.item.name,
            "category": self.item.category,
            "price": self.item.price,
            "score": round(self.score, 6),
            "sources": {k: round(v, 6) for k, v in self.sources.items()},
            "reason": self.reason,
        }


@dataclass(frozen=True)
class Recommendation:
    user_id: str | None
    items: list[ScoredRecommendation]
    rec_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"rec_id": self.rec_id, "items": [i.to_dict() for i in self.items]}
        if self.user_id is not None:
            body = {"user_id": self.user_id, **body}
        return body


class Recommender:
    """Merges content and popularity scores into ranked recommendations.

    Parameters
    ----------
    state
        Online state (profiles, recent items, popularity).
    index
        Item embeddings.
    catalog
        item id -> item; items not in the catalog are never recommended.
    weights
        Blend weight per source (``content``, ``collab``, ``covisit``, ``popularity``).
    recent_max
        How many recent items count as "seen" and are excluded.
    models
        Returns the current ALS fold-in and an index over its item factors
        (``(None, None)`` without a trained model).
    """

    def __init__(
        self,
        state: StateStore,
        index: VectorIndex,
        catalog: Mapping[str, Item],
        weights: Mapping[str, float],
        recent_max: int = 50,
        models: CollaborativeModels | None = None,
    ) -> None:
        self.state = state
        self.index = index
        self.catalog = catalog
        self.weights = dict(weights)
        self.recent_max = recent_max
        self.models = models

    def _popularity_scale(self, popular: ScoredItems) -> float:
        return math.log1p(float(popular.scores.max())) if len(popular) else 0.0

    def _popularity_scores(self, ids: list[str], scale: float) -> dict[str, float]:
        if not ids or scale <= 0:
            return {}
        raw = self.state.popularity(ids).as_dict()
        return {i: min(1.0, math.log1p(max(v, 0.0)) / scale) for i, v in raw.items()}

    def _content_scores(self, profile: np.ndarray, ids: list[str]) -> dict[str, float]:
        vectors = self.index.get(ids)
        return {i: max(0.0, float(np.dot(profile, v))) for i, v in vectors.items()}

    def _user_factors(self, user_id: str) -> tuple[np.ndarray | None, VectorIndex | None]:
        """The user's collaborative vector (stored, or folded in now) and the factor index."""
        foldin, item_index = self.models() if self.models is not None else (None, None)
        if foldin is None or item_index is None:
            return None, None
        vector = self.state.get_user_factors([user_id], foldin.version).get(user_id)
        if vector is None:  # a model newer than the user's last event: fold in now
            history = self.state.get_histories([user_id]).get(user_id)
            vector = foldin.user_vector(history) if history else None
        if vector is None or not np.any(vector):
            return None, None
        return vector, item_index

    def _covisited(
        self, anchors: list[str], tops: Mapping[str, ScoredItems]
    ) -> tuple[dict[str, float], dict[str, str]]:
        """Co-visitation scores in [0, 1] and, per item, the anchor that links it most."""
        total: dict[str, float] = {}
        best: dict[str, tuple[float, str]] = {}
        for anchor in anchors:
            for item_id, weight in tops[covisit_scope(anchor)].as_dict().items():
                total[item_id] = total.get(item_id, 0.0) + weight
                if weight > best.get(item_id, (0.0, ""))[0]:
                    best[item_id] = (weight, anchor)
        top = max(total.values(), default=0.0)
        if top <= 0:
            return {}, {}
        return {i: v / top for i, v in total.items()}, {i: a for i, (_, a) in best.items()}

    def _reason(self, sources: Mapping[str, float], anchor: str | None) -> str:
        contributions = {n: self.weights.get(n, 0.0) * v for n, v in sources.items()}
        main = max(contributions, key=lambda n: contributions[n], default="popularity")
        if main == "covisit" and anchor is not None and anchor in self.catalog:
            return f"Because you viewed {self.catalog[anchor].name}"
        if main == "content":
            return "Similar to what you viewed"
        if main == "collab":
            return "Shoppers like you bought this"
        return "Popular right now"

    def recommend(self, user_id: str, k: int) -> Recommendation:
        """Top-``k`` items for ``user_id``, excluding the items they touched recently."""
        seen = self.state.recent_items(user_id, self.recent_max)
        profile = self.state.get_profiles([user_id]).get(user_id)
        n_candidates = max(3 * k, 50)
        anchors = seen[:COVISIT_ANCHORS]
        tops = self.state.top_popular_many(
            [ALL_ITEMS, *(covisit_scope(a) for a in anchors)], n_candidates + len(seen)
        )
        popular = tops[ALL_ITEMS]
        scale = self._popularity_scale(popular)
        covisit, anchor_of = self._covisited(anchors, tops)
        user_factors, factor_index = self._user_factors(user_id)

        candidates: list[str] = list(covisit)
        collab: dict[str, float] = {}
        if user_factors is not None and factor_index is not None:
            found = factor_index.search(user_factors, n_candidates, exclude=seen)
            collab = {i: max(0.0, s) for i, s in found.as_dict().items()}
            candidates.extend(found.ids)
        content: dict[str, float] = {}
        if profile is not None:
            hits = self.index.search(profile, n_candidates, exclude=seen)
            content = {i: max(0.0, s) for i, s in hits.as_dict().items()}
            candidates.extend(hits.ids)
        excluded = set(seen)
        candidates.extend(popular.ids)
        candidates = [
            i for i in dict.fromkeys(candidates) if i not in excluded and i in self.catalog
        ]
        if not candidates and profile is None:
            # Nothing popular yet (an empty store): fall back to catalog order.
            candidates = [i for i in list(self.catalog)[: n_candidates] if i not in excluded]

        pop = self._popularity_scores(candidates, scale)
        if profile is not None:
            missing = [i for i in candidates if i not in content]
            content.update(self._content_scores(profile, missing))
        if user_factors is not None and factor_index is not None:
            unit = user_factors / np.linalg.norm(user_factors)
            missing = [i for i in candidates if i not in collab]
            collab.update({
                i: max(0.0, float(np.dot(unit, v))) for i, v in factor_index.get(missing).items()
            })

        scored: list[ScoredRecommendation] = []
        for item_id in candidates:
            sources: dict[str, float] = {}
            if item_id in content:
                sources["content"] = content[item_id]
            if item_id in collab:
                sources["collab"] = collab[item_id]
            if item_id in covisit:
                sources["covisit"] = covisit[item_id]
            if item_id in pop:
                sources["popularity"] = pop[item_id]
            score = sum(self.weights.get(name, 0.0) * value for name, value in sources.items())
            reason = self._reason(sources, anchor_of.get(item_id))
            scored.append(ScoredRecommendation(self.catalog[item_id], score, sources, reason))
        scored.sort(key=lambda r: (-r.score, r.item.item_id))
        return Recommendation(user_id, scored[:k])

    def similar(self, item_id: str, k: int) -> Recommendation | None:
        """Items whose content is closest to ``item_id``; None for an unknown item."""
        vector = self.index.get([item_id]).get(item_id)
        if vector is None:
            return None
        hits = self.index.search(vector, k + 1, exclude=[item_id])
        name = self.catalog[item_id].name if item_id in self.catalog else item_id
        items = [
            ScoredRecommendation(self.catalog[i], s, {"content": s}, f"Similar to {name}")
            for i, s in zip(hits.ids, hits.scores.tolist(), strict=True)
            if i in self.catalog
        ]
        return Recommendation(None, items[:k])

    def trending(self, k: int, category: str | None = None) -> Recommendation:
        """The most popular items now, overall or in one category."""
        scope = ALL_ITEMS if category is None else category_scope(category)
        popular = self.state.top_popular(k * 2, scope)
        scale = self._popularity_scale(popular)
        label = "Trending now" if category is None else f"Trending in {category}"
        items = [
            ScoredRecommendation(
                self.catalog[i], p, {"popularity": p}, label
            )
            for i, p in self._popularity_scores(popular.ids, scale).items()
            if i in self.catalog
        ]
        items.sort(key=lambda r: (-r.score, r.item.item_id))
        return Recommendation(None, items[:k])
