"""Exponential decay by event time: the one place it is computed.

Decayed popularity and co-visitation weigh an event ``2 ** ((t - ref) / half_life)``
relative to a reference time ``ref``. A batch's increments are all written at the
batch's time (:attr:`core.ports.EventBatch.at`, its newest event): each is
pre-decayed to that time (:func:`decayed_weights`), so the result equals applying
each event at its own time. The stores keep every score relative to their own
``ref`` and scale by :func:`decay_scale` when read (the Redis store's Lua script does
the same arithmetic inside Redis), so history replayed today decays by event time,
not wall time.
"""

from __future__ import annotations

import math
from typing import overload

import numpy as np
import numpy.typing as npt

from core.ports import EventBatch

__all__ = ["decay_scale", "decayed_weights"]


@overload
def decay_scale(t: float, ref: float, half_life_s: float) -> float: ...


@overload
def decay_scale(
    t: npt.NDArray[np.float64], ref: float, half_life_s: float
) -> npt.NDArray[np.float64]: ...


def decay_scale(
    t: float | npt.NDArray[np.float64], ref: float, half_life_s: float
) -> float | npt.NDArray[np.float64]:
    """``2 ** ((t - ref) / half_life_s)``: the weight of time ``t`` relative to ``ref``.

    ``t`` is one time or an array of them (one vectorised pass over a batch).

    >>> decay_scale(20.0, 10.0, 10.0), decay_scale(0.0, 10.0, 10.0)
    (2.0, 0.5)
    >>> decay_scale(np.array([0.0, 10.0]), 10.0, 10.0).tolist()
    [0.5, 1.0]
    """
    if isinstance(t, np.ndarray):
        return np.exp2((t - ref) / half_life_s)
    return math.pow(2.0, (t - ref) / half_life_s)


def decayed_weights(batch: EventBatch, half_life_s: float) -> list[float]:
    """Each event's weight decayed to the batch's time (``batch.at``), in event order.

    >>> from core.events import ItemViewed
    >>> views = [ItemViewed(user_id="u", item_id=i, timestamp=t) for i, t in (("a", 0), ("b", 10))]
    >>> decayed_weights(EventBatch(views, [0.0, 10.0], [1.0, 1.0]), half_life_s=10.0)
    [0.5, 1.0]
    """
    if not batch.events:
        return []
    stamps = np.asarray(batch.stamps, dtype=np.float64)
    return (np.asarray(batch.weights, dtype=np.float64)
            * decay_scale(stamps, batch.at, half_life_s)).tolist()
