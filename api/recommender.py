"""The recommender behind the API: candidates -> score -> blend -> filter -> diversify -> explain.

Sources (each proposes candidates and scores any candidate it can, in [0, 1]):

* ``content`` -- cosine between the user's content profile and each item's
  embedding (candidates from the FAISS index);
* ``collab`` -- cosine between the user's ALS vector (folded in from their
  weighted history after every event) and each item's factors (candidates from
  a FAISS index over the item factors), when a model was trained;
* ``covisit`` -- items co-visited with the user's most recent items (decayed
  co-occurrence counts, scaled by the strongest one);
* ``context`` -- cosine to the item the user is looking at (``context_item``);
* ``popularity`` -- decayed popularity, log-scaled to [0, 1] against the most
  popular item; trending items of the user's favourite (or chosen) categories
  join the candidates too.

An item's blended score is the weighted sum (weights of the user's A/B variant)
of the sources that could score it; a source that cannot score an item is left
out of its ``sources`` (never a 0). A new user gets trending items, plus those of
their preferred categories.
"""

from __future__ import annotations

import math
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from api.experiments import VariantAssigner
from core.ports import (
    ALL_ITEMS,
    SearchIndex,
    StateStore,
    VectorIndex,
    category_scope,
    covisit_scope,
)
from core.types import Item, ScoredItems
from online_models.als_foldin import ALSFoldIn
from online_models.blender import OnlineBlender

__all__ = ["RecRequest", "Recommendation", "Recommender", "Rules", "ScoredRecommendation"]

CollaborativeModels = Callable[[], tuple[ALSFoldIn | None, SearchIndex | None]]

#: A candidate while ranking: (-score, item id, per-source scores).
_Row = tuple[float, str, dict[str, float]]

#: How many of the user's latest items anchor co-visitation candidates.
COVISIT_ANCHORS = 3
#: How many favourite categories of a user bring their trending items.
FAVOURITE_CATEGORIES = 2


@dataclass(frozen=True)
class RecRequest:
    """What a caller asks for; every field but ``user_id`` and ``k`` is optional."""

    user_id: str
    k: int
    context_item: str | None = None
    category: str | None = None
    preferred_categories: tuple[str, ...] = ()
    min_price: float | None = None
    max_price: float | None = None
    variant: str | None = None


@dataclass(frozen=True)
class Rules:
    """Business rules applied after blending."""

    exclude_purchased: bool = True
    excluded_categories: frozenset[str] = frozenset()
    #: At most this many items of one category in a list (0 = no cap).
    max_per_category: int = 0


@dataclass(frozen=True, slots=True)
class ScoredRecommendation:
    item: Item
    score: float
    sources: dict[str, float]
    reason: str = ""
    #: The source that contributed most to the score (for attribution of clicks).
    lead_source: str = "popularity"

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
    variant: str | None = None

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"rec_id": self.rec_id}
        if self.variant is not None:
            body["variant"] = self.variant
        body["items"] = [i.to_dict() for i in self.items]
        if self.user_id is not None:
            body = {"user_id": self.user_id, **body}
        return body


@dataclass
class _Context:
    """What the pipeline knows about one request."""

    request: RecRequest
    seen: list[str]
    excluded: set[str]
    profile: np.ndarray | None
    user_factors: np.ndarray | None
    factor_index: SearchIndex | None
    context_vector: np.ndarray | None
    candidates: dict[str, None] = field(default_factory=dict)
    #: log1p of the top popularity now (the popularity source's scale).
    popularity_scale: float = 0.0
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    anchor_of: dict[str, str] = field(default_factory=dict)

    def propose(self, ids: Sequence[str]) -> None:
        self.candidates.update(dict.fromkeys(ids))


class Recommender:
    """Merges several sources into ranked, filtered, diversified, explained items.

    Parameters
    ----------
    state
        Online state (profiles, recent items, popularity, co-visitation, histories).
    index
        Item content embeddings.
    catalog
        item id -> item; items not in the catalog are never recommended.
    weights
        Blend weight per source for users of no configured variant.
    recent_max
        How many recent items count as "seen" and are excluded.
    models
        Returns the current ALS fold-in and an index over its item factors
        (``(None, None)`` without a trained model).
    variants
        Traffic share per A/B variant; ``variant_weights`` gives each its blend weights.
    rules
        Filters and diversification.
    blender
        Returns the online blender's current model (None before it learnt anything);
        variants in ``learned_variants`` rank by its click probability.
    """

    def __init__(
        self,
        state: StateStore,
        index: VectorIndex,
        catalog: Mapping[str, Item],
        weights: Mapping[str, float],
        recent_max: int = 50,
        models: CollaborativeModels | None = None,
        variants: Mapping[str, float] | None = None,
        variant_weights: Mapping[str, Mapping[str, float]] | None = None,
        rules: Rules | None = None,
        blender: Callable[[], Any] | None = None,
        learned_variants: Sequence[str] = (),
    ) -> None:
        self.state = state
        self.index = index
        self.catalog = catalog
        self.weights = dict(weights)
        self.recent_max = recent_max
        self.models = models
        self.assigner = VariantAssigner(variants or {"default": 1.0})
        self.variant_weights = {k: dict(v) for k, v in (variant_weights or {}).items()}
        self.rules = rules or Rules()
        self.blender = blender
        self.learned_variants = frozenset(learned_variants)

    # --- the pipeline --------------------------------------------------------------------
    def recommend(self, user_id: str, k: int, **options: Any) -> Recommendation:
        """Top-``k`` items for ``user_id`` (options: the other fields of :class:`RecRequest`)."""
        return self.run(RecRequest(user_id, k, **options))

    def run(self, request: RecRequest) -> Recommendation:
        variant = request.variant or self.assigner.variant(request.user_id)
        weights = self.variant_weights.get(variant, self.weights)
        ctx = self._context(request)
        n = max(2 * request.k, 30)  # per source: enough to fill k after the filters
        self._candidates(ctx, n)
        self._score(ctx)
        model = (self.blender() if self.blender is not None
                 and variant in self.learned_variants else None)
        ranked = self._blend(ctx, weights, model)
        kept = (r for r in ranked if self._allowed(self.catalog[r[1]], ctx))
        chosen = self._diversify(kept, request.k)
        return Recommendation(request.user_id, [self._explain(ctx, weights, row)
                                                for row in chosen], variant=variant)

    def _context(self, request: RecRequest) -> _Context:
        foldin, factor_index = self.models() if self.models is not None else (None, None)
        user = self.state.user_state(request.user_id, self.recent_max,
                                     foldin.version if foldin is not None else "")
        excluded = set(user.recent)
        if self.rules.exclude_purchased:
            excluded |= user.purchased
        context_vector = None
        if request.context_item is not None:
            excluded.add(request.context_item)
            context_vector = self.index.get([request.context_item]).get(request.context_item)
        user_factors = None
        if foldin is not None and factor_index is not None:
            user_factors = user.factors
            if user_factors is None and user.history:  # a newer model: fold in now
                user_factors = foldin.user_vector(user.history)
            if user_factors is not None and not np.any(user_factors):
                user_factors = None
        profile = user.profile
        if profile is not None:
            norm = float(np.linalg.norm(profile))
            profile = profile / norm if norm > 0 else None  # a mean: cosine wants unit
        return _Context(
            request=request, seen=user.recent, excluded=excluded, profile=profile,
            user_factors=user_factors,
            factor_index=factor_index if user_factors is not None else None,
            context_vector=context_vector,
        )

    def _candidates(self, ctx: _Context, n: int) -> None:
        request, exclude = ctx.request, list(ctx.excluded)
        anchors = ([request.context_item] if request.context_item else []) + [
            i for i in ctx.seen[:COVISIT_ANCHORS] if i != request.context_item
        ]
        categories = list(request.preferred_categories)
        if request.category:
            categories.insert(0, request.category)
        categories += self._favourite_categories(ctx.seen)
        scopes = [ALL_ITEMS, *(covisit_scope(a) for a in anchors),
                  *(category_scope(c) for c in dict.fromkeys(categories))]
        tops = self.state.top_popular_many(scopes, n + len(exclude))

        covisit, ctx.anchor_of = self._covisited(anchors, tops)
        ctx.scores["covisit"] = covisit
        ctx.propose(list(covisit))
        if ctx.context_vector is not None:
            hits = self.index.search(ctx.context_vector, n, exclude=exclude)
            ctx.scores["context"] = {i: max(0.0, s) for i, s in hits.as_dict().items()}
            ctx.propose(hits.ids)
        if ctx.profile is not None:
            hits = self.index.search(ctx.profile, n, exclude=exclude)
            ctx.scores["content"] = {i: max(0.0, s) for i, s in hits.as_dict().items()}
            ctx.propose(hits.ids)
        if ctx.user_factors is not None and ctx.factor_index is not None:
            hits = ctx.factor_index.search(ctx.user_factors, n, exclude=exclude)
            ctx.scores["collab"] = {i: max(0.0, s) for i, s in hits.as_dict().items()}
            ctx.propose(hits.ids)
        # Popular lists fill what personal sources leave: k of each (after exclusions).
        for scope in scopes:
            if not scope.startswith("co:"):
                ctx.propose(tops[scope].ids[: request.k + len(exclude)])
        ctx.popularity_scale = self._scale(tops[ALL_ITEMS])
        if not ctx.candidates:  # an empty store: fall back to catalog order
            ctx.propose(list(self.catalog)[:n])

    def _score(self, ctx: _Context) -> None:
        """Every source scores the candidates it did not propose, where it can."""
        ids = [i for i in ctx.candidates if i not in ctx.excluded and i in self.catalog]
        ctx.candidates = dict.fromkeys(ids)
        ctx.scores["popularity"] = self._popularity_scores(ids, ctx.popularity_scale)
        for name, query in (("content", ctx.profile), ("context", ctx.context_vector)):
            if query is not None:
                have = ctx.scores.setdefault(name, {})
                have.update(self._cosines(self.index, query, [i for i in ids if i not in have]))
        if ctx.user_factors is not None and ctx.factor_index is not None:
            have = ctx.scores.setdefault("collab", {})
            missing = [i for i in ids if i not in have]
            have.update(self._cosines(ctx.factor_index, ctx.user_factors, missing))

    def _blend(
        self, ctx: _Context, weights: Mapping[str, float], model: Any = None
    ) -> list[_Row]:
        """Every candidate's blended score, best first (explained later, for the top k)."""
        rows: list[_Row] = []
        for item_id in ctx.candidates:
            sources = {name: by_item[item_id] for name, by_item in ctx.scores.items()
                       if item_id in by_item}
            if model is not None:  # the online blender: probability of a click
                score = OnlineBlender.score(model, sources)
            else:
                score = sum(weights.get(name, 0.0) * value for name, value in sources.items())
            rows.append((-score, item_id, sources))
        rows.sort(key=lambda row: (row[0], row[1]))
        return rows

    def _explain(self, ctx: _Context, weights: Mapping[str, float], row: _Row
                 ) -> ScoredRecommendation:
        negative_score, item_id, sources = row
        lead = self._lead(sources, weights)
        return ScoredRecommendation(self.catalog[item_id], -negative_score, sources,
                                    self._reason(lead, ctx.anchor_of.get(item_id)), lead)

    def _allowed(self, item: Item, ctx: _Context) -> bool:
        request = ctx.request
        return (
            item.in_stock
            and item.category not in self.rules.excluded_categories
            and (request.category is None or item.category == request.category)
            and (request.min_price is None or item.price >= request.min_price)
            and (request.max_price is None or item.price <= request.max_price)
        )

    def _diversify(self, ranked: Iterable[_Row], k: int) -> list[_Row]:
        """The first ``k`` rows, at most ``max_per_category`` of one category (0: no cap)."""
        cap = self.rules.max_per_category
        taken: Counter[str] = Counter()
        out: list[_Row] = []
        for row in ranked:
            if len(out) == k:
                break
            category = self.catalog[row[1]].category
            if cap <= 0 or taken[category] < cap:
                taken[category] += 1
                out.append(row)
        return out

    # --- sources -------------------------------------------------------------------------
    @staticmethod
    def _scale(popular: ScoredItems) -> float:
        return math.log1p(float(popular.scores.max())) if len(popular) else 0.0

    def _popularity_scores(self, ids: list[str], scale: float) -> dict[str, float]:
        if not ids or scale <= 0:
            return {}
        raw = self.state.popularity(ids).as_dict()
        return {i: min(1.0, math.log1p(max(v, 0.0)) / scale) for i, v in raw.items()}

    @staticmethod
    def _cosines(index: SearchIndex, query: np.ndarray, ids: list[str]) -> dict[str, float]:
        vectors = index.get(ids) if ids else {}
        if not vectors:
            return {}
        unit = query / (np.linalg.norm(query) or 1.0)
        scores = np.maximum(np.stack(list(vectors.values())) @ unit, 0.0)
        return dict(zip(vectors, scores.tolist(), strict=True))

    def _favourite_categories(self, seen: list[str]) -> list[str]:
        counts = Counter(self.catalog[i].category for i in seen if i in self.catalog)
        return [c for c, _ in counts.most_common(FAVOURITE_CATEGORIES) if c]

    @staticmethod
    def _covisited(
        anchors: list[str], tops: Mapping[str, ScoredItems]
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

    @staticmethod
    def _lead(sources: Mapping[str, float], weights: Mapping[str, float]) -> str:
        contributions = {n: weights.get(n, 0.0) * v for n, v in sources.items()}
        return max(contributions, key=lambda n: contributions[n], default="popularity")

    def _reason(self, main: str, anchor: str | None) -> str:
        if main == "covisit" and anchor is not None and anchor in self.catalog:
            return f"Because you viewed {self.catalog[anchor].name}"
        return {
            "content": "Similar to what you viewed",
            "collab": "Shoppers like you bought this",
            "context": "Goes with this item",
        }.get(main, "Popular right now")

    # --- other lists ---------------------------------------------------------------------
    def similar(self, item_id: str, k: int) -> Recommendation | None:
        """Items whose content is closest to ``item_id``; None for an unknown item."""
        vector = self.index.get([item_id]).get(item_id)
        if vector is None:
            return None
        hits = self.index.search(vector, k + 1, exclude=[item_id])
        name = self.catalog[item_id].name if item_id in self.catalog else item_id
        items = [
            ScoredRecommendation(self.catalog[i], s, {"content": s}, f"Similar to {name}",
                                 "content")
            for i, s in zip(hits.ids, hits.scores.tolist(), strict=True)
            if i in self.catalog
        ]
        return Recommendation(None, items[:k])

    def trending(self, k: int, category: str | None = None) -> Recommendation:
        """The most popular items now, overall or in one category."""
        scope = ALL_ITEMS if category is None else category_scope(category)
        popular = self.state.top_popular(k * 2, scope)
        scale = self._scale(popular)
        label = "Trending now" if category is None else f"Trending in {category}"
        items = [
            ScoredRecommendation(self.catalog[i], p, {"popularity": p}, label)
            for i, p in self._popularity_scores(popular.ids, scale).items()
            if i in self.catalog
        ]
        items.sort(key=lambda r: (-r.score, r.item.item_id))
        return Recommendation(None, items[:k])
