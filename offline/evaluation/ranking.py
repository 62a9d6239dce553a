"""Full-ranking helpers shared by the harness and self-tuning models.

>>> scores = np.array([[0.1, 0.9, 0.5, np.nan]])
>>> seen = sp.csr_matrix(np.array([[0, 1, 0, 0]]))
>>> top_k(scores, seen, 2).tolist()
[[2, 0]]
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from core.scoring import Interactions
from offline.evaluation.metrics import ndcg_at_k

__all__ = ["hits_of", "mask_seen", "relevance_matrix", "top_k", "validation_ndcg"]


def mask_seen(scores: npt.NDArray[np.float64], seen: sp.csr_matrix) -> npt.NDArray[np.float64]:
    """Copy of ``scores`` with NaN -> -inf and the user's seen items -> -inf."""
    out = np.where(np.isnan(scores), -np.inf, scores)
    coo = seen.tocoo()
    out[coo.row, coo.col] = -np.inf
    return out


def top_k(scores: npt.NDArray[np.float64], seen: sp.csr_matrix, k: int) -> npt.NDArray[np.int64]:
    """Column indices of each row's ``k`` best items, best first; -1 pads unscorable slots."""
    masked = mask_seen(scores, seen)
    k = min(k, masked.shape[1])
    part = np.argpartition(-masked, k - 1, axis=1)[:, :k]
    part_scores = np.take_along_axis(masked, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    best = np.take_along_axis(part, order, axis=1)
    best[np.take_along_axis(part_scores, order, axis=1) == -np.inf] = -1
    return best.astype(np.int64)


def relevance_matrix(log: Interactions, user_index: dict[str, int],
                     item_index: dict[str, int]) -> sp.csr_matrix:
    """Binary user x item matrix of ``log`` (unknown ids dropped)."""
    rows = np.array([user_index.get(u, -1) for u in log.users.tolist()], dtype=np.int64)
    cols = np.array([item_index.get(i, -1) for i in log.items.tolist()], dtype=np.int64)
    keep = (rows >= 0) & (cols >= 0)
    m = sp.csr_matrix((np.ones(int(keep.sum())), (rows[keep], cols[keep])),
                      shape=(len(user_index), len(item_index)))
    m.data[:] = 1.0
    return m


def hits_of(best: npt.NDArray[np.int64], relevant: sp.csr_matrix) -> npt.NDArray[np.bool_]:
    """Hit matrix of ranked column indices against a binary relevance matrix."""
    rows = np.repeat(np.arange(best.shape[0]), best.shape[1]).reshape(best.shape)
    safe = np.where(best >= 0, best, 0)
    hits = np.asarray(relevant[rows.ravel(), safe.ravel()]).reshape(best.shape) > 0
    return hits & (best >= 0)


def validation_ndcg(scores: npt.NDArray[np.float64], seen: sp.csr_matrix,
                    relevant: sp.csr_matrix, k: int = 10) -> float:
    """Mean NDCG@k of a score matrix (rows = users of ``relevant``)."""
    best = top_k(scores, seen, k)
    n_rel = np.asarray(relevant.sum(axis=1)).ravel()
    return float(ndcg_at_k(hits_of(best, relevant), n_rel).mean())
