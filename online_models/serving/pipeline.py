"""The recommender: candidates -> score matrix -> blend or rank -> filter -> diversify -> explain.

The sources (:mod:`online_models.serving.sources`, named in
:mod:`online_models.serving.registry`) each propose candidates and score every
candidate they can; the pipeline knows none of them by name. An item's blended score
is the weighted sum (weights of the user's A/B variant) of the sources that could
score it -- or the learned ranker's score, or the online blender's click probability;
a source that cannot score an item is left out of its ``sources`` (never a 0). Then
ONE filter object (:class:`online_models.serving.filters.CandidateFilter`, shared
with the API's degraded path) and a per-category cap choose the list, and the leading
source of each item explains it.

The same class serves the API and ``streamrec evaluate --models served``.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from core.errors import ConfigurationError
from core.ports import (
    ALL_ITEMS,
    RecContext,
    RecRequest,
    StateRead,
    StateStore,
    VectorIndex,
    category_scope,
)
from core.types import Item
from online_models.blender import OnlineBlender
from online_models.serving.filters import CandidateFilter, Rules
from online_models.serving.popularity import log_scale
from online_models.serving.sources import Source, log_scaled, lookup
from online_models.serving.variants import VariantAssigner

__all__ = [
    "RecRequest",
    "Recommendation",
    "Recommender",
    "Rules",
    "ScoredCandidates",
    "ScoredRecommendation",
    "SourceRanker",
    "normalised_blend",
    "normalised_columns",
    "zscore_columns",
]


class SourceRanker(Protocol):
    """A learned model that ranks candidates from the sources' score matrix."""

    #: The source names of its feature columns, in order.
    sources: tuple[str, ...]

    def rank(self, matrix: npt.NDArray[np.float64], ctx: RecContext) -> npt.NDArray[np.float64]:
        """One score per row of ``matrix`` (candidates x ``sources``; NaN: cannot score)."""
        ...


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
    #: The user's state version the list was computed from (:attr:`UserState.version`):
    #: what the API's ETag says the list reflects.
    state_version: int = 0

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"rec_id": self.rec_id}
        if self.variant is not None:
            body["variant"] = self.variant
        body["items"] = [i.to_dict() for i in self.items]
        if self.user_id is not None:
            body = {"user_id": self.user_id, **body}
        return body


@dataclass
class ScoredCandidates:
    """Candidates (not excluded, in the catalog) and every source's score of each, in the
    sources' order; NaN: cannot score. Rows are in item id order (ties break by id)."""

    ids: list[str]
    matrix: np.ndarray
    names: tuple[str, ...]
    #: Where ``matrix`` is not NaN.
    known: npt.NDArray[np.bool_] = field(init=False)

    def __post_init__(self) -> None:
        self.known = ~np.isnan(self.matrix)

    def sources(self, row: int) -> dict[str, float]:
        return _known_sources(self.names, self.matrix[row].tolist())


def _known_sources(names: Sequence[str], line: Sequence[float]) -> dict[str, float]:
    """Source name -> score of one matrix row, the sources that could score it only."""
    return {name: v for name, v in zip(names, line, strict=True) if v == v}  # NaN != NaN


def zscore_columns(matrix: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Each source's column z-scored over the candidates it scored (NaN: cannot score,
    stays NaN and counts for neither mean nor spread); a column with no spread (one
    scored candidate, or all alike, up to rounding) scores 0 where it scored.

    Sources score on their own scales (a cosine in [0, 1], a sum of EASE weights scaled
    by the request's strongest, log-scaled counts): the z-score puts each request's
    column on one scale, so a weight says how much the source's *order* counts.

    >>> zscore_columns(np.array([[1.0, 2.0], [3.0, np.nan], [5.0, np.nan]])).tolist()
    [[-1.224744871391589, 0.0], [0.0, nan], [1.224744871391589, nan]]
    """
    known = ~np.isnan(matrix)
    count = known.sum(axis=0)
    safe = np.where(known, matrix, 0.0)
    mean = safe.sum(axis=0) / np.maximum(count, 1)
    spread = np.sqrt(np.where(known, (safe - mean) ** 2, 0.0).sum(axis=0) / np.maximum(count, 1))
    # Equal scores leave a rounding error for a spread (0.4 three times: ~6e-17), which
    # would blow up to +-1: a spread that small next to the scores' size counts as none.
    flat = spread <= 1e-9 * np.maximum(np.abs(mean), 1.0)
    return (matrix - mean) / np.where(flat, np.inf, spread)


def normalised_columns(matrix: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """What a normalised blend weighs: the request's z-scored columns
    (:func:`zscore_columns`), where a source could not score a candidate left out of the
    sum (0 added, so that candidate's blend is that of the sources that could score it
    -- as in the raw blend, never a made-up score); a source that scored no candidate of
    the request adds nothing to any.

    >>> normalised_columns(np.array([[1.0, 1.0], [3.0, np.nan], [5.0, np.nan]])).round(3).tolist()
    [[-1.225, 0.0], [0.0, 0.0], [1.225, 0.0]]
    """
    z = zscore_columns(matrix)
    out: npt.NDArray[np.float64] = np.where(np.isnan(z), 0.0, z)
    return out


def normalised_blend(matrix: npt.NDArray[np.float64], w: npt.NDArray[np.float64]
                     ) -> npt.NDArray[np.float64]:
    """The weighted sum of the request's normalised columns (:func:`normalised_columns`):
    one score per candidate row. The learned combiner's "normalised" blend, the same
    function in training (``infra/served.py``) and in serving
    (:class:`online_models.serving.ranker.BlendRanker`).

    >>> normalised_blend(np.array([[1.0, 1.0], [3.0, np.nan], [5.0, np.nan]]),
    ...                  np.array([0.5, 0.5])).round(3).tolist()
    [-0.612, 0.0, 0.612]
    """
    out: npt.NDArray[np.float64] = normalised_columns(matrix) @ w
    return out


class Recommender:
    """Merges registered sources into ranked, filtered, diversified, explained items.

    Parameters
    ----------
    state
        Online state: each request reads its user's state once (:class:`StateRead`).
    index
        Item content embeddings (for :meth:`similar`).
    catalog
        item id -> item; items not in the catalog are never recommended.
    sources
        The sources, in the order a response lists them (see the registry).
    weights
        Blend weight per source name for users of no configured variant; a name that
        is no source here is a configuration error, not a weight of 0.
    recent_max
        How many recent items count as "seen" and are excluded.
    variants
        Traffic share per A/B variant; ``variant_weights`` gives each its blend weights.
    rules
        The filter object's rules (and the per-category cap).
    blender
        Returns the online blender's current model (None before it learnt anything);
        variants in ``learned_variants`` rank by its click probability.
    ranker
        Returns the learned ranker (None when none was trained); variants in
        ``ranked_variants`` rank by it.
    known_sources
        Every source name the registry knows (weights may name a registered source that
        is not enabled here: it then weighs nothing); default: ``sources``' names.
    model_version
        The trained models' version the sources and the ranker serve now ("" for none).
    popularity_epoch
        user id -> the popularity epoch their list depends on (see
        :meth:`PopularitySnapshot.epoch`). With the user's state version, the two say
        when a list may have changed (the API's ETag).
    """

    def __init__(
        self,
        state: StateStore,
        index: VectorIndex,
        catalog: Mapping[str, Item],
        sources: Sequence[Source],
        weights: Mapping[str, float],
        recent_max: int = 50,
        variants: Mapping[str, float] | None = None,
        variant_weights: Mapping[str, Mapping[str, float]] | None = None,
        rules: Rules | None = None,
        blender: Callable[[], Any] | None = None,
        learned_variants: Sequence[str] = (),
        ranker: Callable[[], SourceRanker | None] | None = None,
        ranked_variants: Sequence[str] = (),
        known_sources: Iterable[str] = (),
        model_version: Callable[[], str] = lambda: "",
        popularity_epoch: Callable[[str], int] = lambda user_id: 0,
    ) -> None:
        self.state = state
        self.index = index
        self.catalog = catalog
        self.sources = list(sources)
        self.names = tuple(s.name for s in self.sources)
        if len(set(self.names)) != len(self.names):
            raise ConfigurationError(f"a source is listed twice: {list(self.names)}")
        known = set(known_sources) | set(self.names)
        for label, w in [("blend_weights", weights),
                         *((f"variant_weights.{v}", w) for v, w in
                           (variant_weights or {}).items())]:
            unknown = sorted(set(w) - known)
            if unknown:
                raise ConfigurationError(
                    f"{label} names unknown sources {unknown}; known: {sorted(known)}")
        self.weights = dict(weights)
        self.recent_max = recent_max
        self.assigner = VariantAssigner(variants or {"default": 1.0})
        self.variant_weights = {k: dict(v) for k, v in (variant_weights or {}).items()}
        self.rules = rules or Rules()
        self.filter = CandidateFilter(self.rules)
        self.blender = blender
        self.learned_variants = frozenset(learned_variants)
        self.ranker = ranker
        self.ranked_variants = frozenset(ranked_variants)
        self._by_name = {s.name: s for s in self.sources}
        self.model_version = model_version
        self.popularity_epoch = popularity_epoch

    # --- the pipeline --------------------------------------------------------------------
    def recommend(self, user_id: str, k: int, **options: Any) -> Recommendation:
        """Top-``k`` items for ``user_id`` (options: the other fields of :class:`RecRequest`)."""
        return self.run(RecRequest(user_id, k, **options))

    def run(self, request: RecRequest) -> Recommendation:
        variant = request.variant or self.assigner.variant(request.user_id)
        ctx = self.context(request)
        self._propose(ctx)
        scored = self.score(ctx)
        w = self._weight_vector(self.variant_weights.get(variant, self.weights))
        order = self._rank(ctx, scored, w, variant)
        chosen = self._choose(ctx, scored, order, request.k)
        return Recommendation(request.user_id, self._explain(ctx, w, scored, chosen),
                              variant=variant, state_version=ctx.user.version)

    def candidates(self, request: RecRequest) -> tuple[RecContext, ScoredCandidates]:
        """The request's context and its scored candidates (before ranking and filters):
        what a learned ranker is trained on."""
        ctx = self.context(request)
        self._propose(ctx)
        return ctx, self.score(ctx)

    def context(self, request: RecRequest) -> RecContext:
        """The request's context: what every source asked for, read in one round trip."""
        n = max(2 * request.k, 30)  # per source: enough to fill k after the filters
        read = StateRead(self.recent_max, covisit_skip="seen_and_purchased"
                         if self.rules.exclude_purchased else "seen")
        ctx = RecContext(request, n, read)
        for source in self.sources:
            source.prepare(ctx)
        ctx.user = user = self.state.user_state(
            request.user_id, read.recent_n, read.factors_version, covisit_n=read.covisit_n,
            anchors=read.anchors, recent_anchors=read.recent_anchors, history=read.history,
            covisit_skip=read.covisit_skip)
        excluded = set(user.recent)
        if self.rules.exclude_purchased:
            excluded |= user.purchased
        if request.context_item is not None:
            excluded.add(request.context_item)
        ctx.excluded = excluded
        return ctx

    def _propose(self, ctx: RecContext) -> None:
        proposed: dict[str, None] = {}
        scores: dict[str, Mapping[str, float]] = {}
        for source in self.sources:
            found = source.candidates(ctx)
            if found:
                scores[source.name] = found
                proposed.update(dict.fromkeys(found))
        if not proposed:  # an empty store: fall back to catalog order
            proposed.update(dict.fromkeys(list(self.catalog)[:ctx.n]))
        ctx.memo["pipeline.proposed"] = proposed
        ctx.memo["pipeline.scores"] = scores

    def score(self, ctx: RecContext) -> ScoredCandidates:
        """Every source scores every candidate it can (NaN where it cannot).

        Rows are in item id order, so a stable sort by score breaks ties by id.
        """
        proposed: dict[str, None] = ctx.memo["pipeline.proposed"]
        scores: dict[str, Mapping[str, float]] = ctx.memo["pipeline.scores"]
        # Set operations on the key views: the ~100 membership tests run in C.
        ids = sorted((proposed.keys() & self.catalog.keys()) - ctx.excluded)
        matrix = np.full((len(ids), len(self.sources)), np.nan)
        if not ids:
            return ScoredCandidates(ids, matrix, self.names)
        for j, source in enumerate(self.sources):
            column = matrix[:, j]
            own = scores.get(source.name)
            if own:
                column[:] = lookup(own, ids)
            if not source.scores_beyond_candidates:
                continue
            missing = np.flatnonzero(np.isnan(column))
            if len(missing) == len(ids):
                column[:] = source.score(ctx, ids)
            elif len(missing):
                column[missing] = source.score(ctx, list(map(ids.__getitem__,
                                                             missing.tolist())))
        return ScoredCandidates(ids, matrix, self.names)

    def _rank(self, ctx: RecContext, scored: ScoredCandidates, w: np.ndarray, variant: str
              ) -> list[tuple[int, float]]:
        """(row, score) of every candidate, best first, ties by item id."""
        if not scored.ids:
            return []
        blended: np.ndarray | None = None
        if self.ranker is not None and variant in self.ranked_variants:
            ranker = self.ranker()
            if ranker is not None:
                blended = ranker.rank(self._columns(scored, ranker.sources), ctx)
        if blended is None and self.blender is not None and variant in self.learned_variants:
            model = self.blender()
            if model is not None:  # the online blender: probability of a click
                blended = np.array([OnlineBlender.score(model, scored.sources(j))
                                    for j in range(len(scored.ids))], dtype=np.float64)
        if blended is None:
            blended = np.where(scored.known, scored.matrix, 0.0) @ w
        order = np.argsort(-blended, kind="stable")  # rows are in id order: ties by id
        return list(zip(order.tolist(), blended[order].tolist(), strict=True))

    def _columns(self, scored: ScoredCandidates, names: Sequence[str]) -> npt.NDArray[np.float64]:
        """The score matrix with the columns ``names`` (NaN for a source not enabled)."""
        if tuple(names) == scored.names:
            return scored.matrix
        out = np.full((len(scored.ids), len(names)), np.nan)
        col = {name: j for j, name in enumerate(scored.names)}
        for j, name in enumerate(names):
            if name in col:
                out[:, j] = scored.matrix[:, col[name]]
        return out

    def _choose(self, ctx: RecContext, scored: ScoredCandidates, order: Iterable[tuple[int, float]],
                k: int) -> list[tuple[int, float]]:
        """The first ``k`` allowed rows, at most ``max_per_category`` of one category."""
        cap = self.rules.max_per_category
        taken: Counter[str] = Counter()
        out: list[tuple[int, float]] = []
        allowed, catalog, ids = self.filter.allowed(ctx.request), self.catalog, scored.ids
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

    def _explain(self, ctx: RecContext, w: np.ndarray, scored: ScoredCandidates,
                 chosen: Sequence[tuple[int, float]]) -> list[ScoredRecommendation]:
        """The chosen rows as items with their sources, leading source and reason.

        The lead is the source contributing most under the weights ``w`` (the first
        source on ties; popularity when no source could score the item).
        """
        if not chosen:
            return []
        rows = [row for row, _ in chosen]
        values = scored.matrix[rows]
        known = scored.known[rows]
        contributions = np.where(known, values * w, -np.inf)
        names, by_name = scored.names, self._by_name
        leads = [names[j] if has_any else "popularity" for j, has_any in
                 zip(contributions.argmax(axis=1).tolist(), np.any(known, axis=1).tolist(),
                     strict=True)]
        catalog, ids = self.catalog, scored.ids
        out = []
        for item_id, (_, score), lead, line in zip(
                map(ids.__getitem__, rows), chosen, leads, values.tolist(), strict=True):
            source = by_name.get(lead)
            reason = source.explain(ctx, item_id) if source is not None else _POPULAR
            out.append(ScoredRecommendation(catalog[item_id], score,
                                            _known_sources(names, line), reason, lead))
        return out

    def _weight_vector(self, weights: Mapping[str, float]) -> np.ndarray:
        """``weights`` in the sources' order (0 for a source without a weight)."""
        return np.array([weights.get(name, 0.0) for name in self.names])

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


_POPULAR = "Popular right now"
