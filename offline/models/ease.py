"""EASE (Steck 2019): a closed-form item-item linear autoencoder."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from core.types import Item
from offline.models.base import FloatMatrix, MatrixScorer

__all__ = ["EASEScorer"]


class EASEScorer(MatrixScorer):
    """B = I - P / diag(P) with P = (X'X + lambda I)^-1; scores = x_u B.

    Parameters
    ----------
    l2
        Ridge penalty lambda on the item-item weights.
    binarize
        Use 1 for every interacted pair instead of the summed weights.

    >>> from core.scoring import Interactions
    >>> log = Interactions.from_records(
    ...     [("u", "a", 1, 0), ("u", "b", 1, 1), ("v", "a", 1, 2), ("v", "b", 1, 3),
    ...      ("w", "a", 1, 4), ("w", "c", 1, 5)])
    >>> model = EASEScorer(l2=1.0)
    >>> model.fit(log)
    >>> model.score("w", ["b"]).ids
    ['b']
    """

    name = "ease"

    def __init__(self, l2: float = 200.0, binarize: bool = True) -> None:
        super().__init__()
        self.l2 = l2
        self.binarize = binarize
        self.weights_: npt.NDArray[np.float64] = np.zeros((0, 0))
        self.input_: sp.csr_matrix = sp.csr_matrix((0, 0))

    def _fit(self, matrix: sp.csr_matrix, items: Sequence[Item]) -> None:
        x = (matrix > 0).astype(np.float64) if self.binarize else matrix
        self.input_ = sp.csr_matrix(x)
        gram = np.asarray((x.T @ x).toarray(), dtype=np.float64)
        gram[np.diag_indices_from(gram)] += self.l2
        p = np.linalg.inv(gram)
        b = -p / np.diag(p)
        np.fill_diagonal(b, 0.0)
        self.weights_ = b

    def _score_rows(self, rows: npt.NDArray[np.int64]) -> FloatMatrix:
        return np.asarray(self.input_[rows] @ self.weights_, dtype=np.float64)
