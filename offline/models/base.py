"""A base for batch scorers that live on a user-item matrix.

Subclasses implement ``_fit(matrix, items)`` and ``_score_rows(rows)`` (dense
scores of the known items for some known users); the base maps string ids to
rows and columns and turns "cannot score" into left-out items (``score``) or
NaN (``score_many``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from core.errors import NotFound
from core.scoring import Interactions
from core.types import Item, ScoredItems

__all__ = ["MatrixScorer", "skip_reason", "user_item_matrix"]

FloatMatrix = npt.NDArray[np.float64]


def user_item_matrix(
    log: Interactions, user_index: dict[str, int], item_index: dict[str, int]
) -> sp.csr_matrix:
    """Summed event weights as a CSR matrix (events of unknown ids are dropped)."""
    rows = np.array([user_index.get(u, -1) for u in log.users.tolist()], dtype=np.int64)
    cols = np.array([item_index.get(i, -1) for i in log.items.tolist()], dtype=np.int64)
    keep = (rows >= 0) & (cols >= 0)
    m = sp.csr_matrix((log.values[keep], (rows[keep], cols[keep])),
                      shape=(len(user_index), len(item_index)), dtype=np.float64)
    m.sum_duplicates()
    return m


def skip_reason(model: object) -> str | None:
    """Why a fitted model can score nothing on its data set (None when it can score).

    A model sets ``skip_reason_`` in ``fit`` when the data set lacks what it reads (item
    text for ``content``); the harness then reports it as skipped, and the hybrid and
    the ranker drop it.

    >>> class Blind:
    ...     skip_reason_ = "no item text"
    >>> skip_reason(Blind()), skip_reason(object())
    ('no item text', None)
    """
    reason = getattr(model, "skip_reason_", None)
    return str(reason) if reason else None


class MatrixScorer:
    """Shared id handling of the batch models (see the module docstring)."""

    name = "matrix"
    #: False for scorers that give every user the same scores (popularity): they
    #: can score a user they never saw.
    personalised = True

    def __init__(self) -> None:
        self.user_ids_: list[str] = []
        self.item_ids_: list[str] = []
        self.user_index_: dict[str, int] = {}
        self.item_index_: dict[str, int] = {}
        self.matrix_: sp.csr_matrix | None = None
        self.skip_reason_: str | None = None

    # -- subclass hooks -------------------------------------------------------------
    def _fit(self, matrix: sp.csr_matrix, items: Sequence[Item]) -> None:
        raise NotImplementedError

    def _score_rows(self, rows: npt.NDArray[np.int64]) -> FloatMatrix:
        """Scores (len(rows), n_items); NaN where an item cannot be scored."""
        raise NotImplementedError

    def _item_universe(self, train: Interactions, items: Sequence[Item]) -> list[str]:
        """Items the model knows: those in the log (content models add the catalog)."""
        return sorted(set(np.unique(train.items).tolist()))

    # -- Scorer ---------------------------------------------------------------------
    def fit(self, train: Interactions, items: Sequence[Item] = ()) -> None:
        self.user_ids_ = sorted(set(np.unique(train.users).tolist()))
        self.item_ids_ = self._item_universe(train, items)
        self.user_index_ = {u: i for i, u in enumerate(self.user_ids_)}
        self.item_index_ = {it: i for i, it in enumerate(self.item_ids_)}
        self.matrix_ = user_item_matrix(train, self.user_index_, self.item_index_)
        self._fit(self.matrix_, items)

    def _check_fitted(self) -> sp.csr_matrix:
        if self.matrix_ is None:
            raise NotFound(f"{self.name} is not fitted")
        return self.matrix_

    def _rows_for(self, user_ids: Sequence[str]) -> npt.NDArray[np.int64]:
        fallback = 0 if not self.personalised and self.user_ids_ else -1
        return np.array([self.user_index_.get(u, fallback) for u in user_ids], dtype=np.int64)

    def score_many(self, user_ids: Sequence[str], item_ids: Sequence[str]) -> FloatMatrix:
        self._check_fitted()
        rows = self._rows_for(user_ids)
        cols = np.array([self.item_index_.get(i, -1) for i in item_ids], dtype=np.int64)
        out = np.full((len(rows), len(cols)), np.nan)
        known_r, known_c = rows >= 0, cols >= 0
        if known_r.any() and known_c.any():
            block = self._score_rows(rows[known_r])
            out[np.ix_(known_r, known_c)] = block[:, cols[known_c]]
        return out

    def score(self, user_id: str, item_ids: Sequence[str] | None = None) -> ScoredItems:
        ids = list(self.item_ids_) if item_ids is None else list(item_ids)
        scores = self.score_many([user_id], ids)[0]
        ok = ~np.isnan(scores)
        return ScoredItems([i for i, keep in zip(ids, ok, strict=True) if keep], scores[ok])

    def __repr__(self) -> str:
        params = {k: v for k, v in vars(self).items() if not k.endswith("_")}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in params.items())})"
