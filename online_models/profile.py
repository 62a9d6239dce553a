"""A user's content profile: an exponentially weighted mean of the items they touched."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["ContentProfile"]


class ContentProfile:
    """Moves a user's profile vector toward each item they interact with.

    An event of implicit weight ``w`` counts as ``w`` views: the step is
    ``1 - (1 - learning_rate) ** w``, so a purchase (weight 8) moves the profile
    as far as eight views of the same item would. The result is kept unit-length,
    which is what cosine search over the item index needs.

    Parameters
    ----------
    learning_rate
        Share of the profile one view replaces (0 < learning_rate <= 1).

    Examples
    --------
    >>> p = ContentProfile(learning_rate=0.5)
    >>> v = p.updated(None, np.array([1.0, 0.0], dtype=np.float32), weight=1.0)
    >>> v.tolist()
    [1.0, 0.0]
    >>> v = p.updated(v, np.array([0.0, 1.0], dtype=np.float32), weight=1.0)
    >>> [round(float(x), 3) for x in v]
    [0.707, 0.707]
    """

    def __init__(self, learning_rate: float = 0.3) -> None:
        if not 0 < learning_rate <= 1:
            raise ValueError("learning_rate must be in (0, 1]")
        self.learning_rate = learning_rate

    def step(self, weight: float) -> float:
        """Share of the profile an event of implicit ``weight`` replaces."""
        return float(1.0 - (1.0 - self.learning_rate) ** max(weight, 0.0))

    def updated(
        self,
        profile: npt.NDArray[np.float32] | None,
        item_vector: npt.NDArray[np.float32],
        weight: float,
    ) -> npt.NDArray[np.float32]:
        """The profile after one event (a new array; the inputs are not changed)."""
        if profile is None:
            new = item_vector.astype(np.float32, copy=True)
        else:
            a = self.step(weight)
            new = ((1.0 - a) * profile + a * item_vector).astype(np.float32)
        norm = float(np.linalg.norm(new))
        return new / norm if norm > 0 else new
