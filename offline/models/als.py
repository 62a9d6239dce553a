"""Implicit-feedback ALS (Hu, Koren & Volinsky 2008) through the ``implicit`` library."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from core.types import Item
from offline.models.base import FloatMatrix, MatrixScorer

__all__ = ["ALSScorer"]


class ALSScorer(MatrixScorer):
    """Matrix factorisation of confidence ``alpha * log1p(count)``; score = p_u . q_i.

    Parameters
    ----------
    factors, regularization, alpha, iterations
        As in :class:`implicit.cpu.als.AlternatingLeastSquares`.
    random_state
        Seed of the factor initialisation (fits are reproducible with one thread).

    >>> from core.scoring import Interactions
    >>> log = Interactions.from_records(
    ...     [("u", "a", 1, 0), ("u", "b", 1, 1), ("v", "a", 1, 2), ("v", "b", 1, 3),
    ...      ("w", "a", 1, 4)])
    >>> model = ALSScorer(factors=2, iterations=3)
    >>> model.fit(log)
    >>> sorted(model.score("w").ids)
    ['a', 'b']
    """

    name = "als"

    def __init__(self, factors: int = 64, regularization: float = 0.05, alpha: float = 10.0,
                 iterations: int = 15, random_state: int = 0) -> None:
        super().__init__()
        self.factors = factors
        self.regularization = regularization
        self.alpha = alpha
        self.iterations = iterations
        self.random_state = random_state
        self.user_factors_: npt.NDArray[np.float64] = np.zeros((0, 0))
        self.item_factors_: npt.NDArray[np.float64] = np.zeros((0, 0))

    def _fit(self, matrix: sp.csr_matrix, items: Sequence[Item]) -> None:
        from implicit.cpu.als import AlternatingLeastSquares

        confidence = sp.csr_matrix(matrix, dtype=np.float32, copy=True)
        confidence.data = (self.alpha * np.log1p(confidence.data)).astype(np.float32)
        # implicit asks for a single-threaded BLAS (its own loop is parallel)
        with threadpool_limits(1, "blas"):
            model = AlternatingLeastSquares(
                factors=self.factors, regularization=self.regularization, alpha=1.0,
                iterations=self.iterations, random_state=self.random_state, num_threads=1,
            )
            model.fit(confidence, show_progress=False)
        self.user_factors_ = np.asarray(model.user_factors, dtype=np.float64)
        self.item_factors_ = np.asarray(model.item_factors, dtype=np.float64)

    def _score_rows(self, rows: npt.NDArray[np.int64]) -> FloatMatrix:
        return self.user_factors_[rows] @ self.item_factors_.T
