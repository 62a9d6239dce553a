"""The one Scorer interface every recommendation model implements.

Modelled on LensKit's components and implicit's RecommenderBase: a scorer is
fitted on an interaction log, then scores items for a user. It leaves out items
it cannot score (an unknown user or item) -- it never invents a 0. A fallback
chain (for instance ``hybrid`` then ``popularity``) fills the gaps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from core.types import Item, ScoredItems

__all__ = ["Interactions", "Scorer"]


@dataclass(frozen=True)
class Interactions:
    """An interaction log: one row per (user, item) event, in parallel arrays.

    ``values`` holds the implicit weight of the event (or the rating when
    ``is_rating`` is true); ``timestamps`` are Unix seconds.
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
