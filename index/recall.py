"""Recall of an approximate index against exact search.

>>> import numpy as np
>>> from index.ann import HnswIndex
>>> from index.faiss_index import FaissIndex
>>> rng = np.random.default_rng(0)
>>> vectors = rng.standard_normal((500, 16)).astype(np.float32)
>>> ids = [f"i{j}" for j in range(500)]
>>> ann, exact = HnswIndex(16, ef_search=64), FaissIndex(16)
>>> ann.upsert(ids, vectors); exact.upsert(ids, vectors)
>>> recall_at_k(ann, exact, rng.standard_normal((50, 16)), k=10) >= 0.95
True
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from core.errors import InvalidRequest
from core.ports import VectorIndex
from core.types import ScoredItems

__all__ = ["recall_at_k"]


def recall_at_k(ann: VectorIndex, exact: VectorIndex, queries: npt.ArrayLike, k: int) -> float:
    """Mean share of each query's exact top ``k`` that ``ann`` also returns in its top ``k``.

    Both indexes must hold the same items. Queries whose exact answer is empty
    (an empty index) are not counted; with none left the recall is 1.0.
    """
    if k < 1:
        raise InvalidRequest(f"k must be >= 1, got {k}")
    rows = np.asarray(queries, dtype=np.float32)
    if rows.ndim != 2:
        raise InvalidRequest(f"queries must be a 2-D array, got shape {rows.shape}")
    hits, total = 0, 0
    for want, got in zip(_answers(exact, rows, k), _answers(ann, rows, k), strict=True):
        truth = set(want.ids)
        hits += len(truth.intersection(got.ids))
        total += len(truth)
    return hits / total if total else 1.0


def _answers(index: VectorIndex, rows: npt.NDArray[np.float32], k: int) -> list[ScoredItems]:
    # One batched call where the index has one (FAISS then uses every core).
    search_many = getattr(index, "search_many", None)
    if search_many is not None and len(rows):
        answers: list[ScoredItems] = search_many(rows, k)
        return answers
    return [index.search(q, k) for q in rows]
