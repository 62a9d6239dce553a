"""Maximum inner product search over a cosine index (the MIPS-to-NN reduction).

Matrix-factorisation scores are inner products ``x·y``; item vectors of different
norms make cosine search rank differently (it drops the popularity a norm
carries). Appending ``sqrt(M² - |y|²)`` to each item vector scaled by ``1/M``
(``M`` the largest item norm) makes every item a unit vector whose cosine with
``[x/|x|, 0]`` is ``x·y / (|x| M)``: the inner-product ranking, found by the same
FAISS index (Bachrach et al., 2014).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from core.ports import Vector, VectorIndex
from core.types import ScoredItems

__all__ = ["InnerProductIndex"]


class InnerProductIndex:
    """Items ranked by inner product with a query, scores ``x·y / (|x| M)`` in [-1, 1].

    Parameters
    ----------
    inner
        An empty cosine index of dimension ``dim + 1``.
    ids, vectors
        The items and their (unnormalised) vectors, e.g. ALS item factors.

    Examples
    --------
    >>> from index.faiss_index import ExactIndex
    >>> idx = InnerProductIndex(ExactIndex(3), ["small", "big"],
    ...                         np.array([[1.0, 0.0], [3.0, 0.3]]))
    >>> idx.search(np.array([1.0, 0.0]), 2).ids  # cosine would put "small" first
    ['big', 'small']
    >>> at, rows = idx.vectors_of(["unknown", "big"])  # the rows get() returns, stacked
    >>> at, bool(np.allclose(rows[0], idx.get(["big"])["big"]))
    ([1], True)
    """

    def __init__(self, inner: VectorIndex, ids: Sequence[str], vectors: npt.ArrayLike) -> None:
        matrix = np.asarray(vectors, dtype=np.float64)
        norms = np.linalg.norm(matrix, axis=1)
        keep = norms > 0  # a zero vector scores 0 with everything: nothing to find
        self.max_norm = float(norms.max()) if len(norms) else 1.0
        scaled = matrix[keep] / self.max_norm
        extra = np.sqrt(np.clip(1.0 - (norms[keep] / self.max_norm) ** 2, 0.0, None))
        self.inner = inner
        self.inner.upsert([i for i, k in zip(ids, keep, strict=True) if k],
                          np.hstack([scaled, extra[:, None]]).astype(np.float32))

    def upsert(self, ids: Sequence[str], vectors: npt.ArrayLike) -> None:
        """Add items (e.g. folded-in new products) under the same scale ``M``.

        A vector longer than ``M`` is shortened to ``M`` (its score is then slightly
        under-estimated; ``M`` is fixed so that existing scores stay comparable).
        """
        matrix = np.asarray(vectors, dtype=np.float64) / self.max_norm
        norms = np.linalg.norm(matrix, axis=1)
        keep = norms > 0
        matrix = matrix[keep] / np.maximum(norms[keep], 1.0)[:, None]
        extra = np.sqrt(np.clip(1.0 - np.linalg.norm(matrix, axis=1) ** 2, 0.0, None))
        self.inner.upsert([i for i, k in zip(ids, keep, strict=True) if k],
                          np.hstack([matrix, extra[:, None]]).astype(np.float32))

    @property
    def dim(self) -> int:
        return self.inner.dim - 1

    def __len__(self) -> int:
        return len(self.inner)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self.inner

    def _query(self, query: npt.ArrayLike) -> npt.NDArray[np.float32]:
        q = np.asarray(query, dtype=np.float64)
        norm = float(np.linalg.norm(q))
        return np.append(q / norm if norm > 0 else q, 0.0).astype(np.float32)

    def search(self, query: npt.ArrayLike, k: int, exclude: Sequence[str] = ()) -> ScoredItems:
        return self.inner.search(self._query(query), k, exclude=exclude)

    def get(self, ids: Sequence[str]) -> dict[str, Vector]:
        """Each item's vector divided by ``M`` (so ``dot(x/|x|, v)`` is its search score)."""
        return {i: v[:-1].copy() for i, v in self.inner.get(ids).items()}

    def vectors_of(self, ids: Sequence[str]) -> tuple[list[int], npt.NDArray[np.float32]]:
        """:meth:`get` as one matrix's rows, and each row's position in ``ids``."""
        at, rows = self.inner.vectors_of(ids)
        return at, np.ascontiguousarray(rows[:, :-1])
