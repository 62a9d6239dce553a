"""Domain types shared by every part."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NewType

import numpy as np
import numpy.typing as npt

__all__ = ["Item", "ItemId", "ScoredItems", "UserId"]

ItemId = NewType("ItemId", str)
UserId = NewType("UserId", str)


@dataclass(frozen=True, slots=True)
class Item:
    """A product of the catalog."""

    item_id: str
    name: str
    category: str = ""
    price: float = 0.0
    description: str = ""
    in_stock: bool = True

    @property
    def text(self) -> str:
        """The text content models embed."""
        return " ".join(part for part in (self.name, self.category, self.description) if part)


@dataclass(frozen=True)
class ScoredItems:
    """Items with scores, best first when built through :meth:`top`.

    A scorer puts here only the items it *could* score: an item it knows
    nothing about is left out, never given an invented 0.

    >>> s = ScoredItems.from_pairs([("a", 0.2), ("b", 0.9), ("c", 0.5)])
    >>> s.top(2).ids
    ['b', 'c']
    >>> "a" in s, "z" in s
    (True, False)
    """

    ids: list[str]
    scores: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))

    def __post_init__(self) -> None:
        scores = np.asarray(self.scores, dtype=np.float64)
        if scores.shape != (len(self.ids),):
            raise ValueError(f"{len(self.ids)} ids but scores of shape {scores.shape}")
        object.__setattr__(self, "scores", scores)

    @classmethod
    def from_pairs(cls, pairs: list[tuple[str, float]]) -> ScoredItems:
        return cls([p[0] for p in pairs], np.array([p[1] for p in pairs], dtype=np.float64))

    @classmethod
    def empty(cls) -> ScoredItems:
        return cls([], np.zeros(0))

    def __len__(self) -> int:
        return len(self.ids)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self.as_dict()

    def as_dict(self) -> dict[str, float]:
        return dict(zip(self.ids, self.scores.tolist(), strict=True))

    def top(self, k: int) -> ScoredItems:
        order = np.argsort(-self.scores, kind="stable")[:k]
        return ScoredItems([self.ids[i] for i in order], self.scores[order])
