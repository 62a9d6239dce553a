"""Most-popular baseline: items scored by how many users interacted with them."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from core.scoring import Interactions
from core.types import Item
from offline.models.base import FloatMatrix, MatrixScorer
from online_models.decay import decay_scale
from online_models.serving.popularity import COUNTS_FILE, ItemCounts

__all__ = ["PopularityScorer"]


class PopularityScorer(MatrixScorer):
    """Score = number of distinct training users of the item (same for every user).

    Not personalised, so it also scores users it never saw: it is the last
    link of a fallback chain. With ``half_life_s`` it becomes a *trending*
    scorer: each event counts ``0.5 ** (age / half_life_s)``, the age measured
    from the newest training event.

    Parameters
    ----------
    half_life_s
        Half-life of an event's weight in seconds; None counts users equally.

    >>> from core.scoring import Interactions
    >>> log = Interactions.from_records([("u", "a", 1, 0), ("v", "a", 1, 1), ("v", "b", 1, 2)])
    >>> model = PopularityScorer()
    >>> model.fit(log)
    >>> model.score("stranger").top(1).ids
    ['a']
    >>> trending = PopularityScorer(half_life_s=1.0)
    >>> trending.fit(log)
    >>> trending.score("u").top(1).ids
    ['b']
    """

    name = "popularity"
    personalised = False

    def __init__(self, half_life_s: float | None = None) -> None:
        super().__init__()
        self.half_life_s = half_life_s
        self.counts_: npt.NDArray[np.float64] = np.zeros(0)

    def fit(self, train: Interactions, items: Sequence[Item] = ()) -> None:
        super().fit(train, items)
        if self.half_life_s is not None and len(train):
            weight = decay_scale(train.timestamps, float(train.timestamps.max()),
                                 self.half_life_s)
            cols = np.array([self.item_index_[i] for i in train.items.tolist()], dtype=np.int64)
            self.counts_ = np.bincount(cols, weights=weight,
                                       minlength=len(self.item_ids_)).astype(np.float64)

    def _fit(self, matrix: sp.csr_matrix, items: Sequence[Item]) -> None:
        self.counts_ = np.asarray((matrix > 0).sum(axis=0), dtype=np.float64).ravel()

    def _score_rows(self, rows: npt.NDArray[np.int64]) -> FloatMatrix:
        return np.broadcast_to(self.counts_, (len(rows), len(self.counts_))).copy()

    def serving_artifacts(self, folder: Path) -> dict[str, Any]:
        """Write the all-time counts the live ``alltime`` source reads (data only); a
        decayed copy (``trending``) writes nothing: the stream keeps decayed counts."""
        if self.half_life_s is not None:
            return {}
        self._check_fitted()
        ItemCounts(list(self.item_ids_), self.counts_, users=len(self.user_index_)).save(
            folder / COUNTS_FILE)
        return {"item_counts": COUNTS_FILE}
