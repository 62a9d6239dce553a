"""Turns a batch of interaction events into one atomic state update.

The processor is the "learn" half of the consumers: it reads what it needs
(already-applied event ids, current profiles), folds every new event into the
online models in event-time order, and hands a :class:`core.ports.StateUpdate`
to the store, which applies it in one transaction. Replaying a batch therefore
changes nothing twice: applied event ids are skipped.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from core.events import InteractionEvent, ItemClicked, Purchased, Rated
from core.ports import (
    ALL_ITEMS,
    StateStore,
    StateUpdate,
    Vector,
    VectorIndex,
    category_scope,
    covisit_scope,
)
from core.settings import CovisitDirection
from online_models.als_foldin import ALSFoldIn
from online_models.blender import BLOB, OnlineBlender
from online_models.profile import ContentProfile
from online_models.rating_mf import OnlineRatingMF

__all__ = ["StreamProcessor"]


def implicit_weight(event: InteractionEvent) -> float:
    """Implicit-feedback strength of an event (view < click < cart < purchase)."""
    return event.implicit_weight if isinstance(event, Rated) else event.weight


class StreamProcessor:
    """Builds state updates from interaction events.

    Parameters
    ----------
    store
        Where state lives (read for dedupe and profiles, written by the caller).
    index
        Item embeddings; an item missing from it updates recency and popularity
        but not the profile (its embedding arrives with its catalog upsert).
    categories
        item id -> category, for per-category popularity.
    half_life_s
        Half-life of decayed popularity, in seconds of event time.
    profile
        The content-profile model.
    covisit_window
        Each event's item co-occurs with this many of the user's previous items
        (co-visitation: scope ``co:<item>``, decayed like popularity).
    covisit_direction
        ``"both"``: a pair counts in both items' scopes; ``"forward"``: only in the
        earlier item's (``co:<a>`` holds what shoppers viewed after ``a``), half the writes.
    collaborative
        Returns the current ALS fold-in (None without a trained model). The user's
        weighted history is kept either way, so a model trained later folds them in.
    rating_model
        Learns explicit ratings online (its parameters live in the store).
    blender
        Learns source weights from clicks that carry the ``rec_id`` of a served list.
    """

    def __init__(
        self,
        store: StateStore,
        index: VectorIndex,
        categories: Mapping[str, str],
        *,
        half_life_s: float,
        profile: ContentProfile,
        covisit_window: int = 3,
        covisit_direction: CovisitDirection = "both",
        collaborative: Callable[[], ALSFoldIn | None] | None = None,
        rating_model: OnlineRatingMF | None = None,
        blender: OnlineBlender | None = None,
    ) -> None:
        self.store = store
        self.index = index
        self.categories = categories
        self.half_life_s = half_life_s
        self.profile = profile
        self.covisit_window = covisit_window
        if covisit_direction not in ("both", "forward"):
            raise ValueError(f"covisit_direction must be 'both' or 'forward', "
                             f"not {covisit_direction!r}")
        self.covisit_direction = covisit_direction
        self.collaborative = collaborative
        self.rating_model = rating_model
        self.blender = blender

    def build_update(
        self, events: Sequence[InteractionEvent], counters: Mapping[str, int] | None = None
    ) -> StateUpdate:
        """The state change of ``events``, skipping ones already applied.

        ``counters`` are extra increments to write in the same transaction
        (dead letters of the batch, for instance). Everything is summed over the
        batch before it reaches the store (one increment per scope and item, per
        user and item, one recent-list push per user), so the store's work grows
        with the distinct keys a batch touches, not with its events.
        """
        update = StateUpdate(counters=dict(counters or {}))
        if not events:
            return update
        seen = self.store.seen_events([e.event_id for e in events])
        fresh: list[InteractionEvent] = []
        stamps: list[float] = []
        # Event time once per event (``ts`` converts a datetime each time); ties keep
        # arrival order.
        for ts, _, event in sorted([(e.ts, n, e) for n, e in enumerate(events)]):
            if event.event_id in seen:
                continue
            seen.add(event.event_id)  # a duplicate inside the batch counts once too
            fresh.append(event)
            stamps.append(ts)
        duplicates = len(events) - len(fresh)
        if duplicates:
            update.counters["events.duplicate"] = duplicates
        if not fresh:
            return update

        batch_ts = stamps[-1]
        update.popularity_at = batch_ts
        update.last_event_ts = batch_ts
        # Increments are all written at the batch's time: pre-decay each one so the
        # result equals applying it at its own event time.
        decays = np.exp2((np.array(stamps) - batch_ts) / self.half_life_s).tolist()
        vectors = self.index.get(list(dict.fromkeys(e.item_id for e in fresh)))
        users = list(dict.fromkeys(e.user_id for e in fresh))
        # Each user's newest items before this batch, advanced event by event.
        history = self.store.recent_items_many(users, self.covisit_window)
        window = self.covisit_window
        both_ways = self.covisit_direction == "both"
        overall: dict[str, float] = defaultdict(float)
        covisits: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        recent: dict[str, list[str]] = defaultdict(list)
        weights: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        steps: tuple[list[str], list[str], list[float]] = ([], [], [])  # user, item, weight
        unknown = 0

        for event, decay in zip(fresh, decays, strict=True):
            user, item = event.user_id, event.item_id
            recent[user].append(item)
            weight = implicit_weight(event)
            if weight > 0:
                weights[user][item] += weight
            if isinstance(event, Purchased):
                update.purchased.setdefault(user, []).append(item)
            decayed = weight * decay
            overall[item] += decayed
            before = history.get(user, ())
            for partner in before:
                if partner != item:
                    covisits[partner][item] += decayed  # partner came first
                    if both_ways:
                        covisits[item][partner] += decayed
            history[user] = [item, *[i for i in before if i != item][: window - 1]]
            if item not in vectors:
                unknown += 1
            elif weight > 0:  # a 1-star rating says "not this", not "more like this"
                steps[0].append(user)
                steps[1].append(item)
                steps[2].append(weight)

        update.event_ids = [e.event_id for e in fresh]
        self._fold_profiles(update, steps, vectors)
        self._learn_clicks(update, [e for e in fresh if isinstance(e, ItemClicked) and e.rec_id])
        ratings = [e for e in fresh if isinstance(e, Rated)]
        if ratings and self.rating_model is not None:
            params = self.store.get_rating_params([e.user_id for e in ratings],
                                                  [e.item_id for e in ratings])
            update.rating = self.rating_model.learn(ratings, params)
        update.history = {u: dict(w) for u, w in weights.items()}
        self._fold_in(update, users)
        kinds = Counter(e.event_type for e in fresh)
        tally = {f"events.{kind}": n for kind, n in kinds.items()}
        if unknown:
            tally["events.unknown_item"] = unknown
        tally["events.total"] = len(fresh)
        update.counters = {**tally, **update.counters}
        update.popularity = self._scopes(overall, covisits)
        update.recent = dict(recent)
        return update

    def _scopes(
        self, overall: dict[str, float], covisits: dict[str, dict[str, float]]
    ) -> dict[str, dict[str, float]]:
        """Popularity increments by scope: all items, per category, co-visitation."""
        scopes: dict[str, dict[str, float]] = {ALL_ITEMS: dict(overall)}
        for item, weight in overall.items():
            category = self.categories.get(item)
            if category:
                scopes.setdefault(category_scope(category), {})[item] = weight
        for item, partners in covisits.items():
            scopes[covisit_scope(item)] = dict(partners)
        return scopes

    def _learn_clicks(self, update: StateUpdate, clicks: list[InteractionEvent]) -> None:
        if self.blender is None or not clicks:
            return
        blob = self.store.get_blob(BLOB)
        model = self.blender.restore(blob)
        learnt = 0
        for click in clicks:
            assert click.rec_id is not None
            learnt += self.blender.learn(model, self.store.impressions(click.rec_id),
                                         click.item_id)
        if learnt:
            update.blobs[BLOB] = self.blender.dumps(model)
            update.counters["blender.examples"] = learnt

    def _fold_profiles(
        self,
        update: StateUpdate,
        steps: tuple[list[str], list[str], list[float]],
        vectors: Mapping[str, Vector],
    ) -> None:
        """Every user's content profile after their events of the batch, in one pass."""
        users, items, weights = steps
        if not users:
            return
        rows = {item: n for n, item in enumerate(dict.fromkeys(items))}
        matrix = np.stack([vectors[item] for item in rows])
        update.profiles = self.profile.fold_many(
            self.store.get_profiles(list(dict.fromkeys(users))), users,
            matrix[[rows[item] for item in items]], np.array(weights))

    def _fold_in(self, update: StateUpdate, users: list[str]) -> None:
        foldin = self.collaborative() if self.collaborative is not None else None
        if foldin is None or not update.history:
            return
        update.factors_version = foldin.version
        touched = [u for u in users if u in update.history]
        histories = self.store.get_histories(touched)
        for user in touched:
            merged = histories.get(user, {})
            for item, weight in update.history[user].items():
                merged[item] = merged.get(item, 0.0) + weight
            vector = foldin.user_vector(merged)
            if vector is not None:
                update.user_factors[user] = vector
        self._fold_in_new_items(update, foldin)

    def _fold_in_new_items(self, update: StateUpdate, foldin: ALSFoldIn) -> None:
        """Items the model never saw get factors from the users who touched them."""
        for user, weights in update.history.items():
            for item, weight in weights.items():
                if item not in foldin.item_index:
                    update.item_history.setdefault(item, {})[user] = weight
        if not update.item_history or foldin.user_gram is None:
            return
        merged = self.store.get_item_histories(list(update.item_history))
        for item, increments in update.item_history.items():
            mine = merged.setdefault(item, {})
            for user, weight in increments.items():
                mine[user] = mine.get(user, 0.0) + weight
        users = list({u for weights in merged.values() for u in weights})
        stored = self.store.get_user_factors(
            [u for u in users if u not in update.user_factors], foldin.version)
        factors = {**stored, **update.user_factors}
        for item, weights in merged.items():
            known = [u for u in weights if u in factors]
            vector = foldin.item_vector(np.stack([factors[u] for u in known]),
                                        [weights[u] for u in known]) if known else None
            if vector is not None:
                update.item_factors[item] = vector

    def apply(
        self, events: Sequence[InteractionEvent], counters: Mapping[str, int] | None = None
    ) -> StateUpdate:
        """Build the update of ``events`` and write it to the store atomically."""
        update = self.build_update(events, counters)
        if not update.is_empty():
            self.store.apply(update)
        return update
