"""Top-k ranking and rating metrics, vectorised over users.

Ranking metrics take a boolean hit matrix ``hits`` of shape ``(n_users, k)``
(``hits[u, r]`` is true when the item at rank ``r`` of user ``u``'s list is
relevant) and ``n_relevant``, the number of relevant items per user. They
return one value per user; the harness averages them. Relevance is binary.

>>> hits = np.array([[True, False, True]])
>>> round(float(ndcg_at_k(hits, np.array([2]))[0]), 4)
0.9197
>>> round(float(average_precision_at_k(hits, np.array([2]))[0]), 4)
0.8333
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import numpy.typing as npt

__all__ = [
    "average_precision_at_k",
    "catalog_coverage",
    "f1_at_k",
    "hit_matrix",
    "hit_rate_at_k",
    "mae",
    "ndcg_at_k",
    "novelty",
    "precision_at_k",
    "recall_at_k",
    "rmse",
]

FloatArray = npt.NDArray[np.float64]
BoolMatrix = npt.NDArray[np.bool_]


def hit_matrix(recommended: Sequence[Sequence[str]], relevant: Sequence[Iterable[str]],
               k: int) -> BoolMatrix:
    """Hit matrix of ranked lists (shorter lists are padded with misses).

    >>> hit_matrix([["a", "b"], ["c"]], [{"b"}, {"c", "d"}], 2).tolist()
    [[False, True], [True, False]]
    """
    out = np.zeros((len(recommended), k), dtype=bool)
    for u, (recs, rel) in enumerate(zip(recommended, relevant, strict=True)):
        rel_set = set(rel)
        for r, item in enumerate(list(recs)[:k]):
            out[u, r] = item in rel_set
    return out


def _n_rel(n_relevant: npt.ArrayLike) -> FloatArray:
    return np.asarray(n_relevant, dtype=np.float64)


def precision_at_k(hits: BoolMatrix) -> FloatArray:
    """Hits in the top k divided by k."""
    return hits.sum(axis=1) / hits.shape[1]


def recall_at_k(hits: BoolMatrix, n_relevant: npt.ArrayLike) -> FloatArray:
    """Hits in the top k divided by the number of relevant items (0 when none)."""
    n = _n_rel(n_relevant)
    return np.divide(hits.sum(axis=1), n, out=np.zeros(len(n)), where=n > 0)


def f1_at_k(hits: BoolMatrix, n_relevant: npt.ArrayLike) -> FloatArray:
    """Harmonic mean of precision and recall at k (0 when both are 0)."""
    p, r = precision_at_k(hits), recall_at_k(hits, n_relevant)
    total = p + r
    return np.divide(2 * p * r, total, out=np.zeros(len(p)), where=total > 0)


def average_precision_at_k(hits: BoolMatrix, n_relevant: npt.ArrayLike) -> FloatArray:
    """AP@k: mean of precision@i over the hit ranks i, over min(n_relevant, k)."""
    k = hits.shape[1]
    cum = np.cumsum(hits, axis=1)
    prec_at_i = cum / np.arange(1, k + 1)
    denom = np.minimum(_n_rel(n_relevant), k)
    num = (prec_at_i * hits).sum(axis=1)
    return np.divide(num, denom, out=np.zeros(len(denom)), where=denom > 0)


def ndcg_at_k(hits: BoolMatrix, n_relevant: npt.ArrayLike) -> FloatArray:
    """NDCG@k with binary gains and the log2(rank + 1) discount."""
    k = hits.shape[1]
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (hits * discount).sum(axis=1)
    ideal_n = np.minimum(_n_rel(n_relevant), k).astype(np.int64)
    ideal = np.concatenate([[0.0], np.cumsum(discount)])[ideal_n]
    return np.divide(dcg, ideal, out=np.zeros(len(ideal)), where=ideal > 0)


def hit_rate_at_k(hits: BoolMatrix) -> FloatArray:
    """1 where the top k holds at least one relevant item, else 0."""
    out: FloatArray = np.asarray(hits.any(axis=1), dtype=np.float64)
    return out


def catalog_coverage(recommended: Iterable[Iterable[str]], n_catalog: int) -> float:
    """Share of the catalog that appears in at least one list.

    >>> catalog_coverage([["a", "b"], ["b", "c"]], 10)
    0.3
    """
    seen: set[str] = set()
    for recs in recommended:
        seen.update(recs)
    return len(seen) / n_catalog if n_catalog else 0.0


def novelty(recommended_popularity: FloatArray) -> float:
    """Mean self-information ``-log2 p(i)`` of recommended items.

    ``recommended_popularity`` holds, for each recommended slot, the share of
    training users who interacted with the item (clipped away from 0).

    >>> novelty(np.array([0.5, 0.25]))
    1.5
    """
    p = np.clip(np.asarray(recommended_popularity, dtype=np.float64), 1e-12, 1.0)
    return float(np.mean(-np.log2(p))) if p.size else 0.0


def rmse(truth: npt.ArrayLike, pred: npt.ArrayLike) -> float:
    """Root mean squared error.

    >>> rmse([1, 2, 3], [1, 2, 5])
    1.1547005383792515
    """
    t, p = np.asarray(truth, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    return float(np.sqrt(np.mean((t - p) ** 2)))


def mae(truth: npt.ArrayLike, pred: npt.ArrayLike) -> float:
    """Mean absolute error.

    >>> mae([1, 2, 3], [1, 2, 5])
    0.6666666666666666
    """
    t, p = np.asarray(truth, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    return float(np.mean(np.abs(t - p)))
