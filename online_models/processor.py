"""Turns a batch of interaction events into one atomic state update.

The processor is the "learn" half of the consumers: it validates a batch (each
event applied once, in event-time order), hands it to every online learner, and
merges their parts into one :class:`core.ports.StateUpdate` that the store applies
in one transaction. Replaying a batch therefore changes nothing twice: applied
event ids are skipped. The learners (:class:`core.ports.OnlineLearner`) each own a
part of the state: recent items, purchases, weighted histories, decayed popularity,
co-visitation, content profiles, the ALS fold-in, the rating model, the blender.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, fields

from core.events import InteractionEvent, Rated
from core.ports import EventBatch, OnlineLearner, SearchIndex, StateStore, StateUpdate
from core.settings import CovisitDirection
from online_models.als_foldin import ALSFoldIn, FoldInLearner
from online_models.blender import OnlineBlender
from online_models.covisitation import CovisitationLearner
from online_models.popularity import PopularityLearner
from online_models.profile import ContentProfile, ProfileLearner
from online_models.rating_mf import OnlineRatingMF
from online_models.recent import HistoryLearner, PurchasesLearner, RecentItemsLearner

__all__ = ["StreamProcessor", "implicit_weight", "learn_batch", "merge_part"]


def implicit_weight(event: InteractionEvent) -> float:
    """Implicit-feedback strength of an event (view < click < cart < purchase)."""
    return event.implicit_weight if isinstance(event, Rated) else event.weight


class StreamProcessor:
    """Builds state updates from interaction events: validate -> learners -> merge.

    The hyperparameters configure the standard learners, in this order: recent
    items, purchases, weighted histories, popularity, co-visitation, content
    profiles, and (when given) the ALS fold-in, the rating model and the blender;
    ``extra_learners`` join after them. :attr:`learners` is the assembled list.

    Parameters
    ----------
    store
        Where state lives (read for dedupe and by the learners, written by :meth:`apply`).
    index
        Item embeddings; an item missing from it updates recency and popularity
        but not the profile (its embedding arrives with its catalog upsert).
    categories
        item id -> category, for per-category popularity.
    half_life_s
        Half-life of decayed popularity and co-visitation, in seconds of event time.
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
    extra_learners
        More learners, each contributing its own part of every update.
    """

    def __init__(
        self,
        store: StateStore,
        index: SearchIndex,
        categories: Mapping[str, str],
        *,
        half_life_s: float,
        profile: ContentProfile,
        covisit_window: int = 3,
        covisit_direction: CovisitDirection = "both",
        collaborative: Callable[[], ALSFoldIn | None] | None = None,
        rating_model: OnlineRatingMF | None = None,
        blender: OnlineBlender | None = None,
        extra_learners: Sequence[OnlineLearner] = (),
    ) -> None:
        self.store = store
        self.index = index
        self.categories = categories
        self.half_life_s = half_life_s
        self.profile = profile
        self.covisit_window = covisit_window
        self.covisit_direction = covisit_direction
        self.collaborative = collaborative
        self.rating_model = rating_model
        self.blender = blender
        self.extra_learners = extra_learners
        optional: list[OnlineLearner | None] = [
            FoldInLearner(collaborative) if collaborative is not None else None,
            rating_model, blender,
        ]
        self.learners: list[OnlineLearner] = [
            RecentItemsLearner(), PurchasesLearner(), HistoryLearner(),
            PopularityLearner(categories, half_life_s),
            CovisitationLearner(half_life_s, covisit_window, covisit_direction),
            ProfileLearner(index, profile),
            *(learner for learner in optional if learner is not None),
            *extra_learners,
        ]

    def build_update(
        self, events: Sequence[InteractionEvent], counters: Mapping[str, int] | None = None
    ) -> StateUpdate:
        """The state change of ``events``, skipping ones already applied (:func:`learn_batch`)."""
        return learn_batch(self.store, self.learners, events, counters)

    def apply(
        self, events: Sequence[InteractionEvent], counters: Mapping[str, int] | None = None
    ) -> StateUpdate:
        """Build the update of ``events`` and write it to the store atomically."""
        update = self.build_update(events, counters)
        if not update.is_empty():
            self.store.apply(update)
        return update


def learn_batch(
    store: StateStore,
    learners: Sequence[OnlineLearner],
    events: Sequence[InteractionEvent],
    counters: Mapping[str, int] | None = None,
) -> StateUpdate:
    """The state change of ``events`` learnt by ``learners``, skipping applied events.

    Validation first: events already applied (or repeated in the batch) are dropped
    and counted, the rest ordered by event time; then each learner that reads one of
    the batch's event types adds its part. ``counters`` are extra increments to
    write in the same transaction (dead letters of the batch, for instance).
    Everything is summed over the batch before it reaches the store (one increment
    per scope and item, per user and item, one recent-list push per user), so the
    store's work grows with the distinct keys a batch touches, not with its events.
    """
    update = StateUpdate(counters=dict(counters or {}))
    if not events:
        return update
    batch = _fresh(store, events)
    duplicates = len(events) - len(batch.events)
    if duplicates:
        merge_part(update, StateUpdate(counters={"events.duplicate": duplicates}))
    if not batch.events:
        return update
    tally = {f"events.{kind}": len(group) for kind, group in batch.by_type.items()}
    merge_part(update, StateUpdate(
        event_ids=[e.event_id for e in batch.events], last_event_ts=batch.at,
        counters={**tally, "events.total": len(batch.events)}))
    for learner in learners:
        if not learner.reads.isdisjoint(batch.by_type):
            merge_part(update, learner.learn_many(batch, store))
    return update


def _fresh(store: StateStore, events: Sequence[InteractionEvent]) -> EventBatch:
    """The events not applied yet, each once, oldest first (ties keep arrival order)."""
    seen = store.seen_events([e.event_id for e in events])
    fresh: list[InteractionEvent] = []
    stamps: list[float] = []
    # Event time once per event (``ts`` converts a datetime each time).
    for ts, _, event in sorted([(e.ts, n, e) for n, e in enumerate(events)]):
        if event.event_id in seen:
            continue
        seen.add(event.event_id)  # a duplicate inside the batch counts once too
        fresh.append(event)
        stamps.append(ts)
    return EventBatch(fresh, stamps, [implicit_weight(e) for e in fresh])


def merge_part(update: StateUpdate, part: StateUpdate) -> None:
    """Add a learner's ``part`` to the batch's ``update`` (``part`` is consumed).

    Counters and popularity increments add up; event ids concatenate; any other
    field belongs to one learner: two parts writing the same key, or different
    values of one field, are a wiring error.

    >>> update = StateUpdate(counters={"events.total": 2}, popularity={"all": {"a": 1.0}})
    >>> merge_part(update, StateUpdate(counters={"events.total": 1},
    ...                                popularity={"all": {"a": 0.5}, "co:a": {"b": 1.0}}))
    >>> update.counters, update.popularity
    ({'events.total': 3}, {'all': {'a': 1.5}, 'co:a': {'b': 1.0}})
    >>> merge_part(update, StateUpdate(popularity_at=5.0, recent={"u": ["a"]}))
    >>> merge_part(update, StateUpdate(recent={"u": ["b"]}))
    Traceback (most recent call last):
    ...
    ValueError: two learners wrote recent of ['u']
    """
    for spec in fields(StateUpdate):
        name = spec.name
        theirs = getattr(part, name)
        unset = not theirs if spec.default is MISSING else theirs == spec.default
        if unset:  # an empty collection, or a value left at its default
            continue
        mine = getattr(update, name)
        if name == "counters":
            for key, value in theirs.items():
                mine[key] = mine.get(key, 0) + value
        elif name == "popularity":
            for scope, items in theirs.items():
                target = mine.get(scope)
                if target is None:
                    mine[scope] = items
                    continue
                for item, weight in items.items():
                    target[item] = target.get(item, 0.0) + weight
        elif isinstance(theirs, dict):
            clash = mine.keys() & theirs.keys()
            if clash:
                raise ValueError(f"two learners wrote {name} of {sorted(clash)}")
            mine.update(theirs)
        elif isinstance(theirs, list):
            mine.extend(theirs)
        elif mine == spec.default or mine == theirs:
            setattr(update, name, theirs)
        else:
            raise ValueError(f"two learners wrote {name}: {mine!r} and {theirs!r}")
