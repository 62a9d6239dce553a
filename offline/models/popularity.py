"""Most-popular baseline: items scored by how many users interacted with them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from core.types import Item
from offline.models.base import FloatMatrix, MatrixScorer

__all__ = ["PopularityScorer"]


class PopularityScorer(MatrixScorer):
    """Score = number of distinct training users of the item (same for every user).

    Not personalised, so it also scores users it never saw: it is the last
    link of a fallback chain.

    >>> from core.scoring import Interactions
    >>> log = Interactions.from_records([("u", "a", 1, 0), ("v", "a", 1, 1), ("v", "b", 1, 2)])
    >>> model = PopularityScorer()
    >>> model.fit(log)
    >>> model.score("stranger").top(1).ids
    ['a']
    """

    name = "popularity"
    personalised = False

    def __init__(self) -> None:
        super().__init__()
        self.counts_: npt.NDArray[np.float64] = np.zeros(0)

    def _fit(self, matrix: sp.csr_matrix, items: Sequence[Item]) -> None:
        self.counts_ = np.asarray((matrix > 0).sum(axis=0), dtype=np.float64).ravel()

    def _score_rows(self, rows: npt.NDArray[np.int64]) -> FloatMatrix:
        return np.broadcast_to(self.counts_, (len(rows), len(self.counts_))).copy()
