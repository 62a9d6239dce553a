"""Hybrid: a weighted blend of per-user normalised content and collaborative scores."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from core.scoring import BatchScorer, Interactions
from core.types import Item, ScoredItems
from offline.evaluation.ranking import validation_ndcg
from offline.models.base import FloatMatrix
from offline.models.components import (
    combined_report,
    fit_components,
    fit_validation_copies,
)
from offline.models.tuning import make_validation_slice

__all__ = ["HybridScorer", "zscore_rows"]

log = logging.getLogger(__name__)


def zscore_rows(scores: FloatMatrix) -> FloatMatrix:
    """Per-row z-score over the scorable (non-NaN) entries; NaN stays NaN.

    >>> zscore_rows(np.array([[1.0, 3.0, np.nan]])).tolist()
    [[-1.0, 1.0, nan]]
    """
    with np.errstate(invalid="ignore"):
        count = np.sum(~np.isnan(scores), axis=1, keepdims=True)
        safe = np.where(np.isnan(scores), 0.0, scores)
        mean = safe.sum(axis=1, keepdims=True) / np.maximum(count, 1)
        var = (np.where(np.isnan(scores), 0.0, (scores - mean) ** 2)).sum(
            axis=1, keepdims=True) / np.maximum(count, 1)
        std = np.sqrt(var)
        return (scores - mean) / np.where(std > 0, std, 1.0)


def _fill_below(z: FloatMatrix) -> FloatMatrix:
    """For blending: in a row where a source scored something, what it could not score
    ranks below everything it scored (its row minimum); a row it scored nothing in stays
    absent (NaN). A sparse source (co-visitation links a few items) thus never lifts an
    unlinked item above a weakly linked one.

    >>> _fill_below(np.array([[1.0, np.nan], [np.nan, np.nan]])).tolist()
    [[1.0, 1.0], [nan, nan]]
    """
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows
        low = np.nanmin(z, axis=1, keepdims=True)
    return np.where(np.isnan(z), low, z)


def _blend(parts: list[FloatMatrix], weights: Sequence[float]) -> FloatMatrix:
    """Weighted sum of the filled parts (``_fill_below``); NaN where no part could score
    (an item no component knows stays left out)."""
    total = np.zeros_like(parts[0])
    known = np.zeros(parts[0].shape, dtype=bool)
    for part, w in zip(parts, weights, strict=True):
        filled = _fill_below(part)
        ok = ~np.isnan(filled)
        total[ok] += w * filled[ok]
        known |= ~np.isnan(part)
    total[~known] = np.nan
    return total


class HybridScorer:
    """Blend of normalised scores of several scorers (content + collaborative).

    Components that can score nothing on the data set (``content`` without item text)
    are dropped with a logged warning. Scores are z-scored per user; where a component
    scored some items of a user, the others count as its row minimum (see ``_fill_below``).

    Parameters
    ----------
    components
        Factories of the blended scorers (called in ``fit``), by name.
    weights
        One weight per component; None tunes them on the shared validation split
        (:func:`offline.evaluation.validation.validation_split`): coordinate ascent over
        a grid of step ``grid_step``, at most ``rounds`` passes, *starting from the best
        single component alone*, a step kept only when it gains at least ``min_gain``
        (relative) validation NDCG@10. The blend therefore never validates below its best
        component, and a gain within validation noise does not move it.
    protocol
        How the validation slice is carved (``temporal`` or ``leave-one-out``).

    >>> from offline.models.content import ContentScorer
    >>> from offline.models.popularity import PopularityScorer
    >>> items = [Item("a", "red tea cup"), Item("b", "red tea pot"), Item("c", "garden hose")]
    >>> log = Interactions.from_records([("u", "a", 1, 0), ("v", "c", 1, 1)])
    >>> model = HybridScorer({"content": ContentScorer, "popularity": PopularityScorer},
    ...                      weights=(0.8, 0.2))
    >>> model.fit(log, items)
    >>> model.score("u", ["b", "c"]).top(1).ids
    ['b']
    """

    name = "hybrid"

    def __init__(self, components: dict[str, Callable[[], BatchScorer]],
                 weights: Sequence[float] | None = None, protocol: str = "leave-one-out",
                 grid_step: float = 0.1, rounds: int = 3, max_validation_users: int = 3000,
                 min_gain: float = 0.005, random_state: int = 0) -> None:
        self.components = components
        self.weights = weights
        self.protocol = protocol
        self.grid_step = grid_step
        self.rounds = rounds
        self.max_validation_users = max_validation_users
        self.min_gain = min_gain
        self.random_state = random_state
        self.models_: dict[str, BatchScorer] = {}
        self.dropped_: dict[str, str] = {}
        self.weights_: tuple[float, ...] = ()
        self.validation_ndcg_: float | None = None
        self.tuning_: dict[str, Any] = {}
        self.universe_: list[str] = []

    def fit(self, train: Interactions, items: Sequence[Item] = ()) -> None:
        self.models_, self.dropped_ = fit_components("hybrid", self.components, train, items)
        if self.weights is not None:
            given = dict(zip(self.components, self.weights, strict=True))
            self.weights_ = tuple(float(given[n]) for n in self.models_)
        else:
            self.weights_ = self._tune(train, items)
        self.universe_ = []
        self._all_items()

    def _tune(self, train: Interactions, items: Sequence[Item]) -> tuple[float, ...]:
        names = list(self.models_)
        even = tuple(1 / len(names) for _ in names)
        val = make_validation_slice(train, self.protocol, self.max_validation_users,
                                    self.random_state)
        if val is None or not names:
            self.tuning_ = {"weights": dict(zip(names, even, strict=True)),
                            "note": "log too small to validate: even weights"}
            return even
        models = fit_validation_copies(self.models_, self.components, val.train, items)
        parts = [zscore_rows(m.score_many(val.users, val.item_ids)) for m in models.values()]

        def quality(w: Sequence[float]) -> float:
            return validation_ndcg(_blend(parts, w), val.seen, val.relevant)

        alone = {n: quality([float(n == m) for m in names]) for n in names}
        start = max(names, key=lambda n: alone[n])
        best_w = [float(n == start) for n in names]
        best = alone[start]
        grid = np.round(np.arange(0.0, 1.0 + 1e-9, self.grid_step), 6).tolist()
        for _ in range(self.rounds):
            improved = False
            for c in range(len(best_w)):
                for value in grid:
                    trial = [*best_w[:c], value, *best_w[c + 1:]]
                    if sum(trial) <= 0 or trial == best_w:
                        continue
                    q = quality(trial)
                    if q > best * (1 + self.min_gain):
                        best, best_w, improved = q, trial, True
            if not improved:
                break
        self.validation_ndcg_ = best
        total = sum(best_w)
        weights = tuple(w / total for w in best_w)
        self.tuning_ = {
            "weights": {n: round(w, 4) for n, w in zip(names, weights, strict=True)},
            "validation_ndcg@10": round(best, 5),
            "alone_validation_ndcg@10": {n: round(q, 5) for n, q in alone.items()},
            "validation": val.info.as_dict(), "validation_users": len(val.users)}
        log.info("hybrid weights %s (validation NDCG@10 %.4f; best alone: %s %.4f)",
                 self.tuning_["weights"], best, start, alone[start])
        return weights

    def tuning_report(self) -> dict[str, Any]:
        """Chosen weights, validation NDCG (blend and each component alone), what was dropped
        and how the validation split was carved; components' own tuning (EASE's lambda)."""
        return combined_report(self.tuning_, self.models_, self.dropped_)

    def score_many(self, user_ids: Sequence[str], item_ids: Sequence[str]) -> FloatMatrix:
        # normalise against every known item, so a short item list scores like the full one
        ids = list(item_ids)
        universe = self._all_items()
        extra = sorted(set(ids) - set(universe))
        full = [*universe, *extra]
        parts = [zscore_rows(m.score_many(user_ids, full)) for m in self.models_.values()]
        blended = _blend(parts, self.weights_)
        if full == ids:
            return blended
        pos = {it: j for j, it in enumerate(full)}
        return blended[:, [pos[i] for i in ids]]

    def score(self, user_id: str, item_ids: Sequence[str] | None = None) -> ScoredItems:
        ids = self._all_items() if item_ids is None else list(item_ids)
        row = self.score_many([user_id], ids)[0]
        ok = ~np.isnan(row)
        return ScoredItems([i for i, keep in zip(ids, ok, strict=True) if keep], row[ok])

    def _all_items(self) -> list[str]:
        if not self.universe_:
            out: set[str] = set()
            for m in self.models_.values():
                out.update(getattr(m, "item_ids_", []))
            self.universe_ = sorted(out)
        return self.universe_

    def __repr__(self) -> str:
        return f"HybridScorer(components={list(self.models_)}, weights={self.weights_})"
