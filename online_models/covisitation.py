"""Co-visitation: items the same shopper touched one after another, decayed like popularity."""

from __future__ import annotations

from collections import defaultdict
from typing import get_args

from core.ports import INTERACTION_TYPES, EventBatch, StateStore, StateUpdate, covisit_scope
from core.settings import CovisitDirection
from online_models.decay import decayed_weights

__all__ = ["CovisitationLearner"]


class CovisitationLearner:
    """Each event's item co-occurs with the user's previous ``window`` distinct items.

    A pair adds the event's implicit weight, decayed by event time, to scope
    ``co:<item>`` (read back like a popularity scope). The user's previous items are
    the store's recent items before the batch, advanced event by event through it,
    so however a stream is cut into batches, the pairs are the same.

    Parameters
    ----------
    half_life_s
        Half-life of a pair's weight, in seconds of event time (the store's).
    window
        How many of the user's previous distinct items an event pairs with.
    direction
        ``"both"``: a pair counts in both items' scopes; ``"forward"``: only in the
        earlier item's (``co:<a>`` holds what shoppers viewed after ``a``): half the writes.

    Examples
    --------
    >>> from core.events import ItemViewed
    >>> from infra.memory_store import InMemoryStateStore
    >>> learner = CovisitationLearner(half_life_s=3600.0, window=2, direction="forward")
    >>> views = [ItemViewed(user_id="u", item_id=i, timestamp=t)
    ...          for i, t in (("a", 1.0), ("b", 2.0), ("c", 3.0))]
    >>> part = learner.learn_many(EventBatch(views, [1.0, 2.0, 3.0], [1.0] * 3),
    ...                           InMemoryStateStore())
    >>> {scope: sorted(items) for scope, items in part.popularity.items()}
    {'co:a': ['b', 'c'], 'co:b': ['c']}
    """

    reads = INTERACTION_TYPES
    writes = frozenset({"popularity", "popularity_at"})

    def __init__(
        self, half_life_s: float, window: int = 3, direction: CovisitDirection = "both"
    ) -> None:
        if direction not in get_args(CovisitDirection):
            raise ValueError(f"covisit_direction must be 'both' or 'forward', "
                             f"not {direction!r}")
        if half_life_s <= 0 or window < 1:
            raise ValueError("half_life_s must be > 0 and window >= 1")
        self.half_life_s = half_life_s
        self.window = window
        self.direction = direction

    def learn_many(self, batch: EventBatch, store: StateStore) -> StateUpdate:
        if not batch.events:
            return StateUpdate()
        window, both_ways = self.window, self.direction == "both"
        # Each user's newest items before this batch, advanced event by event.
        history = store.recent_items_many(batch.users, window)
        covisits: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        for event, weight in zip(batch.events, decayed_weights(batch, self.half_life_s),
                                 strict=True):
            user, item = event.user_id, event.item_id
            before = history.get(user, ())
            for partner in before:
                if partner != item:
                    covisits[partner][item] += weight  # partner came first
                    if both_ways:
                        covisits[item][partner] += weight
            history[user] = [item, *[i for i in before if i != item][: window - 1]]
        if not covisits:
            return StateUpdate()
        return StateUpdate(
            popularity={covisit_scope(item): dict(partners)
                        for item, partners in covisits.items()},
            popularity_at=batch.at)
