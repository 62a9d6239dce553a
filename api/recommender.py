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

import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import islice, repeat
from operator import attrgetter
from typing import Any

import numpy as np
import numpy.typing as npt

from api.experiments import VariantAssigner
from api.popularity import PopularitySnapshot, Snapshot, log_scale
from core.ports import ALL_ITEMS, SearchIndex, StateStore, VectorIndex, category_scope
from core.types import Item, ScoredItems
from online_models.als_foldin import ALSFoldIn
from online_models.blender import OnlineBlender

__all__ = ["RecRequest", "Recommendation", "Recommender", "Rules", "ScoredRecommendation"]

CollaborativeModels = Callable[[], tuple[ALSFoldIn | None, SearchIndex | None]]

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


#: Why an item is shown, by its leading source (co-visitation names its anchor).
_REASONS = {
    "content": "Similar to what you viewed",
    "collab": "Shoppers like you bought this",
    "context": "Goes with this item",
}

#: The sources, in the order a response lists them.
SOURCES = ("covisit", "context", "content", "collab", "popularity")
_COLUMN = {name: j for j, name in enumerate(SOURCES)}
_CATEGORY = attrgetter("category")


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
    covisited: dict[str, ScoredItems]
    popular: Snapshot
    candidates: dict[str, None] = field(default_factory=dict)
    #: Scores of the candidates each source proposed (the others are scored later).
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    anchor_of: dict[str, str] = field(default_factory=dict)

    def propose(self, ids: Iterable[str]) -> None:
        self.candidates.update(dict.fromkeys(ids))


@dataclass
class _Scored:
    """Candidates (allowed ones only) and every source's score of each; NaN: cannot score."""

    ids: list[str]
    matrix: np.ndarray
    #: Where ``matrix`` is not NaN.
    known: npt.NDArray[np.bool_] = field(init=False)

    def __post_init__(self) -> None:
        self.known = ~np.isnan(self.matrix)

    def sources(self, row: int) -> dict[str, float]:
        return _known_sources(self.matrix[row].tolist())


def _known_sources(line: Sequence[float]) -> dict[str, float]:
    """Source name -> score of one matrix row, the sources that could score it only."""
    return {name: v for name, v in zip(SOURCES, line, strict=True) if v == v}  # NaN != NaN


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
    popularity
        The process's popularity snapshot (default: re-read on every request).
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
        popularity: PopularitySnapshot | None = None,
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
        self.popularity = popularity or PopularitySnapshot(state, catalog, refresh_s=0)

    # --- the pipeline --------------------------------------------------------------------
    def recommend(self, user_id: str, k: int, **options: Any) -> Recommendation:
        """Top-``k`` items for ``user_id`` (options: the other fields of :class:`RecRequest`)."""
        return self.run(RecRequest(user_id, k, **options))

    def run(self, request: RecRequest) -> Recommendation:
        variant = request.variant or self.assigner.variant(request.user_id)
        weights = self.variant_weights.get(variant, self.weights)
        n = max(2 * request.k, 30)  # per source: enough to fill k after the filters
        ctx = self._context(request, n)
        self._candidates(ctx, n)
        scored = self._score(ctx)
        model = (self.blender() if self.blender is not None
                 and variant in self.learned_variants else None)
        w = _weight_vector(weights)
        order = self._rank(scored, w, model)
        chosen = self._choose(ctx, scored, order, request.k)
        return Recommendation(request.user_id, self._explain(ctx, w, scored, chosen),
                              variant=variant)

    def _context(self, request: RecRequest, n: int) -> _Context:
        foldin, factor_index = self.models() if self.models is not None else (None, None)
        anchors = [request.context_item] if request.context_item else []
        # Co-visited lists come without what the user has seen (or bought, by the rules):
        # n usable items per anchor, not n plus up to recent_max to throw away here.
        user = self.state.user_state(
            request.user_id, self.recent_max, foldin.version if foldin is not None else "",
            covisit_n=n, anchors=anchors, recent_anchors=COVISIT_ANCHORS,
            history="without_factors" if foldin is not None else "never",
            covisit_skip="seen_and_purchased" if self.rules.exclude_purchased else "seen")
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
            context_vector=context_vector, covisited=user.covisited,
            popular=self.popularity.current(),
        )

    def _candidates(self, ctx: _Context, n: int) -> None:
        request, exclude = ctx.request, list(ctx.excluded)
        covisit, ctx.anchor_of = self._covisited(ctx.covisited)
        ctx.scores["covisit"] = covisit
        ctx.propose(self._first(covisit, n, ctx.excluded))  # strongest first
        searches = (("context", self.index, ctx.context_vector),
                    ("content", self.index, ctx.profile),
                    ("collab", ctx.factor_index, ctx.user_factors))
        for name, index, query in searches:
            if index is not None and query is not None:
                hits = index.search(query, n, exclude=exclude)
                ctx.scores[name] = dict(zip(hits.ids, np.maximum(hits.scores, 0.0).tolist(),
                                            strict=True))
                ctx.propose(hits.ids)
        # Popular lists fill what personal sources leave: k of each (after exclusions).
        categories = list(request.preferred_categories)
        if request.category:
            categories.insert(0, request.category)
        categories += self._favourite_categories(ctx.seen)
        for category in [None, *dict.fromkeys(categories)]:
            ctx.propose(self._first(ctx.popular.ranked(category), request.k, ctx.excluded))
        if not ctx.candidates:  # an empty store: fall back to catalog order
            ctx.propose(list(self.catalog)[:n])

    @staticmethod
    def _first(ids: Iterable[str], n: int, excluded: set[str]) -> list[str]:
        """The first ``n`` of ``ids`` not in ``excluded``."""
        return list(islice((i for i in ids if i not in excluded), max(n, 0)))

    def _score(self, ctx: _Context) -> _Scored:
        """Every source scores every candidate it can (NaN where it cannot).

        Rows are in item id order, so a stable sort by score breaks ties by id.
        """
        # Set operations on the key views: the ~100 membership tests run in C.
        ids = sorted((ctx.candidates.keys() & self.catalog.keys()) - ctx.excluded)
        matrix = np.full((len(ids), len(SOURCES)), np.nan)
        for name, by_item in ctx.scores.items():
            matrix[:, _COLUMN[name]] = _lookup(by_item, ids)
        lookups = (("content", self.index, ctx.profile),
                   ("context", self.index, ctx.context_vector),
                   ("collab", ctx.factor_index, ctx.user_factors))
        for name, index, query in lookups:
            if index is None or query is None:
                continue
            column = matrix[:, _COLUMN[name]]
            missing = np.flatnonzero(np.isnan(column))
            at, vectors = index.vectors_of(list(map(ids.__getitem__, missing.tolist())))
            if at:
                unit = query / (np.linalg.norm(query) or 1.0)
                column[missing[at]] = np.maximum(vectors @ unit, 0.0)
        scale = ctx.popular.scale
        if ids and scale > 0:
            matrix[:, _COLUMN["popularity"]] = log_scaled(ctx.popular.scores(ids), scale)
        return _Scored(ids, matrix)

    def _rank(self, scored: _Scored, w: np.ndarray, model: Any = None
              ) -> list[tuple[int, float]]:
        """(row, blended score) of every candidate, best first, ties by item id.

        ``w``: the blend weights in ``SOURCES`` order (unless ``model`` ranks).
        """
        if not scored.ids:
            return []
        if model is not None:  # the online blender: probability of a click
            blended = np.array([OnlineBlender.score(model, scored.sources(j))
                                for j in range(len(scored.ids))], dtype=np.float64)
        else:
            blended = np.where(scored.known, scored.matrix, 0.0) @ w
        order = np.argsort(-blended, kind="stable")  # rows are in id order: ties by id
        return list(zip(order.tolist(), blended[order].tolist(), strict=True))

    def _choose(self, ctx: _Context, scored: _Scored, order: Iterable[tuple[int, float]],
                k: int) -> list[tuple[int, float]]:
        """The first ``k`` allowed rows, at most ``max_per_category`` of one category."""
        cap = self.rules.max_per_category
        taken: Counter[str] = Counter()
        out: list[tuple[int, float]] = []
        allowed, catalog, ids = self._allowed(ctx.request), self.catalog, scored.ids
        for row, score in order:
            if len(out) == k:
                break
            item = catalog[ids[row]]
            if not allowed(item):
                continue
            if cap <= 0 or taken[item.category] < cap:
                taken[item.category] += 1
                out.append((row, score))
        return out

    def _explain(self, ctx: _Context, w: np.ndarray, scored: _Scored,
                 chosen: Sequence[tuple[int, float]]) -> list[ScoredRecommendation]:
        """The chosen rows as items with their sources, leading source and reason.

        The lead is the source contributing most under the weights ``w`` (the first in
        ``SOURCES`` order on ties; popularity when no source could score the item).
        """
        if not chosen:
            return []
        rows = [row for row, _ in chosen]
        values = scored.matrix[rows]
        known = scored.known[rows]
        contributions = np.where(known, values * w, -np.inf)
        leads = [SOURCES[j] if has_any else "popularity" for j, has_any in
                 zip(contributions.argmax(axis=1).tolist(), np.any(known, axis=1).tolist(),
                     strict=True)]
        catalog, ids, anchor_of = self.catalog, scored.ids, ctx.anchor_of
        return [ScoredRecommendation(catalog[item_id], score, _known_sources(line),
                                     self._reason(lead, anchor_of.get(item_id)), lead)
                for item_id, (_, score), lead, line in zip(
                    map(ids.__getitem__, rows), chosen, leads, values.tolist(), strict=True)]

    def _allowed(self, request: RecRequest) -> Callable[[Item], bool]:
        """Whether an item passes the rules and the request's filters."""
        excluded = self.rules.excluded_categories
        category, lo, hi = request.category, request.min_price, request.max_price

        def allowed(item: Item) -> bool:
            return (
                item.in_stock
                and item.category not in excluded
                and (category is None or item.category == category)
                and (lo is None or item.price >= lo)
                and (hi is None or item.price <= hi)
            )

        return allowed

    # --- sources -------------------------------------------------------------------------
    def _favourite_categories(self, seen: list[str]) -> list[str]:
        # map/filter/attrgetter: the ~50 lookups and the count run in C.
        counts = Counter(map(_CATEGORY, filter(None, map(self.catalog.get, seen))))
        return [c for c, _ in counts.most_common(FAVOURITE_CATEGORIES) if c]

    @staticmethod
    def _covisited(lists: Mapping[str, ScoredItems]) -> tuple[dict[str, float], dict[str, str]]:
        """Co-visitation scores in [0, 1], strongest first (ties by id), and per item its
        strongest anchor (the earlier anchor on ties).

        Plain dictionaries: a few dozen pairs per anchor, where NumPy's per-call cost and
        its sort of strings cost more than the loop.
        """
        total: dict[str, float] = {}
        best: dict[str, float] = {}
        anchor_of: dict[str, str] = {}
        for anchor, linked in lists.items():
            for item, weight in zip(linked.ids, linked.scores.tolist(), strict=True):
                total[item] = total.get(item, 0.0) + weight
                if weight > best.get(item, 0.0):  # the earlier anchor on ties
                    best[item] = weight
                    anchor_of[item] = anchor
        top = max(total.values(), default=0.0)
        if top <= 0:
            return {}, {}
        # By id, then a stable sort by weight (reverse keeps ties in id order): keys in C.
        ranked = sorted(sorted(total), key=total.__getitem__, reverse=True)
        return {item: total[item] / top for item in ranked}, anchor_of

    def _reason(self, main: str, anchor: str | None) -> str:
        if main == "covisit" and anchor is not None and anchor in self.catalog:
            return f"Because you viewed {self.catalog[anchor].name}"
        return _REASONS.get(main, "Popular right now")

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
        scale = log_scale(popular)
        label = "Trending now" if category is None else f"Trending in {category}"
        items = [
            ScoredRecommendation(self.catalog[i], p, {"popularity": p}, label)
            for i, p in zip(popular.ids, log_scaled(popular.scores, scale).tolist(), strict=True)
            if i in self.catalog and scale > 0
        ]
        items.sort(key=lambda r: (-r.score, r.item.item_id))
        return Recommendation(None, items[:k])


def _lookup(values: Mapping[str, float], ids: Sequence[str]) -> npt.NDArray[np.float64]:
    """``values`` of ``ids``, NaN where missing (the lookups run in C: ``map`` over ``get``)."""
    return np.fromiter(map(values.get, ids, repeat(np.nan)), np.float64, count=len(ids))


def _weight_vector(weights: Mapping[str, float]) -> np.ndarray:
    """``weights`` in ``SOURCES`` order (0 for a source without a weight)."""
    return np.array([weights.get(name, 0.0) for name in SOURCES])


def log_scaled(raw: np.ndarray, scale: float) -> np.ndarray:
    """Popularity as the source scores it: log1p, against ``scale`` (the top's log1p), in [0, 1]."""
    return np.minimum(1.0, np.log1p(np.maximum(raw, 0.0)) / scale)
