"""EASE (Steck 2019): a closed-form item-item linear autoencoder, its ridge penalty tuned
on the shared validation split, and its truncation to top-k neighbours (what serves).

Tuning reuses one Gram matrix across the lambda grid (only the inverse changes) and
inverts through a Cholesky factorisation (LAPACK ``potrf``/``potri``: half the work of a
general inverse). The chosen lambda is remembered per (training log, protocol, seed), so
the models of one evaluation that embed EASE (``ease``, ``ease_knn``, the hybrid, the
ranker) tune it once per log.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from scipy.linalg import lapack

from core.scoring import Interactions
from core.types import Item
from offline.evaluation.ranking import validation_ndcg
from offline.models.base import FloatMatrix, MatrixScorer, user_item_matrix
from offline.models.tuning import make_validation_slice
from online_models.neighbours import ItemNeighbours

__all__ = ["DEFAULT_L2", "EASEKNNScorer", "EASEScorer", "ease_weights", "tune_l2"]

log = logging.getLogger(__name__)

#: Lambda used when a log is too small to carve a validation slice from.
DEFAULT_L2 = 200.0
#: Coarse grid of log10(lambda): 10 .. ~3,200, half a decade apart; extended by one step
#: past an edge that wins (down to 10**0, up to 10**4.5), then refined by a quarter decade
#: around the best. Useful lambdas grow with item counts (the Gram diagonal), so the grid
#: is wide rather than centred on one data set's best.
COARSE_GRID = (1.0, 1.5, 2.0, 2.5, 3.0, 3.5)
GRID_LIMITS = (0.0, 4.5)
_MEMO: OrderedDict[tuple[str, str, int, bool], tuple[float, dict[str, Any]]] = OrderedDict()
_MEMO_SIZE = 8


def ease_weights(gram: FloatMatrix, l2: float) -> FloatMatrix:
    """B = I - P / diag(P), P = (G + lambda I)^-1, diagonal forced to 0.

    >>> ease_weights(np.array([[2.0, 1.0], [1.0, 2.0]]), 1.0).round(3).tolist()
    [[0.0, 0.333], [0.333, 0.0]]
    """
    a = gram.copy()
    a[np.diag_indices_from(a)] += l2
    factor, info = lapack.dpotrf(a, lower=0, overwrite_a=1)
    if info == 0:
        upper, info = lapack.dpotri(factor, lower=0, overwrite_c=1)
    if info != 0:  # not positive definite (cannot happen for lambda > 0): general inverse
        a = gram.copy()
        a[np.diag_indices_from(a)] += l2
        p = np.linalg.inv(a)
    else:
        p = np.triu(upper) + np.triu(upper, 1).T
    b = -p / np.diag(p)
    np.fill_diagonal(b, 0.0)
    return np.asarray(b, dtype=np.float64)


def _gram(x: sp.csr_matrix) -> FloatMatrix:
    return np.asarray((x.T @ x).toarray(), dtype=np.float64)


def _fingerprint(train: Interactions) -> str:
    h = hashlib.blake2b(digest_size=16)
    for arr in (train.users, train.items, train.values, train.timestamps):
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def tune_l2(train: Interactions, protocol: str, random_state: int = 0, binarize: bool = True,
            max_validation_users: int = 3000) -> tuple[float, dict[str, Any]]:
    """The lambda with the best validation NDCG@10, and a report of the search.

    The validation slice is :func:`offline.evaluation.validation.validation_split` of
    ``train``; ties in NDCG go to the larger lambda (the more regularised model).
    """
    key = (_fingerprint(train), protocol, random_state, binarize)
    if key in _MEMO:
        _MEMO.move_to_end(key)
        return _MEMO[key]
    val = make_validation_slice(train, protocol, max_validation_users, random_state)
    if val is None:
        report: dict[str, Any] = {"l2": DEFAULT_L2, "note": "log too small to validate"}
        return DEFAULT_L2, report
    index = {it: j for j, it in enumerate(val.item_ids)}
    users = {u: r for r, u in enumerate(sorted(set(np.unique(val.train.users).tolist())))}
    x = user_item_matrix(val.train, users, index)
    x = (x > 0).astype(np.float64) if binarize else x
    gram = _gram(x)
    tried: dict[float, float] = {}

    def quality(exponent: float) -> float:
        exponent = round(exponent, 3)
        if exponent not in tried:
            b = ease_weights(gram, 10.0 ** exponent)
            tried[exponent] = validation_ndcg(np.asarray(val.seen @ b), val.seen,
                                              val.relevant)
        return tried[exponent]

    for e in COARSE_GRID:
        quality(e)
    best = max(tried, key=lambda e: (tried[e], e))
    while best in (min(tried), max(tried)):  # an edge won: look one step further out
        step = -0.5 if best == min(tried) else 0.5
        nxt = best + step
        if not GRID_LIMITS[0] <= nxt <= GRID_LIMITS[1]:
            break
        quality(nxt)
        if tried[round(nxt, 3)] <= tried[best]:
            break
        best = round(nxt, 3)
    for e in (best - 0.25, best + 0.25):
        if GRID_LIMITS[0] <= e <= GRID_LIMITS[1]:
            quality(e)
    best = max(tried, key=lambda e: (tried[e], e))
    l2 = float(round(10.0 ** best, 1))
    report = {"l2": l2, "validation_ndcg@10": round(tried[best], 5),
              "grid": {str(round(10.0 ** e, 1)): round(q, 5) for e, q in sorted(tried.items())},
              "validation": val.info.as_dict(), "validation_users": len(val.users)}
    log.info("EASE lambda %.1f chosen on validation (NDCG@10 %.4f)", l2, tried[best])
    _MEMO[key] = (l2, report)
    while len(_MEMO) > _MEMO_SIZE:
        _MEMO.popitem(last=False)
    return l2, report


#: Neighbours per item the live ``ease`` source reads (and the artifact's base name).
SERVED_NEIGHBOURS = 50
NEIGHBOURS_FILE = "ease_neighbours"


class EASEScorer(MatrixScorer):
    """B = I - P / diag(P) with P = (X'X + lambda I)^-1; scores = x_u B.

    Parameters
    ----------
    l2
        Ridge penalty lambda on the item-item weights; None tunes it on the validation
        split of the training log (:func:`tune_l2`) and refits on the whole log.
    binarize
        Use 1 for every interacted pair instead of the summed weights.
    protocol, random_state
        How the validation split is carved (when ``l2`` is None).

    >>> from core.scoring import Interactions
    >>> log = Interactions.from_records(
    ...     [("u", "a", 1, 0), ("u", "b", 1, 1), ("v", "a", 1, 2), ("v", "b", 1, 3),
    ...      ("w", "a", 1, 4), ("w", "c", 1, 5)])
    >>> model = EASEScorer(l2=1.0)
    >>> model.fit(log)
    >>> model.score("w", ["b"]).ids
    ['b']
    >>> model.neighbours(1).neighbours(["a"], 1)["a"].ids
    ['b']
    """

    name = "ease"

    def __init__(self, l2: float | None = DEFAULT_L2, binarize: bool = True,
                 protocol: str = "leave-one-out", random_state: int = 0) -> None:
        super().__init__()
        self.l2 = l2
        self.binarize = binarize
        self.protocol = protocol
        self.random_state = random_state
        self.l2_: float = DEFAULT_L2 if l2 is None else l2
        self.tuning_: dict[str, Any] = {}
        self.weights_: npt.NDArray[np.float64] = np.zeros((0, 0))
        self.input_: sp.csr_matrix = sp.csr_matrix((0, 0))

    def fit(self, train: Interactions, items: Sequence[Item] = ()) -> None:
        if self.l2 is None:
            self.l2_, self.tuning_ = tune_l2(train, self.protocol, self.random_state,
                                             self.binarize)
        else:
            self.l2_, self.tuning_ = self.l2, {}
        super().fit(train, items)

    def _fit(self, matrix: sp.csr_matrix, items: Sequence[Item]) -> None:
        x = (matrix > 0).astype(np.float64) if self.binarize else matrix
        self.input_ = sp.csr_matrix(x)
        self.weights_ = ease_weights(_gram(self.input_), self.l2_)

    def _score_rows(self, rows: npt.NDArray[np.int64]) -> FloatMatrix:
        return np.asarray(self.input_[rows] @ self.weights_, dtype=np.float64)

    def tuning_report(self) -> dict[str, Any]:
        """What tuning chose (empty when lambda was given)."""
        return dict(self.tuning_)

    def fixed_copy(self) -> EASEScorer:
        """An unfitted copy with the lambda this fit used (no tuning again)."""
        return EASEScorer(l2=self.l2_, binarize=self.binarize)

    def serving_artifacts(self, folder: Path) -> dict[str, Any]:
        """Write what the live pipeline serves of this model (its ``ease`` source): the
        top-:data:`SERVED_NEIGHBOURS` neighbours of each item, data only."""
        self.neighbours(SERVED_NEIGHBOURS).save(folder / NEIGHBOURS_FILE)
        return {"neighbours": NEIGHBOURS_FILE, "k": SERVED_NEIGHBOURS, "l2": self.l2_}

    def neighbours(self, k: int = 50) -> ItemNeighbours:
        """Each item's ``k`` strongest positive neighbours in B (the row of B is what an
        item adds to the scores of the others), for serving like co-visitation."""
        self._check_fitted()
        return ItemNeighbours.from_weights(self.item_ids_, self.weights_, k,
                                           meta={"model": "ease", "l2": self.l2_})


class EASEKNNScorer(MatrixScorer):
    """EASE scored only through each item's top-k neighbours (what online serving sees).

    Scores = x_u B_k, where B_k keeps the ``k`` strongest positive weights of each row of
    the tuned EASE's B; an item no history item links to cannot be scored. Compared with
    ``ease`` it measures what the truncation costs.

    >>> log = Interactions.from_records(
    ...     [("u", "a", 1, 0), ("u", "b", 1, 1), ("v", "a", 1, 2), ("v", "b", 1, 3),
    ...      ("w", "a", 1, 4), ("w", "c", 1, 5)])
    >>> model = EASEKNNScorer(k=1, l2=1.0)
    >>> model.fit(log)
    >>> model.score("w", ["b", "c"]).ids  # nothing links to c in a top-1 list
    ['b']
    """

    name = "ease_knn"

    def __init__(self, k: int = 50, l2: float | None = None, protocol: str = "leave-one-out",
                 random_state: int = 0) -> None:
        super().__init__()
        self.k = k
        self.l2 = l2
        self.protocol = protocol
        self.random_state = random_state
        self.ease_ = EASEScorer(l2=l2, protocol=protocol, random_state=random_state)
        self.sparse_weights_: sp.csr_matrix = sp.csr_matrix((0, 0))

    def fit(self, train: Interactions, items: Sequence[Item] = ()) -> None:
        self.ease_ = EASEScorer(l2=self.l2, protocol=self.protocol,
                                random_state=self.random_state)
        self.ease_.fit(train, items)
        super().fit(train, items)

    def _fit(self, matrix: sp.csr_matrix, items: Sequence[Item]) -> None:
        self.sparse_weights_ = self.ease_.neighbours(self.k).as_matrix(self.item_ids_)
        self.ease_.weights_ = np.zeros((0, 0))  # only the truncation is kept

    def _score_rows(self, rows: npt.NDArray[np.int64]) -> FloatMatrix:
        assert self.matrix_ is not None
        x = (self.matrix_[rows] > 0).astype(np.float64)
        scores = np.asarray((x @ self.sparse_weights_).toarray(), dtype=np.float64)
        linked = np.asarray(((x @ (self.sparse_weights_ != 0)) > 0).toarray())
        scores[~linked] = np.nan
        return scores

    def tuning_report(self) -> dict[str, Any]:
        return {**self.ease_.tuning_report(), "k": self.k}

    def fixed_copy(self) -> EASEKNNScorer:
        """An unfitted copy with the lambda this fit used (no tuning again)."""
        return EASEKNNScorer(k=self.k, l2=self.ease_.l2_)
