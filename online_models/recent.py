"""Recent items and purchases: what each shopper touched, as the store keeps it."""

from __future__ import annotations

from core.ports import INTERACTION_TYPES, EventBatch, StateStore, StateUpdate

__all__ = ["HistoryLearner", "PurchasesLearner", "RecentItemsLearner"]


class RecentItemsLearner:
    """Each user's items of the batch, oldest first (the store keeps the newest N, distinct).

    >>> from core.events import ItemViewed
    >>> from infra.memory_store import InMemoryStateStore
    >>> views = [ItemViewed(user_id="u", item_id=i, timestamp=1.0) for i in "aba"]
    >>> RecentItemsLearner().learn_many(EventBatch(views, [1.0] * 3, [1.0] * 3),
    ...                                 InMemoryStateStore()).recent
    {'u': ['a', 'b', 'a']}
    """

    reads = INTERACTION_TYPES
    writes = frozenset({"recent"})

    def learn_many(self, batch: EventBatch, store: StateStore) -> StateUpdate:
        recent: dict[str, list[str]] = {}
        for event in batch.events:
            recent.setdefault(event.user_id, []).append(event.item_id)
        return StateUpdate(recent=recent)


class PurchasesLearner:
    """Each user's purchases (the store keeps them as a set, to filter recommendations).

    >>> from core.events import ItemViewed, Purchased
    >>> from infra.memory_store import InMemoryStateStore
    >>> events = [ItemViewed(user_id="u", item_id="a", timestamp=1.0),
    ...           Purchased(user_id="u", item_id="b", timestamp=2.0)]
    >>> PurchasesLearner().learn_many(EventBatch(events, [1.0, 2.0], [1.0, 8.0]),
    ...                               InMemoryStateStore()).purchased
    {'u': ['b']}
    """

    reads = frozenset({"purchase"})
    writes = frozenset({"purchased"})

    def learn_many(self, batch: EventBatch, store: StateStore) -> StateUpdate:
        purchased: dict[str, list[str]] = {}
        for event in batch.by_type.get("purchase", ()):
            purchased.setdefault(event.user_id, []).append(event.item_id)
        return StateUpdate(purchased=purchased)


class HistoryLearner:
    """Each user's weighted history: item -> summed implicit weight (for the ALS fold-in).

    Kept whether or not a collaborative model is trained, so a model trained later
    folds in every user. Events of weight 0 (a 1-star rating) add nothing.

    >>> from core.events import ItemViewed, Purchased
    >>> from infra.memory_store import InMemoryStateStore
    >>> events = [ItemViewed(user_id="u", item_id="a", timestamp=1.0),
    ...           Purchased(user_id="u", item_id="a", timestamp=2.0)]
    >>> HistoryLearner().learn_many(EventBatch(events, [1.0, 2.0], [1.0, 8.0]),
    ...                             InMemoryStateStore()).history
    {'u': {'a': 9.0}}
    """

    reads = INTERACTION_TYPES
    writes = frozenset({"history"})

    def learn_many(self, batch: EventBatch, store: StateStore) -> StateUpdate:
        # A copy: the batch's view is shared with the fold-in, the update goes to the store.
        return StateUpdate(history={user: dict(items) for user, items in batch.history.items()})
