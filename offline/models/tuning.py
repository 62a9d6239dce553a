"""Validation slices for models that tune themselves inside ``fit``.

The split itself is :func:`offline.evaluation.validation.validation_split` (carved
from the training log only, with its tie and no-order rules); this module turns it
into the matrices a tuner scores: sampled validation users, what they had seen in the
fit part, and what they should find.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from core.scoring import Interactions
from offline.evaluation.ranking import relevance_matrix
from offline.evaluation.validation import ValidationInfo, validation_split

__all__ = ["ValidationSlice", "make_validation_slice"]


@dataclass(frozen=True)
class ValidationSlice:
    """Inner training log, the sampled validation users, their seen and relevant items."""

    train: Interactions
    users: list[str]
    item_ids: list[str]
    seen: sp.csr_matrix
    relevant: sp.csr_matrix
    info: ValidationInfo


def make_validation_slice(train: Interactions, protocol: str, max_users: int,
                          random_state: int) -> ValidationSlice | None:
    """None when the log is too small to hold out anything useful."""
    split = validation_split(train, protocol, random_state)
    inner_users = set(np.unique(split.fit.users).tolist())
    test_users = sorted(set(np.unique(split.holdout.users).tolist()) & inner_users)
    if len(test_users) < 5:
        return None
    rng = np.random.default_rng(random_state)
    if len(test_users) > max_users:
        test_users = sorted(rng.choice(test_users, max_users, replace=False).tolist())
    item_ids = sorted(set(np.unique(split.fit.items).tolist()))
    u_index = {u: i for i, u in enumerate(test_users)}
    i_index = {it: i for i, it in enumerate(item_ids)}
    seen = relevance_matrix(split.fit, u_index, i_index)
    relevant = relevance_matrix(split.holdout, u_index, i_index)
    relevant = sp.csr_matrix(relevant - relevant.multiply(seen))
    relevant.eliminate_zeros()
    keep = np.asarray(relevant.sum(axis=1)).ravel() > 0
    if keep.sum() < 5:
        return None
    rows = np.flatnonzero(keep)
    return ValidationSlice(split.fit, [test_users[r] for r in rows], item_ids,
                           sp.csr_matrix(seen[rows]), sp.csr_matrix(relevant[rows]), split.info)
