"""A/B experiments: stable variant assignment by a hash of the user id."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

__all__ = ["VariantAssigner"]


class VariantAssigner:
    """Assigns each user one variant, the same every time, by configured traffic shares.

    The user id is hashed (SHA-1, salted with the experiment name) to a point in
    [0, 1); consecutive share intervals map to variants in sorted name order, so
    changing one share moves the fewest users.

    >>> a = VariantAssigner({"A": 0.5, "B": 0.5}, salt="exp1")
    >>> a.variant("user-1") == a.variant("user-1")
    True
    >>> sorted({a.variant(f"u{i}") for i in range(100)})
    ['A', 'B']
    >>> VariantAssigner({"only": 1.0}).variant("anyone")
    'only'
    """

    def __init__(self, shares: Mapping[str, float], salt: str = "streamrec") -> None:
        positive = {name: float(share) for name, share in shares.items() if share > 0}
        if not positive:
            raise ValueError("at least one variant needs a positive traffic share")
        total = sum(positive.values())
        self.salt = salt
        self._bounds: list[tuple[float, str]] = []
        upper = 0.0
        for name in sorted(positive):
            upper += positive[name] / total
            self._bounds.append((upper, name))

    @property
    def variants(self) -> list[str]:
        return [name for _, name in self._bounds]

    def variant(self, user_id: str) -> str:
        digest = hashlib.sha1(f"{self.salt}:{user_id}".encode()).digest()
        point = int.from_bytes(digest[:8], "big") / 2**64
        for upper, name in self._bounds:
            if point < upper:
                return name
        return self._bounds[-1][1]
