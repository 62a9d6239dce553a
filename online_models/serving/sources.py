"""The live recommendation sources: each proposes candidates and scores what it can.

Every source implements :class:`core.ports.CandidateSource` and
:class:`core.ports.CandidateScorer` (scores in [0, 1]; NaN = cannot score, never 0):

* ``covisit`` -- items co-visited with the user's latest items (decayed co-occurrence
  counts, scaled by the strongest); it scores only what it proposed;
* ``context`` -- cosine to the item the user is looking at (``context_item``);
* ``content`` -- cosine between the user's content profile and each item's embedding
  (candidates from the FAISS index);
* ``collab`` -- cosine between the user's ALS vector (folded in from their weighted
  history after every event) and each item's factors, when a model was trained;
* ``ease`` -- the summed EASE weights from the user's recent items, through each item's
  top-k neighbours trained by ``streamrec train`` (when a model was trained);
* ``sequential`` -- the next items after the user's latest ones by the SASRec network
  ``streamrec train`` ships (NumPy inference over the recent items read with the request);
* ``popularity`` -- decayed popularity, log-scaled to [0, 1] against the most popular
  item; trending items of the user's favourite (or chosen) categories are proposed too;
* ``alltime`` -- how many shoppers ever had the item in the trained log (not decayed),
  log-scaled likewise, from the model version (:class:`ItemCounts`); the learned ranker
  weighs it against ``popularity`` (what rises now, what sells steadily).

A new source is one class here (or in a module of its own), one line in
:mod:`online_models.serving.registry` and its contract test.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import islice, repeat
from operator import attrgetter
from typing import Any

import numpy as np
import numpy.typing as npt

from core.ports import RecContext, SearchIndex, VectorIndex
from core.types import Item, ScoredItems
from online_models.als_foldin import ALSFoldIn
from online_models.neighbours import ItemNeighbours
from online_models.sequential import SequentialModel
from online_models.serving.popularity import ItemCounts, PopularitySnapshot, Snapshot

__all__ = [
    "COVISIT_ANCHORS",
    "FAVOURITE_CATEGORIES",
    "AllTimeSource",
    "CollabSource",
    "CollaborativeModels",
    "ContentSource",
    "ContextSource",
    "CovisitSource",
    "NeighboursSource",
    "PopularitySource",
    "SequentialSource",
    "Source",
    "log_scaled",
]

CollaborativeModels = Callable[[], tuple[ALSFoldIn | None, SearchIndex | None]]

#: How many of the user's latest items anchor co-visitation candidates.
COVISIT_ANCHORS = 3
#: How many favourite categories of a user bring their trending items.
FAVOURITE_CATEGORIES = 2

_CATEGORY = attrgetter("category")


class Source:
    """Base of the live sources: no state needs, no candidates, cannot score anything.

    ``reason`` explains an item this source leads; ``scores_beyond_candidates`` is False
    for a source that can only score what it proposed itself (the pipeline then does not
    ask it about other candidates).
    """

    name = ""
    reason = "Recommended for you"
    scores_beyond_candidates = True

    def prepare(self, ctx: RecContext) -> None:
        """Nothing to read."""

    def candidates(self, ctx: RecContext) -> Mapping[str, float]:
        return {}

    def score(self, ctx: RecContext, item_ids: Sequence[str]) -> npt.NDArray[np.float64]:
        return np.full(len(item_ids), np.nan)

    def explain(self, ctx: RecContext, item_id: str) -> str:
        """Why ``item_id`` is shown when this source leads its score."""
        return self.reason

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class _VectorSource(Source):
    """Cosine between a query vector of the request and items' vectors in an index."""

    def query(self, ctx: RecContext) -> tuple[SearchIndex | None, npt.NDArray[Any] | None]:
        raise NotImplementedError

    def candidates(self, ctx: RecContext) -> Mapping[str, float]:
        index, query = self.query(ctx)
        if index is None or query is None:
            return {}
        hits = index.search(query, ctx.n, exclude=list(ctx.excluded))
        return dict(zip(hits.ids, np.maximum(hits.scores, 0.0).tolist(), strict=True))

    def score(self, ctx: RecContext, item_ids: Sequence[str]) -> npt.NDArray[np.float64]:
        out = np.full(len(item_ids), np.nan)
        index, query = self.query(ctx)
        if index is None or query is None or not item_ids:
            return out
        at, vectors = index.vectors_of(item_ids)
        if at:
            unit = query / (np.linalg.norm(query) or 1.0)
            out[at] = np.maximum(vectors @ unit, 0.0)
        return out


class ContentSource(_VectorSource):
    """Cosine between the user's content profile and item embeddings."""

    name = "content"
    reason = "Similar to what you viewed"

    def __init__(self, index: VectorIndex) -> None:
        self.index = index

    def query(self, ctx: RecContext) -> tuple[SearchIndex | None, npt.NDArray[Any] | None]:
        if "content" not in ctx.memo:
            profile = ctx.user.profile
            if profile is not None:
                norm = float(np.linalg.norm(profile))
                profile = profile / norm if norm > 0 else None  # a mean: cosine wants unit
            ctx.memo["content"] = profile
        return self.index, ctx.memo["content"]


class ContextSource(_VectorSource):
    """Cosine to the item the shopper is looking at."""

    name = "context"
    reason = "Goes with this item"

    def __init__(self, index: VectorIndex) -> None:
        self.index = index

    def prepare(self, ctx: RecContext) -> None:
        item = ctx.request.context_item
        ctx.memo["context"] = None if item is None else self.index.get([item]).get(item)

    def query(self, ctx: RecContext) -> tuple[SearchIndex | None, npt.NDArray[Any] | None]:
        return self.index, ctx.memo.get("context")


class CollabSource(_VectorSource):
    """Cosine between the user's folded-in ALS vector and the items' factors."""

    name = "collab"
    reason = "Shoppers like you bought this"

    def __init__(self, models: CollaborativeModels) -> None:
        self.models = models

    def prepare(self, ctx: RecContext) -> None:
        foldin, factor_index = self.models()
        ctx.memo["collab.models"] = (foldin, factor_index)
        if foldin is not None:
            ctx.read.factors_version = foldin.version
            ctx.read.history = "without_factors"

    def query(self, ctx: RecContext) -> tuple[SearchIndex | None, npt.NDArray[Any] | None]:
        if "collab" not in ctx.memo:
            foldin, factor_index = ctx.memo.get("collab.models", (None, None))
            vector = None
            if foldin is not None and factor_index is not None:
                vector = ctx.user.factors
                if vector is None and ctx.user.history:  # a newer model: fold in now
                    vector = foldin.user_vector(ctx.user.history)
                if vector is not None and not np.any(vector):
                    vector = None
            ctx.memo["collab"] = (factor_index if vector is not None else None, vector)
        found: tuple[SearchIndex | None, npt.NDArray[Any] | None] = ctx.memo["collab"]
        return found


class CovisitSource(Source):
    """Items co-visited with the user's latest items (and the context item).

    The lists come from the request's one state read, already without what the
    user has seen (or bought, by the rules): n usable items per anchor.
    """

    name = "covisit"
    reason = "Often viewed together"
    scores_beyond_candidates = False

    def __init__(self, catalog: Mapping[str, Item], anchors: int = COVISIT_ANCHORS) -> None:
        self.catalog = catalog
        self.anchors = anchors

    def prepare(self, ctx: RecContext) -> None:
        read = ctx.read
        read.covisit_n = ctx.n
        read.recent_anchors = self.anchors
        if ctx.request.context_item:
            read.anchors = [ctx.request.context_item]

    def candidates(self, ctx: RecContext) -> Mapping[str, float]:
        scores, anchor_of = covisit_scores(ctx.user.covisited)
        ctx.memo["covisit.anchor_of"] = anchor_of
        return scores

    def explain(self, ctx: RecContext, item_id: str) -> str:
        anchor = ctx.memo.get("covisit.anchor_of", {}).get(item_id)
        if anchor is not None and anchor in self.catalog:
            return f"Because you viewed {self.catalog[anchor].name}"
        return self.reason


def covisit_scores(lists: Mapping[str, ScoredItems]) -> tuple[dict[str, float], dict[str, str]]:
    """Co-visitation scores in [0, 1], strongest first (ties by id), and per item its
    strongest anchor (the earlier anchor on ties).

    Plain dictionaries: a few dozen pairs per anchor, where NumPy's per-call cost and
    its sort of strings cost more than the loop.

    >>> covisit_scores({"a": ScoredItems(["x", "y"], [2.0, 1.0]),
    ...                 "b": ScoredItems(["y"], [3.0])})
    ({'y': 1.0, 'x': 0.5}, {'x': 'a', 'y': 'b'})
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


class PopularitySource(Source):
    """Decayed popularity from the process's snapshot; proposes the top ``k`` overall and
    of the request's and the user's favourite categories."""

    name = "popularity"
    reason = "Popular right now"

    def __init__(self, catalog: Mapping[str, Item], snapshot: PopularitySnapshot,
                 favourite_categories: int = FAVOURITE_CATEGORIES) -> None:
        self.catalog = catalog
        self.snapshot = snapshot
        self.favourite_categories = favourite_categories

    def current(self, ctx: RecContext) -> Snapshot:
        found = ctx.memo.get("popularity")
        if found is None:
            found = ctx.memo["popularity"] = self.snapshot.current()
        return found

    def prepare(self, ctx: RecContext) -> None:
        self.current(ctx)  # one snapshot for the whole request

    def candidates(self, ctx: RecContext) -> Mapping[str, float]:
        popular, request = self.current(ctx), ctx.request
        categories = list(request.preferred_categories)
        if request.category:
            categories.insert(0, request.category)
        categories += self.favourites(ctx.user.recent)
        proposed: dict[str, float] = {}
        for category in [None, *dict.fromkeys(categories)]:
            proposed.update(dict.fromkeys(
                first(popular.ranked(category), request.k, ctx.excluded), math.nan))
        return proposed

    def score(self, ctx: RecContext, item_ids: Sequence[str]) -> npt.NDArray[np.float64]:
        popular = self.current(ctx)
        if not item_ids or popular.scale <= 0:
            return np.full(len(item_ids), np.nan)
        return log_scaled(popular.scores(item_ids), popular.scale)

    def favourites(self, seen: Sequence[str]) -> list[str]:
        """The user's most frequent categories among ``seen``."""
        # map/filter/attrgetter: the ~50 lookups and the count run in C.
        counts = Counter(map(_CATEGORY, filter(None, map(self.catalog.get, seen))))
        return [c for c, _ in counts.most_common(self.favourite_categories) if c]


class AllTimeSource(Source):
    """All-time popularity of the trained log (distinct shoppers per item, log-scaled to
    [0, 1] against the top item): proposes the ``n`` best sellers the user has not
    seen, scores any item the log had (a newer item is left out, not 0)."""

    name = "alltime"
    reason = "A best seller"

    def __init__(self, counts: Callable[[], ItemCounts | None]) -> None:
        self.counts = counts

    def _current(self, ctx: RecContext) -> ItemCounts | None:
        if "alltime" not in ctx.memo:  # one model version for the whole request
            ctx.memo["alltime"] = self.counts()
        found: ItemCounts | None = ctx.memo["alltime"]
        return found

    def candidates(self, ctx: RecContext) -> Mapping[str, float]:
        counts = self._current(ctx)
        if counts is None:
            return {}
        top = counts.top(ctx.n, ctx.excluded)
        return dict(zip(top.ids, top.scores.tolist(), strict=True))

    def score(self, ctx: RecContext, item_ids: Sequence[str]) -> npt.NDArray[np.float64]:
        counts = self._current(ctx)
        if counts is None or not item_ids:
            return np.full(len(item_ids), np.nan)
        return counts.scores(item_ids)


def first(ids: Iterable[str], n: int, excluded: set[str]) -> list[str]:
    """The first ``n`` of ``ids`` not in ``excluded``."""
    return list(islice((i for i in ids if i not in excluded), max(n, 0)))


def lookup(values: Mapping[str, float], ids: Sequence[str]) -> npt.NDArray[np.float64]:
    """``values`` of ``ids``, NaN where missing (the lookups run in C: ``map`` over ``get``)."""
    return np.fromiter(map(values.get, ids, repeat(np.nan)), np.float64, count=len(ids))


def log_scaled(raw: np.ndarray, scale: float) -> np.ndarray:
    """Popularity as the source scores it: log1p, against ``scale`` (the top's log1p), in [0, 1]."""
    return np.minimum(1.0, np.log1p(np.maximum(raw, 0.0)) / scale)


class NeighboursSource(Source):
    """Items linked to the user's recent items by a trained item-item model (EASE's top-k
    weights, :class:`online_models.neighbours.ItemNeighbours`), summed over those items.

    It scores an item only when some recent item lists it among its neighbours (an item
    outside every list has an unknown, small weight: left out, not 0).
    """

    name = "ease"
    reason = "Often bought with your items"

    def __init__(self, neighbours: Callable[[], ItemNeighbours | None],
                 name: str = "ease") -> None:
        self.neighbours = neighbours
        self.name = name

    def _scores(self, ctx: RecContext) -> dict[str, float]:
        """Linked items -> summed weight from the user's recent items, scaled by the
        strongest (once per request)."""
        key = f"{self.name}.scores"
        if key not in ctx.memo:
            model = self.neighbours()
            linked = model.linked(ctx.user.recent) if model is not None else {}
            top = max(linked.values(), default=0.0)
            ctx.memo[key] = ({item: w / top for item, w in linked.items() if w > 0}
                             if top > 0 else {})
        scores: dict[str, float] = ctx.memo[key]
        return scores

    def candidates(self, ctx: RecContext) -> Mapping[str, float]:
        scores, excluded = self._scores(ctx), ctx.excluded
        # By id, then a stable sort by score (reverse keeps ties in id order).
        ranked = sorted(sorted(scores), key=scores.__getitem__, reverse=True)
        return {item: scores[item] for item in first(ranked, ctx.n, excluded)}

    def score(self, ctx: RecContext, item_ids: Sequence[str]) -> npt.NDArray[np.float64]:
        return lookup(self._scores(ctx), item_ids)


class SequentialSource(Source):
    """The next items after the shopper's latest clicks, by the sequential model
    (:class:`online_models.sequential.SequentialModel`, SASRec trained by ``streamrec
    train``): the sequence's representation from the recent items read with the
    request, then inner products with the item embeddings, squashed into [0, 1].

    It scores every item the model knows once the sequence holds a known item; items
    newer than the model are left out.
    """

    name = "sequential"
    reason = "Often next after what you just viewed"

    def __init__(self, model: Callable[[], SequentialModel | None]) -> None:
        self.model = model

    def _query(self, ctx: RecContext) -> tuple[SequentialModel, Any] | None:
        """The model and the sequence's query, computed once per request: the network's
        forward pass is most of this source's cost, and candidates and scores share it."""
        if "sequential" not in ctx.memo:
            model = self.model()
            query = model.query(ctx.user.recent) if model is not None else None
            ctx.memo["sequential"] = (model, query) if query is not None else None
        found: tuple[SequentialModel, Any] | None = ctx.memo["sequential"]
        return found

    def candidates(self, ctx: RecContext) -> Mapping[str, float]:
        found = self._query(ctx)
        if found is None:
            return {}
        model, query = found
        top = model.top_query(query, ctx.n, exclude=ctx.excluded)
        return dict(zip(top.ids, _squash(top.scores).tolist(), strict=True))

    def score(self, ctx: RecContext, item_ids: Sequence[str]) -> npt.NDArray[np.float64]:
        out = np.full(len(item_ids), np.nan)
        found = self._query(ctx)
        if found is None or not item_ids:
            return out
        model, query = found
        scored = model.score_query(query, item_ids)
        if len(scored):
            at = {item: j for j, item in enumerate(item_ids)}
            out[[at[i] for i in scored.ids]] = _squash(scored.scores)
        return out


def _squash(logits: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Logits (inner products) into (0, 1), monotone: the logistic function."""
    return 1.0 / (1.0 + np.exp(-np.clip(logits, -50.0, 50.0)))
