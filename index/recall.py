"""Recall of an approximate index against exact search, and what calibration needs.

:func:`recall_at_k` compares two :class:`core.ports.VectorIndex` objects.
:func:`estimate_recall`, :func:`gaussian_queries` and :func:`smallest_passing`
are the parts of :meth:`index.ann.HnswIndex.calibrate` and
:meth:`index.ann.IvfIndex.calibrate`, which pick the smallest ``efSearch`` or
``nprobe`` that reaches a target recall by measurement.

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

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from core.errors import InvalidRequest
from core.ports import VectorIndex
from core.types import ScoredItems

__all__ = ["RecallEstimate", "estimate_recall", "gaussian_queries", "profile_queries",
           "recall_at_k", "smallest_passing", "worst"]

#: Standard errors below the mean that still have to reach the target: one-sided
#: ~98% confidence that the recall on other queries of the same kind reaches it too.
_Z = 2.0


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


@dataclass(frozen=True)
class RecallEstimate:
    """Recall@k measured on a sample of queries.

    Attributes
    ----------
    mean
        Mean over the queries of the share of the exact top ``k`` found.
    stderr
        Standard error of ``mean`` (per-query recalls vary a lot on hard data).
    queries
        Queries that counted (those with a non-empty exact answer).
    """

    mean: float
    stderr: float
    queries: int

    @property
    def lower_bound(self) -> float:
        """``mean`` minus two standard errors: what calibration holds to the target."""
        return self.mean - _Z * self.stderr


def estimate_recall(truth: npt.NDArray[np.int64], found: npt.NDArray[np.int64]
                    ) -> RecallEstimate:
    """Recall@k of ``found`` against ``truth``, both ``(queries, k)`` FAISS row numbers.

    ``-1`` marks an empty slot (FAISS pads with it); empty truth slots do not count.

    >>> truth = np.array([[0, 1], [2, 3]])
    >>> estimate_recall(truth, np.array([[1, 0], [2, 9]])).mean
    0.75
    """
    valid = truth >= 0
    hits = ((truth[:, :, None] == found[:, None, :]).any(axis=2) & valid).sum(axis=1)
    counted = valid.sum(axis=1) > 0
    if not counted.any():
        return RecallEstimate(1.0, 0.0, 0)
    per_query = hits[counted] / valid.sum(axis=1)[counted]
    stderr = float(per_query.std(ddof=1) / np.sqrt(len(per_query))) if len(per_query) > 1 else 0.0
    return RecallEstimate(float(per_query.mean()), stderr, int(counted.sum()))


def gaussian_queries(sample: npt.NDArray[np.float32], n: int, rng: np.random.Generator
                     ) -> npt.NDArray[np.float32]:
    """``n`` unit queries drawn from a Gaussian with the mean and covariance of ``sample``.

    They are new points, not stored ones (a stored vector finds itself, which
    flatters a graph index), spread like the items: for random unit vectors
    exactly the distribution of random unit queries; for clustered embeddings
    a harder one (some fall between clusters), so an ``efSearch`` calibrated on
    them errs high.

    >>> rng = np.random.default_rng(0)
    >>> q = gaussian_queries(rng.standard_normal((200, 8)).astype(np.float32), 5, rng)
    >>> q.shape, bool(np.allclose(np.linalg.norm(q, axis=1), 1))
    ((5, 8), True)
    """
    if n < 1 or len(sample) < 2:
        raise InvalidRequest(f"need n >= 1 and a sample of >= 2 vectors, got {n}, {len(sample)}")
    x = sample.astype(np.float64)
    draws = rng.multivariate_normal(x.mean(axis=0), np.cov(x, rowvar=False), size=n,
                                    method="eigh")
    norms = np.linalg.norm(draws, axis=1, keepdims=True)
    return (draws / np.where(norms > 0, norms, 1)).astype(np.float32)


def profile_queries(sample: npt.NDArray[np.float32], n: int, rng: np.random.Generator,
                    items: int = 5) -> npt.NDArray[np.float32]:
    """``n`` unit queries, each the mean of ``items`` random vectors of ``sample``.

    A shopper's content profile is a (decayed) mean of the vectors of what they
    viewed: on clustered embeddings such a query sits between a few clusters, where
    an index calibrated on item-like queries alone misses more (measured: recall@10
    0.944 on profiles where Gaussian queries gave 0.960, docs/benchmarks.md).

    >>> rng = np.random.default_rng(0)
    >>> q = profile_queries(rng.standard_normal((200, 8)).astype(np.float32), 5, rng)
    >>> q.shape, bool(np.allclose(np.linalg.norm(q, axis=1), 1))
    ((5, 8), True)
    """
    if n < 1 or len(sample) < 1 or items < 1:
        raise InvalidRequest(f"need n >= 1, items >= 1 and a sample, got {n}, {items}, "
                             f"{len(sample)}")
    means = sample[rng.integers(len(sample), size=(n, items))].astype(np.float64).mean(axis=1)
    norms = np.linalg.norm(means, axis=1, keepdims=True)
    return (means / np.where(norms > 0, norms, 1)).astype(np.float32)


def worst(*estimates: RecallEstimate) -> RecallEstimate:
    """The estimate with the lowest lower bound (each kind of query must reach a target).

    >>> worst(RecallEstimate(0.97, 0.02, 500), RecallEstimate(0.96, 0.001, 500)).mean
    0.97
    """
    return min(estimates, key=lambda e: e.lower_bound)


def smallest_passing(measure: Callable[[int], RecallEstimate], target: float, *,
                     start: int, cap: int) -> tuple[int, RecallEstimate]:
    """The smallest value in ``[start, cap]`` whose recall lower bound reaches ``target``.

    Doubles from ``start`` until a value passes, then bisects between the last
    failing and the first passing one until they are within 1/16 of each other
    (recall grows with ``efSearch`` and ``nprobe``, so this needs about ``log2(cap / start) + 5``
    measurements). When even ``cap`` fails, returns ``cap`` and its estimate.

    >>> smallest_passing(lambda ef: RecallEstimate(min(1.0, ef / 1000), 0.0, 1), 0.5,
    ...                  start=16, cap=4096)[0]
    512
    """
    if not 1 <= start <= cap:
        raise InvalidRequest(f"need 1 <= start <= cap, got {start}, {cap}")
    failing, value = 0, start
    estimate = measure(value)
    while estimate.lower_bound < target:
        if value >= cap:
            return value, estimate
        failing, value = value, min(2 * value, cap)
        estimate = measure(value)
    passing, best = value, estimate
    while failing and passing - failing > max(1, failing // 16):
        middle = (failing + passing) // 2
        estimate = measure(middle)
        if estimate.lower_bound >= target:
            passing, best = middle, estimate
        else:
            failing = middle
    return passing, best
