"""The one Scorer interface every recommendation model implements.

Modelled on LensKit's components and implicit's RecommenderBase: a scorer is
fitted on an interaction log, then scores items for a user. It leaves out items
it cannot score (an unknown user or item) -- it never invents a 0. A fallback
chain (for instance ``hybrid`` then ``popularity``) fills the gaps.

Batch models also implement :class:`BatchScorer`: ``score_many`` returns a
dense matrix for many users at once (the fast path of full-ranking
evaluation), with NaN marking the pairs the model cannot score -- the matrix
form of "left out".

>>> log = Interactions.from_records([("u1", "a", 1.0, 0), ("u2", "b", 2.0, 5)])
>>> len(log), log.subset(log.timestamps < 1).items.tolist()
(2, ['a'])
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from core.types import Item, ScoredItems

__all__ = ["BatchScorer", "Interactions", "Scorer"]


@dataclass(frozen=True)
class Interactions:
    """An interaction log: one row per (user, item) event, in parallel arrays.

    ``values`` holds the implicit weight of the event (or the rating when
    ``is_rating`` is true); ``timestamps`` are Unix seconds (or any increasing
    order key when the source has no clock).
    """

    users: npt.NDArray[np.str_]
    items: npt.NDArray[np.str_]
    values: npt.NDArray[np.float64]
    timestamps: npt.NDArray[np.float64]
    is_rating: bool = False

    def __post_init__(self) -> None:
        n = len(self.users)
        if not (len(self.items) == len(self.values) == len(self.timestamps) == n):
            raise ValueError("users, items, values and timestamps must have one length")

    def __len__(self) -> int:
        return len(self.users)

    @classmethod
    def from_records(
        cls, records: Iterable[tuple[str, str, float, float]], *, is_rating: bool = False
    ) -> Interactions:
        """Build a log from ``(user, item, value, timestamp)`` tuples."""
        rows = list(records)
        return cls(
            users=np.array([str(r[0]) for r in rows], dtype=np.str_),
            items=np.array([str(r[1]) for r in rows], dtype=np.str_),
            values=np.array([r[2] for r in rows], dtype=np.float64),
            timestamps=np.array([r[3] for r in rows], dtype=np.float64),
            is_rating=is_rating,
        )

    def subset(self, mask: npt.NDArray[np.bool_] | npt.NDArray[np.intp]) -> Interactions:
        """The rows selected by a boolean mask or an index array."""
        return Interactions(
            self.users[mask], self.items[mask], self.values[mask], self.timestamps[mask],
            self.is_rating,
        )

    def concat(self, other: Interactions) -> Interactions:
        """This log followed by ``other``."""
        return Interactions(
            np.concatenate([self.users, other.users]),
            np.concatenate([self.items, other.items]),
            np.concatenate([self.values, other.values]),
            np.concatenate([self.timestamps, other.timestamps]),
            self.is_rating and other.is_rating,
        )


@runtime_checkable
class Scorer(Protocol):
    """Fit on a log, then score items for a user (scoring never learns)."""

    name: str

    def fit(self, train: Interactions, items: Sequence[Item] = ()) -> None:
        """Learn from ``train`` (and item content where the model uses it)."""
        ...

    def score(self, user_id: str, item_ids: Sequence[str] | None = None) -> ScoredItems:
        """Scores of ``item_ids`` (all known items when None) for ``user_id``.

        Items the model cannot score are left out of the result.
        """
        ...


@runtime_checkable
class BatchScorer(Scorer, Protocol):
    """A scorer that also scores many users against many items in one call."""

    def score_many(
        self, user_ids: Sequence[str], item_ids: Sequence[str]
    ) -> npt.NDArray[np.float64]:
        """Scores of shape ``(len(user_ids), len(item_ids))``.

        A pair the model cannot score (unknown user or unknown item) holds NaN.
        """
        ...
