"""Prequential (test-then-learn) scoring of a recommendation stream.

For every event of a time-ordered stream, each model is asked for the user's
top-k *before* the event is learnt; the event's item is the one relevant item.
Events whose item the user already had are not scored (they test memory, not
recommendation).

>>> score = PrequentialScore(k=3)
>>> score.add("m", ["a", "b", "c"], "b")
>>> score.add("m", ["a", "b", "c"], "z")
>>> score.summary()["m"]["hit_rate@3"], round(score.summary()["m"]["ndcg@3"], 4)
(0.5, 0.3155)
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

__all__ = ["PrequentialScore"]


class PrequentialScore:
    """Running hit rate@k and NDCG@k per model over a stream."""

    def __init__(self, k: int = 10) -> None:
        self.k = k
        self._hits: dict[str, float] = defaultdict(float)
        self._gain: dict[str, float] = defaultdict(float)
        self._n: dict[str, int] = defaultdict(int)

    def add(self, model: str, ranked: Sequence[str], relevant: str) -> None:
        top = list(ranked[: self.k])
        self._n[model] += 1
        if relevant in top:
            self._hits[model] += 1.0
            self._gain[model] += 1.0 / math.log2(top.index(relevant) + 2)

    def summary(self) -> dict[str, dict[str, float]]:
        return {
            model: {
                f"hit_rate@{self.k}": self._hits[model] / n,
                f"ndcg@{self.k}": self._gain[model] / n,
                "events": float(n),
            }
            for model, n in self._n.items() if n
        }
