"""A user's content profile: an exponentially weighted mean of the items they touched."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from core.ports import INTERACTION_TYPES, EventBatch, SearchIndex, StateStore, StateUpdate

__all__ = ["ContentProfile", "ProfileLearner"]

K = TypeVar("K", bound=Hashable)


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
        start = {} if profile is None else {0: profile}
        return self.fold_many(start, [0] * len(item_vectors), item_vectors, weights)[0]

    def fold_many(
        self,
        profiles: Mapping[K, npt.NDArray[np.float32]],
        owners: Sequence[K],
        item_vectors: npt.NDArray[np.float32],
        weights: npt.NDArray[np.float64],
    ) -> dict[K, npt.NDArray[np.float32]]:
        """:meth:`fold` of many users' events at once (a batch's events, users interleaved).

        Event ``j`` (oldest first) is ``owners[j]``'s event on ``item_vectors[j]``;
        ``profiles`` holds the owners' current profiles (absent: none yet). One
        vectorised pass instead of a small product per user: each event's share
        ``a_j prod_{l > j}(1 - a_l)`` (``l`` over the same owner's later events) is a
        scalar, so the batch is one weighted segment sum.

        >>> p = ContentProfile(0.5)
        >>> vs = np.array([[1, 0], [0, 1], [1, 1]], dtype=np.float32)
        >>> start = {"b": np.array([0, 2], dtype=np.float32)}
        >>> both = p.fold_many(start, ["a", "b", "a"], vs, np.ones(3))
        >>> both["a"].tolist(), both["b"].tolist()
        ([1.0, 0.5], [0.0, 1.5])
        >>> bool(np.allclose(both["a"], p.fold(None, vs[[0, 2]], np.ones(2))))
        True
        """
        n = len(owners)
        if n == 0:
            return {}
        steps = (1.0 - (1.0 - self.learning_rate)
                 ** np.maximum(np.asarray(weights, dtype=np.float64), 0.0)).tolist()
        rows: dict[K, int] = {}
        for j, owner in enumerate(owners):
            if owner not in rows:
                rows[owner] = len(rows)
                if owner not in profiles:
                    steps[j] = 1.0  # the first item is the whole profile
        # Newest first: each event's share is its step times what later events keep of it.
        shares = [0.0] * n
        kept: dict[K, float] = {}
        for j in range(n - 1, -1, -1):
            owner, step = owners[j], steps[j]
            tail = kept.get(owner, 1.0)
            shares[j] = step * tail
            kept[owner] = tail * (1.0 - step)
        out = np.zeros((len(rows), item_vectors.shape[1]))
        np.add.at(out, [rows[o] for o in owners],
                  np.asarray(shares)[:, None] * np.asarray(item_vectors, dtype=np.float64))
        known = [o for o in rows if o in profiles]
        if known:
            at = [rows[o] for o in known]
            out[at] += (np.array([kept[o] for o in known])[:, None]
                        * np.stack([np.asarray(profiles[o], dtype=np.float64) for o in known]))
        result = out.astype(np.float32)
        return {owner: result[row] for owner, row in rows.items()}


class ProfileLearner:
    """Folds each user's events of a batch into their content profile, in one pass.

    Events on items without an embedding (not in the index yet: it arrives with the
    item's catalog upsert) are counted as ``events.unknown_item`` and skip the
    profile; so do events of weight 0 (a 1-star rating says "not this", not "more
    like this").

    Parameters
    ----------
    index
        Item embeddings (read for the batch's items).
    profile
        The profile model (its learning rate).

    Examples
    --------
    >>> from core.events import ItemViewed
    >>> from index.faiss_index import ExactIndex
    >>> from infra.memory_store import InMemoryStateStore
    >>> index = ExactIndex(2)
    >>> index.upsert(["a"], np.array([[1.0, 0.0]], dtype=np.float32))
    >>> views = [ItemViewed(user_id="u", item_id=i, timestamp=1.0) for i in ("a", "new")]
    >>> part = ProfileLearner(index, ContentProfile(0.5)).learn_many(
    ...     EventBatch(views, [1.0, 1.0], [1.0, 1.0]), InMemoryStateStore())
    >>> part.profiles["u"].tolist(), part.counters
    ([1.0, 0.0], {'events.unknown_item': 1})
    """

    reads = INTERACTION_TYPES
    writes = frozenset({"profiles", "counters"})

    def __init__(self, index: SearchIndex, profile: ContentProfile) -> None:
        self.index = index
        self.profile = profile

    def learn_many(self, batch: EventBatch, store: StateStore) -> StateUpdate:
        part = StateUpdate()
        if not batch.events:
            return part
        vectors = self.index.get(list(dict.fromkeys(e.item_id for e in batch.events)))
        users: list[str] = []
        items: list[str] = []
        weights: list[float] = []
        unknown = 0
        for event, weight in zip(batch.events, batch.weights, strict=True):
            if event.item_id not in vectors:
                unknown += 1
            elif weight > 0:
                users.append(event.user_id)
                items.append(event.item_id)
                weights.append(weight)
        if unknown:
            part.counters["events.unknown_item"] = unknown
        if users:
            rows = {item: n for n, item in enumerate(dict.fromkeys(items))}
            matrix = np.stack([vectors[item] for item in rows])
            part.profiles = self.profile.fold_many(
                store.get_profiles(list(dict.fromkeys(users))), users,
                matrix[[rows[item] for item in items]], np.array(weights))
        return part
