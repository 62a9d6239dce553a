"""Decayed popularity ("trending"): the online learner of the popularity scopes."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

from core.ports import (
    ALL_ITEMS,
    INTERACTION_TYPES,
    EventBatch,
    StateStore,
    StateUpdate,
    category_scope,
)
from online_models.decay import decayed_weights

__all__ = ["PopularityLearner"]


class PopularityLearner:
    """Every event adds its implicit weight, decayed by event time, to its item's
    popularity: overall (scope ``"all"``) and in the item's category (``"cat:<name>"``).

    Parameters
    ----------
    categories
        item id -> category (a live lookup: items upserted later count in theirs).
    half_life_s
        Half-life of an event's weight, in seconds of event time (the store's).

    Examples
    --------
    >>> from core.events import ItemViewed, Purchased
    >>> from infra.memory_store import InMemoryStateStore
    >>> learner = PopularityLearner({"a": "Mugs"}, half_life_s=10.0)
    >>> events = [ItemViewed(user_id="u", item_id="a", timestamp=0.0),
    ...           Purchased(user_id="v", item_id="b", timestamp=10.0)]
    >>> part = learner.learn_many(EventBatch(events, [0.0, 10.0], [1.0, 8.0]),
    ...                           InMemoryStateStore())
    >>> part.popularity, part.popularity_at
    ({'all': {'a': 0.5, 'b': 8.0}, 'cat:Mugs': {'a': 0.5}}, 10.0)
    """

    reads = INTERACTION_TYPES
    writes = frozenset({"popularity", "popularity_at"})

    def __init__(self, categories: Mapping[str, str], half_life_s: float) -> None:
        if half_life_s <= 0:
            raise ValueError("half_life_s must be > 0")
        self.categories = categories
        self.half_life_s = half_life_s

    def learn_many(self, batch: EventBatch, store: StateStore) -> StateUpdate:
        if not batch.events:
            return StateUpdate()
        overall: dict[str, float] = defaultdict(float)
        for event, weight in zip(batch.events, decayed_weights(batch, self.half_life_s),
                                 strict=True):
            overall[event.item_id] += weight
        scopes: dict[str, dict[str, float]] = {ALL_ITEMS: dict(overall)}
        for item, weight in overall.items():
            category = self.categories.get(item)
            if category:
                scopes.setdefault(category_scope(category), {})[item] = weight
        return StateUpdate(popularity=scopes, popularity_at=batch.at)
