"""Co-visitation: the next-item transitions the live path counts, as a batch scorer.

Counted like ``online_models/processor.py`` does on the stream: each event's item
co-occurs with the user's ``window`` most recent distinct earlier items (direction
``both``: the pair counts for each of the two items; ``forward``: only under the earlier
one), each count decayed by the event's age (half-life ``half_life_s``, measured from the
newest training event). A user is scored from their ``anchors`` most recent distinct items
(the live recommender's anchors): the summed co-visitation weights of those anchors. Items
no anchor links to cannot be scored (left out).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from core.scoring import Interactions
from core.types import Item
from offline.models.base import FloatMatrix, MatrixScorer

__all__ = ["CovisitScorer"]


class CovisitScorer(MatrixScorer):
    """Decayed co-visitation counts from the user's last items.

    Parameters
    ----------
    window
        Earlier distinct items an event's item co-occurs with (the live ``covisit_window``).
    direction
        ``both`` or ``forward`` (the live ``covisit_direction``).
    anchors
        The user's most recent distinct items that propose and score candidates.
    half_life_s
        Half-life of a count, in the units of the log's timestamps; None: no decay.

    >>> log = Interactions.from_records(
    ...     [("u", "a", 1, 0), ("u", "b", 1, 1), ("v", "a", 1, 2), ("v", "b", 1, 3),
    ...      ("v", "c", 1, 4), ("w", "a", 1, 5)])
    >>> model = CovisitScorer(window=1, anchors=1)
    >>> model.fit(log)
    >>> model.score("w", ["b", "c"]).ids  # a is followed by b, never directly by c
    ['b']
    """

    name = "covisit"

    def __init__(self, window: int = 3, direction: str = "both", anchors: int = 3,
                 half_life_s: float | None = 7 * 24 * 3600.0) -> None:
        super().__init__()
        if direction not in ("both", "forward"):
            raise ValueError(f"direction must be 'both' or 'forward', not {direction!r}")
        self.window = window
        self.direction = direction
        self.anchors = anchors
        self.half_life_s = half_life_s
        self.covisits_: sp.csr_matrix = sp.csr_matrix((0, 0))
        self.recent_: sp.csr_matrix = sp.csr_matrix((0, 0))

    def fit(self, train: Interactions, items: Sequence[Item] = ()) -> None:
        super().fit(train, items)
        # events by user, then time; ties keep the log's order (as the stream does)
        order = np.lexsort((np.arange(len(train)), train.timestamps, train.users))
        users = train.users[order].tolist()
        cols = [self.item_index_[i] for i in train.items[order].tolist()]
        weight = train.values[order].astype(np.float64)
        if self.half_life_s is not None and len(train):
            age = train.timestamps.max() - train.timestamps[order]
            weight = weight * np.exp2(-age / self.half_life_s)
        src: list[int] = []
        dst: list[int] = []
        val: list[float] = []
        anchor_rows: list[int] = []
        anchor_cols: list[int] = []
        history: list[int] = []
        both = self.direction == "both"
        keep = max(self.window, self.anchors)
        for n, (user, item, w) in enumerate(zip(users, cols, weight.tolist(), strict=True)):
            if n and user != users[n - 1]:
                self._remember(users[n - 1], history, anchor_rows, anchor_cols)
                history = []
            for partner in history[: self.window]:
                if partner != item:
                    src.append(partner)
                    dst.append(item)
                    val.append(w)
                    if both:
                        src.append(item)
                        dst.append(partner)
                        val.append(w)
            # newest first, distinct: its first ``window`` pair, its first ``anchors`` score
            history = [item, *[i for i in history if i != item]][:keep]
        if users:
            self._remember(users[-1], history, anchor_rows, anchor_cols)
        n_items = len(self.item_ids_)
        self.covisits_ = sp.csr_matrix((val, (src, dst)), shape=(n_items, n_items))
        self.covisits_.sum_duplicates()
        self.recent_ = sp.csr_matrix(
            (np.ones(len(anchor_rows)), (anchor_rows, anchor_cols)),
            shape=(len(self.user_ids_), n_items))

    def _remember(self, user: str, history: list[int], rows: list[int],
                  cols: list[int]) -> None:
        for item in history[: self.anchors]:
            rows.append(self.user_index_[user])
            cols.append(item)

    def _fit(self, matrix: sp.csr_matrix, items: Sequence[Item]) -> None:
        pass  # counted in ``fit``, which needs the log's order, not only the matrix

    def _score_rows(self, rows: npt.NDArray[np.int64]) -> FloatMatrix:
        scores = np.asarray((self.recent_[rows] @ self.covisits_).toarray(), dtype=np.float64)
        scores[scores <= 0] = np.nan
        return scores
