"""Item-based k-nearest neighbours with cosine similarity."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from sklearn.preprocessing import normalize

from core.types import Item
from offline.models.base import FloatMatrix, MatrixScorer

__all__ = ["ItemKNNScorer"]


class ItemKNNScorer(MatrixScorer):
    """Score of item j for user u = sum over u's items i of cos(i, j), top-k neighbours kept.

    Parameters
    ----------
    k
        Neighbours kept per item (the rest of the similarity row is zeroed).
    binarize
        Use 1 for every interacted pair instead of the summed weights.

    >>> from core.scoring import Interactions
    >>> log = Interactions.from_records(
    ...     [("u", "a", 1, 0), ("u", "b", 1, 1), ("v", "a", 1, 2), ("v", "b", 1, 3),
    ...      ("w", "a", 1, 4)])
    >>> model = ItemKNNScorer(k=5)
    >>> model.fit(log)
    >>> model.score("w").top(2).ids
    ['b', 'a']
    """

    name = "item_knn"

    def __init__(self, k: int = 100, binarize: bool = True) -> None:
        super().__init__()
        self.k = k
        self.binarize = binarize
        self.similarity_: sp.csr_matrix = sp.csr_matrix((0, 0))
        self.input_: sp.csr_matrix = sp.csr_matrix((0, 0))

    def _fit(self, matrix: sp.csr_matrix, items: Sequence[Item]) -> None:
        x = (matrix > 0).astype(np.float64) if self.binarize else matrix
        self.input_ = sp.csr_matrix(x)
        cols = normalize(sp.csc_matrix(x), axis=0)
        sim = np.asarray((cols.T @ cols).toarray(), dtype=np.float64)
        np.fill_diagonal(sim, 0.0)
        if self.k < sim.shape[0]:
            # keep each item's k most similar neighbours (per row of sim)
            drop = np.argpartition(-sim, self.k, axis=1)[:, self.k:]
            np.put_along_axis(sim, drop, 0.0, axis=1)
        self.similarity_ = sp.csr_matrix(sim)

    def _score_rows(self, rows: npt.NDArray[np.int64]) -> FloatMatrix:
        # score(u, j) = sum_i x_ui * sim(i, j), neighbours of i truncated to top-k
        return np.asarray((self.input_[rows] @ self.similarity_).toarray(), dtype=np.float64)
