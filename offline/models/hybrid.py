"""Hybrid: a weighted blend of per-user normalised content and collaborative scores."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from core.scoring import BatchScorer, Interactions
from core.types import Item, ScoredItems
from offline.evaluation.ranking import validation_ndcg
from offline.models.base import FloatMatrix
from offline.models.tuning import make_validation_slice

__all__ = ["HybridScorer", "zscore_rows"]


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


def _blend(parts: list[FloatMatrix], weights: Sequence[float]) -> FloatMatrix:
    """Weighted sum where a NaN part counts as absent; NaN only where all parts are."""
    total = np.zeros_like(parts[0])
    known = np.zeros(parts[0].shape, dtype=bool)
    for part, w in zip(parts, weights, strict=True):
        ok = ~np.isnan(part)
        total[ok] += w * part[ok]
        known |= ok
    total[~known] = np.nan
    return total


class HybridScorer:
    """Blend of normalised scores of several scorers (content + collaborative).

    Parameters
    ----------
    components
        Factories of the blended scorers (called in ``fit``), by name.
    weights
        One weight per component; None tunes them on a validation slice carved
        from the training log (coordinate ascent over a grid of step
        ``grid_step``, at most ``rounds`` passes).
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
                 random_state: int = 0) -> None:
        self.components = components
        self.weights = weights
        self.protocol = protocol
        self.grid_step = grid_step
        self.rounds = rounds
        self.max_validation_users = max_validation_users
        self.random_state = random_state
        self.models_: dict[str, BatchScorer] = {}
        self.weights_: tuple[float, ...] = ()
        self.validation_ndcg_: float | None = None
        self.universe_: list[str] = []

    def _fit_components(self, train: Interactions, items: Sequence[Item]) -> dict[
            str, BatchScorer]:
        models = {}
        for name, factory in self.components.items():
            model = factory()
            model.fit(train, items)
            models[name] = model
        return models


    def fit(self, train: Interactions, items: Sequence[Item] = ()) -> None:
        if self.weights is not None:
            self.weights_ = tuple(float(w) for w in self.weights)
        else:
            self.weights_ = self._tune(train, items)
        self.models_ = self._fit_components(train, items)
        self.universe_ = []
        self._all_items()

    def _tune(self, train: Interactions, items: Sequence[Item]) -> tuple[float, ...]:
        even = tuple(1 / len(self.components) for _ in self.components)
        val = make_validation_slice(train, self.protocol, self.max_validation_users,
                                    self.random_state)
        if val is None:
            return even
        models = self._fit_components(val.train, items)
        parts = [zscore_rows(m.score_many(val.users, val.item_ids)) for m in models.values()]

        def quality(w: Sequence[float]) -> float:
            return validation_ndcg(_blend(parts, w), val.seen, val.relevant)

        # coordinate ascent over a grid of each weight (others fixed), a few rounds
        best_w = list(even)
        best = quality(best_w)
        grid = np.round(np.arange(0.0, 1.0 + 1e-9, self.grid_step), 6).tolist()
        for _ in range(self.rounds):
            improved = False
            for c in range(len(best_w)):
                for value in grid:
                    trial = [*best_w[:c], value, *best_w[c + 1:]]
                    if sum(trial) <= 0 or trial == best_w:
                        continue
                    q = quality(trial)
                    if q > best + 1e-9:
                        best, best_w, improved = q, trial, True
            if not improved:
                break
        self.validation_ndcg_ = best
        total = sum(best_w)
        return tuple(w / total for w in best_w)

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
        return f"HybridScorer(components={list(self.components)}, weights={self.weights_})"
