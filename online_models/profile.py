"""A user's content profile: an exponentially weighted mean of the items they touched."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["ContentProfile"]


class ContentProfile:
    """Moves a user's profile vector toward each item they interact with.

    The profile is the exponentially weighted mean ``m <- (1 - a) m + a v`` of the
    item vectors ``v``; an event of implicit weight ``w`` counts as ``w`` views, so
    its step is ``a = 1 - (1 - learning_rate) ** w`` (a purchase, weight 8, moves
    the profile as far as eight views of the item). The mean is kept as is (not
    renormalised), which makes the recurrence linear: folding a batch at once
    (:meth:`fold`) gives the same profile as one event at a time, whatever the batch
    boundaries. Cosine search normalises it when it is read.

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
    >>> p.updated(v, np.array([0.0, 1.0], dtype=np.float32), weight=1.0).tolist()
    [0.5, 0.5]
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
        return self.fold(profile, item_vector[None, :], np.array([weight]))

    def fold(
        self,
        profile: npt.NDArray[np.float32] | None,
        item_vectors: npt.NDArray[np.float32],
        weights: npt.NDArray[np.float64],
    ) -> npt.NDArray[np.float32]:
        """The profile after events on ``item_vectors`` (oldest first), in one product.

        ``m_n = prod(1 - a_j) m_0 + sum_j a_j prod_{l > j}(1 - a_l) v_j``; a user
        without a profile starts from their first item.

        >>> p = ContentProfile(0.5)
        >>> vs = np.array([[1, 0], [0, 1], [0, 1]], dtype=np.float32)
        >>> one_by_one = None
        >>> for v in vs:
        ...     one_by_one = p.updated(one_by_one, v, 1.0)
        >>> bool(np.allclose(p.fold(None, vs, np.ones(3)), one_by_one))
        True
        """
        steps = 1.0 - (1.0 - self.learning_rate) ** np.maximum(np.asarray(weights, float), 0.0)
        if profile is None:
            steps = steps.copy()
            steps[0] = 1.0  # the first item is the whole profile
            start = np.zeros(item_vectors.shape[1])
        else:
            start = np.asarray(profile, dtype=np.float64)
        keep = 1.0 - steps
        # tail[j] = prod_{l > j} keep[l]
        tail = np.append(np.cumprod(keep[::-1])[::-1][1:], 1.0)
        out = float(np.prod(keep)) * start + (steps * tail) @ np.asarray(item_vectors, np.float64)
        return out.astype(np.float32)
