"""Ports: the interfaces the core needs from the outside world.

Adapters live in ``infra`` (Redis, Kafka, SQL) and ``index`` (FAISS); each port
has an in-memory fake for unit tests, and every implementation passes the
shared contract suite in ``tests/contracts``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from core.events import EVENT_WEIGHTS, InteractionEvent, ItemUpserted
from core.types import Item, ScoredItems

__all__ = [
    "ALL_ITEMS",
    "INTERACTION_TYPES",
    "AttemptCounter",
    "BatchWriter",
    "BlobStore",
    "CandidateScorer",
    "CandidateSource",
    "CatalogLog",
    "CovisitSkip",
    "DecayedCounters",
    "DedupeLog",
    "Embedder",
    "EventBatch",
    "EventPublisher",
    "HistoryMode",
    "ItemNeighbours",
    "OnlineLearner",
    "OwnEvents",
    "RatingParams",
    "RecContext",
    "RecRequest",
    "SearchIndex",
    "StateMeta",
    "StateRead",
    "StateStore",
    "StateUpdate",
    "UserState",
    "UserStateReader",
    "Vector",
    "VectorIndex",
    "VectorTables",
    "category_scope",
    "covisit_anchors",
    "covisit_scope",
]

Vector = npt.NDArray[np.float32]

#: When :meth:`StateStore.user_state` reads a user's weighted history.
HistoryMode = Literal["always", "without_factors", "never"]

#: What :meth:`StateStore.user_state` leaves out of co-visited lists: ``"seen"`` = the
#: anchors and the recent items it returns; ``"seen_and_purchased"`` = those and purchases.
CovisitSkip = Literal["nothing", "seen", "seen_and_purchased"]

#: Popularity scope of the whole catalog; categories use ``"cat:<name>"``.
ALL_ITEMS = "all"


def category_scope(category: str) -> str:
    """The popularity scope of one category."""
    return f"cat:{category}"


def covisit_scope(item_id: str) -> str:
    """The scope of items co-visited with ``item_id``."""
    return f"co:{item_id}"


def covisit_anchors(anchors: Sequence[str], recent: Sequence[str]) -> list[str]:
    """The items whose co-visited items a recommendation reads: ``anchors``, then ``recent``.

    >>> covisit_anchors(["b"], ["a", "b", "c"])
    ['b', 'a', 'c']
    """
    return list(dict.fromkeys([*anchors, *recent]))


@dataclass(frozen=True)
class UserState:
    """What a recommendation needs to know of one user, read in one round trip."""

    recent: list[str]
    purchased: set[str]
    profile: Vector | None
    #: The user's collaborative vector of the asked model version, if stored.
    factors: Vector | None
    history: dict[str, float]
    #: Items co-visited with each anchor asked for (anchor -> strongest first).
    covisited: dict[str, ScoredItems] = field(default_factory=dict)
    #: The user's state version this state was read at (:meth:`UserStateReader.user_version`,
    #: in the same read): what a list computed from it may be tagged with.
    version: int = 0


@dataclass
class RatingParams:
    """Parameters of the online rating model (biased MF) for some users and items.

    Each vector is ``[bias, latent_1, ..., latent_f]``; ids without parameters are absent.
    """

    n: float = 0.0
    mean: float = 0.0
    users: dict[str, Vector] = field(default_factory=dict)
    items: dict[str, Vector] = field(default_factory=dict)


@dataclass
class StateUpdate:
    """Everything one batch of events changes, applied atomically by a StateStore.

    Built in memory by the stream processor, then written in one transaction (on a
    partitioned store: one per group of keys, each at most once, see
    :meth:`BatchWriter.apply`), so a crash never applies part of a batch twice or
    marks its event ids without applying their work.
    """

    #: Event ids applied by this update; a store remembers them for the dedupe window.
    event_ids: list[str] = field(default_factory=list)
    #: user -> items touched, oldest first (the store keeps the newest N).
    recent: dict[str, list[str]] = field(default_factory=dict)
    #: scope -> item -> weight added at ``popularity_at`` (scope "all" or "cat:<name>").
    popularity: dict[str, dict[str, float]] = field(default_factory=dict)
    #: Event time (Unix seconds) the popularity increments belong to.
    popularity_at: float = 0.0
    #: user -> new content profile vector (replaces the old one).
    profiles: dict[str, Vector] = field(default_factory=dict)
    #: user -> items bought (kept as a set, to filter out of recommendations).
    purchased: dict[str, list[str]] = field(default_factory=dict)
    #: user -> item -> implicit weight added to the user's history (for ALS fold-in).
    history: dict[str, dict[str, float]] = field(default_factory=dict)
    #: user -> collaborative vector, valid for the model version ``factors_version``.
    user_factors: dict[str, Vector] = field(default_factory=dict)
    factors_version: str = ""
    #: item the model never saw -> user -> implicit weight (to fold the item in).
    item_history: dict[str, dict[str, float]] = field(default_factory=dict)
    #: item the model never saw -> its folded-in factors (of ``factors_version``).
    item_factors: dict[str, Vector] = field(default_factory=dict)
    #: name -> new value of small models kept whole (e.g. the online blender).
    blobs: dict[str, bytes] = field(default_factory=dict)
    #: Changed parameters of the online rating model (None: no rating in the batch).
    rating: RatingParams | None = None
    #: counter name -> increment (events by type, dead letters, ...).
    counters: dict[str, int] = field(default_factory=dict)
    #: Event time (Unix seconds) of the newest event applied, for freshness.
    last_event_ts: float | None = None

    def users(self) -> set[str]:
        """The users whose own state this update changes (their state versions move)."""
        return {*self.recent, *self.purchased, *self.history, *self.profiles,
                *self.user_factors}

    def is_empty(self) -> bool:
        return not (self.event_ids or self.recent or self.popularity or self.profiles
                    or self.counters or self.history or self.user_factors or self.purchased
                    or self.item_history or self.item_factors
                    or self.rating is not None or bool(self.blobs))


# --- online state: small role ports (Feast's online store: write a batch, read for a request).
# A caller takes the role it needs; ``StateStore`` is their union, what an adapter implements.


@runtime_checkable
class DedupeLog(Protocol):
    """Which events a store already applied (the "applied once" guarantee)."""

    def seen_events(self, event_ids: Sequence[str]) -> set[str]:
        """The ids among ``event_ids`` already applied (within the dedupe window)."""
        ...


@runtime_checkable
class BatchWriter(Protocol):
    """Writes a batch's whole state change."""

    def apply(self, update: StateUpdate) -> None:
        """Apply ``update`` with its event ids: each part atomically, never twice.

        A single store applies it all or nothing; a partitioned one (Redis Cluster) applies
        it per group of keys, each group atomically and at most once, and completes a
        partly applied update on the next call.
        """
        ...


@runtime_checkable
class UserStateReader(Protocol):
    """Per-user state: recent items, purchases, accumulated history."""

    def recent_items(self, user_id: str, n: int = 50) -> list[str]:
        """The user's most recent items, newest first, without repeats."""
        ...

    def user_version(self, user_id: str) -> int:
        """The user's state version: 0 for a user never updated, then one more for every
        :meth:`apply` that changed the user's own state (:meth:`StateUpdate.users`),
        moved by that same atomic update (on a partitioned store: by the atomic part
        that writes the user's state), one small read: for conditional requests."""
        ...

    def recent_items_many(self, user_ids: Sequence[str], n: int = 50) -> dict[str, list[str]]:
        """:meth:`recent_items` of several users in one round trip."""
        ...

    def purchased_items(self, user_id: str) -> set[str]:
        """Every item the user bought."""
        ...

    def get_histories(self, user_ids: Sequence[str]) -> dict[str, dict[str, float]]:
        """Each user's accumulated item weights (users without history are left out)."""
        ...

    def user_state(
        self, user_id: str, recent_n: int, factors_version: str, *,
        covisit_n: int = 0, anchors: Sequence[str] = (), recent_anchors: int = 0,
        history: HistoryMode = "always", covisit_skip: CovisitSkip = "nothing",
    ) -> UserState:
        """Recent items, purchases, profile, collaborative vector and history of a user.

        With ``covisit_n`` > 0, also the ``covisit_n`` items most co-visited with each
        of ``anchors`` and of the user's ``recent_anchors`` latest items (all in the
        same request: one round trip per server involved), leaving out what
        ``covisit_skip`` names -- the next strongest take their places, so a recommender
        reads no more pairs than it can use.
        The history (only needed to fold in a vector) is read ``"always"``, only
        ``"without_factors"`` stored for ``factors_version``, or ``"never"`` (then empty).
        The state carries the user's version of the same read (:attr:`UserState.version`)
        and lists the items noted by :meth:`OwnEvents.note_own_events` and not applied
        yet as the newest recent items.
        """
        ...


@runtime_checkable
class OwnEvents(Protocol):
    """Read-your-writes for a shopper's own events, before the consumers apply them.

    The API notes the items of events it has just accepted; until the stream processor
    applies those events (or ``ttl_s`` passes: an event that never gets applied), the
    recommendation read :meth:`UserStateReader.user_state` lists them as the newest
    recent items (seen, and co-visitation anchors). The learners' reads
    (:meth:`UserStateReader.recent_items_many`) never see them: a learner's "before the
    batch" must not already hold the batch. Noting moves the user's state version (so a
    conditional request gets a fresh list at once); applying an event later removes its
    item from the noted ones. The consumers stay the owners of the state: noting writes
    nothing else.
    """

    def note_own_events(self, items_by_user: Mapping[str, Sequence[str]],
                        ttl_s: float = 120.0) -> None:
        """Note each user's items, oldest first (one round trip per node involved)."""
        ...


@runtime_checkable
class DecayedCounters(Protocol):
    """Decayed popularity per scope (``"all"``, ``"cat:<category>"``, ``"co:<item>"``)."""

    def top_popular(self, n: int, scope: str = ALL_ITEMS) -> ScoredItems:
        """The ``n`` most popular items of a scope by decayed weight, best first.

        Scopes: ``"all"``, ``"cat:<category>"`` and ``"co:<item>"`` (items co-visited
        with that item, trimmed to the strongest few).
        """
        ...

    def top_popular_many(self, scopes: Sequence[str], n: int) -> dict[str, ScoredItems]:
        """:meth:`top_popular` of several scopes, read consistently in one request."""
        ...

    def popularity(self, item_ids: Sequence[str], scope: str = ALL_ITEMS) -> ScoredItems:
        """Decayed popularity of the given items; items never seen are left out."""
        ...


@runtime_checkable
class ItemNeighbours(Protocol):
    """Per-item state: co-visited items and the users who touched items new to the model."""

    def covisited(self, item_ids: Sequence[str], n: int) -> dict[str, ScoredItems]:
        """The ``n`` items most co-visited with each of ``item_ids`` (strongest first)."""
        ...

    def get_item_histories(self, item_ids: Sequence[str]) -> dict[str, dict[str, float]]:
        """Per new item, the users who touched it and their weights."""
        ...


@runtime_checkable
class VectorTables(Protocol):
    """Float32 vectors of users and items: profiles, collaborative factors, rating model."""

    def get_profiles(self, user_ids: Sequence[str]) -> dict[str, Vector]:
        """Content profile vectors of the users that have one."""
        ...

    def get_user_factors(self, user_ids: Sequence[str], version: str) -> dict[str, Vector]:
        """Collaborative vectors of the users that have one for model ``version``."""
        ...

    def get_item_factors(self, version: str) -> dict[str, Vector]:
        """Factors folded in for items the model ``version`` never saw."""
        ...

    def get_rating_params(self, user_ids: Sequence[str], item_ids: Sequence[str]) -> RatingParams:
        """The online rating model's global mean and the parameters of these users and items."""
        ...


@runtime_checkable
class BlobStore(Protocol):
    """Small values kept whole: models (``StateUpdate.blobs``) and served lists."""

    def get_blob(self, name: str) -> bytes | None:
        """A small model kept whole (``StateUpdate.blobs``), or None."""
        ...

    def remember_impressions(self, shown: Mapping[str, str], ttl_s: int) -> None:
        """Remember what recommendation lists showed: rec id -> the caller's encoding of the
        list (one opaque string per list: written per request, read only on feedback)."""
        ...

    def impressions(self, rec_id: str) -> str | None:
        """What :meth:`remember_impressions` kept for ``rec_id`` (None when expired)."""
        ...


@runtime_checkable
class StateMeta(Protocol):
    """Counters, freshness and housekeeping of a store."""

    def ping(self) -> bool:
        """True when the store answers."""
        ...

    def counters(self) -> dict[str, int]:
        """All counters."""
        ...

    def last_event_ts(self) -> float | None:
        """Event time of the newest applied event, or None."""
        ...

    def clear(self) -> None:
        """Forget everything (tests and demo resets)."""
        ...


@runtime_checkable
class StateStore(
    DedupeLog, BatchWriter, UserStateReader, OwnEvents, DecayedCounters, ItemNeighbours,
    VectorTables, BlobStore, StateMeta, Protocol,
):
    """All online state roles together: what a store adapter implements."""


# --- online learners ---------------------------------------------------------------------
#: Every interaction ``event_type`` (what a learner of all events declares it reads).
INTERACTION_TYPES: frozenset[str] = frozenset(EVENT_WEIGHTS)


@dataclass(frozen=True, eq=False)
class EventBatch:
    """A batch's new events as every online learner receives them.

    The stream processor builds it once per batch, after dedupe: each event at most
    once, oldest first (ties in arrival order), with its event time and implicit
    weight. The views below are computed on first use and shared by the learners,
    so a batch is walked once per view, not once per learner.

    >>> from core.events import ItemViewed, Rated
    >>> events = [ItemViewed(user_id="u", item_id="a", timestamp=10.0),
    ...           Rated(user_id="v", item_id="a", rating=1, timestamp=20.0),
    ...           ItemViewed(user_id="u", item_id="a", timestamp=30.0)]
    >>> batch = EventBatch(events, [10.0, 20.0, 30.0], [1.0, 0.0, 1.0])
    >>> batch.at, batch.users, sorted(batch.by_type), batch.history
    (30.0, ['u', 'v'], ['rating', 'view'], {'u': {'a': 2.0}})
    """

    #: The new events, oldest first.
    events: Sequence[InteractionEvent]
    #: Event time (Unix seconds) of each event.
    stamps: Sequence[float]
    #: Implicit-feedback weight of each event (a 1-star rating weighs 0).
    weights: Sequence[float]

    def __post_init__(self) -> None:
        if not len(self.events) == len(self.stamps) == len(self.weights):
            raise ValueError("one event time and one weight per event")

    @property
    def at(self) -> float:
        """Event time of the newest event: the time the batch's state is written at."""
        if not self.stamps:
            raise ValueError("an empty batch has no event time")
        return self.stamps[-1]

    @cached_property
    def users(self) -> list[str]:
        """The distinct users, in order of their first event."""
        return list(dict.fromkeys(e.user_id for e in self.events))

    @cached_property
    def by_type(self) -> dict[str, list[InteractionEvent]]:
        """The events of each ``event_type``, oldest first."""
        groups: dict[str, list[InteractionEvent]] = {}
        for event in self.events:
            groups.setdefault(event.event_type, []).append(event)
        return groups

    @cached_property
    def history(self) -> dict[str, dict[str, float]]:
        """user -> item -> summed weight of the batch (only positive weights count)."""
        history: dict[str, dict[str, float]] = {}
        for event, weight in zip(self.events, self.weights, strict=True):
            if weight > 0:
                items = history.setdefault(event.user_id, {})
                items[event.item_id] = items.get(event.item_id, 0.0) + weight
        return history


@runtime_checkable
class OnlineLearner(Protocol):
    """An online model fed by the event stream: River's ``learn`` verb, batch-wise.

    :meth:`learn_many` turns a batch into the learner's part of the batch's
    :class:`StateUpdate`. It may read the store (the state before the batch) and
    never writes it: the stream processor merges every learner's part into one
    update that the store applies atomically, with the batch's event ids, so a
    redelivered batch is learnt once or not at all. Hyperparameters are ``__init__``
    arguments kept as same-named attributes (a learner is cloned and printed from
    its signature). Every learner passes ``tests/contracts/online_learner.py``.
    """

    @property
    def reads(self) -> frozenset[str]:
        """The ``event_type`` values it learns from; a batch of none leaves its part empty."""
        ...

    @property
    def writes(self) -> frozenset[str]:
        """The :class:`StateUpdate` fields its part may fill."""
        ...

    def learn_many(self, batch: EventBatch, store: StateStore) -> StateUpdate:
        """This learner's part of the state update of ``batch`` (``store`` is only read)."""
        ...


class SearchIndex(Protocol):
    """The read side of an index: search and look up vectors."""

    def get(self, ids: Sequence[str]) -> dict[str, Vector]: ...

    def vectors_of(self, ids: Sequence[str]) -> tuple[list[int], npt.NDArray[np.float32]]:
        """The stored vectors of the known ids among ``ids`` (distinct) as one matrix's
        rows, and each row's position in ``ids``."""
        ...

    def search(
        self, query: npt.ArrayLike, k: int, exclude: Sequence[str] = ()
    ) -> ScoredItems: ...


@runtime_checkable
class VectorIndex(Protocol):
    """Item embeddings with string ids; inner-product search over unit vectors."""

    @property
    def dim(self) -> int: ...

    def __len__(self) -> int: ...

    def __contains__(self, item_id: object) -> bool: ...

    def upsert(self, ids: Sequence[str], vectors: npt.ArrayLike) -> None:
        """Add or replace the vectors of ``ids`` (normalised to unit length)."""
        ...

    def remove(self, ids: Sequence[str]) -> int:
        """Remove ``ids``; return how many were present."""
        ...

    def get(self, ids: Sequence[str]) -> dict[str, Vector]:
        """The stored vectors of the known ids among ``ids``."""
        ...

    def vectors_of(self, ids: Sequence[str]) -> tuple[list[int], npt.NDArray[np.float32]]:
        """:meth:`get` as one matrix (for scoring many candidates at once)."""
        ...

    def search(
        self, query: npt.ArrayLike, k: int, exclude: Sequence[str] = ()
    ) -> ScoredItems:
        """The ``k`` nearest items to ``query`` (cosine), minus ``exclude``."""
        ...

    def save(self, path: Path) -> None: ...


class Embedder(Protocol):
    """Turns items into unit vectors (content embeddings); new items included."""

    def transform(self, items: Sequence[Item]) -> npt.NDArray[np.float32]: ...


class CatalogLog(Protocol):
    """Shared, versioned record of catalog changes (new or changed items and vectors).

    Every process (API workers, consumers) keeps its own catalog and index copy and
    catches up with :meth:`changes_since`, so an upsert is visible everywhere
    without a restart.
    """

    def version(self) -> int:
        """The newest version (0 when nothing was ever recorded)."""
        ...

    def record(self, items: Sequence[Item], vectors: dict[str, Vector]) -> int:
        """Record changed items (with their vectors, where they have one); return the version."""
        ...

    def changes_since(self, version: int) -> tuple[int, list[Item], dict[str, Vector]]:
        """Items changed after ``version``, their vectors, and the version now reached."""
        ...


class EventPublisher(Protocol):
    """Sends events to the broker; returns once the broker acknowledged them."""

    def publish(self, events: Sequence[InteractionEvent]) -> None:
        """Produce interactions (key = user id); raise TemporaryFailure on failure."""
        ...

    def publish_catalog(self, events: Sequence[ItemUpserted]) -> None:
        """Produce catalog changes (key = item id)."""
        ...

    def publish_raw(self, topic: str, key: bytes | None, value: bytes) -> None:
        """Produce raw bytes (replays, tests, dead letters)."""
        ...

    def close(self) -> None: ...


class AttemptCounter(Protocol):
    """Attempts per key in a fixed window, shared by every process that limits them.

    :meth:`hit` counts and reads in one atomic step, so N concurrent attempts
    (threads, workers, hosts) see N distinct counts: none slips past a limit.
    """

    def hit(self, keys: Sequence[str], window_s: float) -> list[int]:
        """Count one attempt under each key; return each key's count in its window.

        A key's window starts at its first attempt and lasts ``window_s`` seconds.
        """
        ...

    def undo(self, keys: Sequence[str]) -> None:
        """Take one attempt back from each key (never below zero)."""
        ...

    def reset(self, key: str) -> None:
        """Forget every attempt under ``key``."""
        ...


# --- recommendation sources: the one interface of the live pipeline and of `served` -----

@dataclass(frozen=True)
class RecRequest:
    """What a caller asks for; every field but ``user_id`` and ``k`` is optional."""

    user_id: str
    k: int
    context_item: str | None = None
    category: str | None = None
    preferred_categories: tuple[str, ...] = ()
    min_price: float | None = None
    max_price: float | None = None
    variant: str | None = None


@dataclass
class StateRead:
    """What one request reads of its user's state, in one round trip.

    Sources add what they need in :meth:`CandidateSource.prepare` (the collaborative
    source its model version, co-visitation its anchors), then the pipeline reads it
    all at once with :meth:`StateStore.user_state`.
    """

    recent_n: int
    factors_version: str = ""
    covisit_n: int = 0
    anchors: list[str] = field(default_factory=list)
    recent_anchors: int = 0
    history: HistoryMode = "never"
    covisit_skip: CovisitSkip = "nothing"


@dataclass
class RecContext:
    """One request as the sources see it: the request, its user's state, what is excluded.

    ``memo`` holds what a source computed once for the request (a folded-in vector,
    the popularity snapshot) under the source's name.
    """

    request: RecRequest
    #: Candidates each source proposes (enough to fill ``k`` after the filters).
    n: int
    read: StateRead
    user: UserState = field(default_factory=lambda: UserState([], set(), None, None, {}))
    #: Items never recommended to this request (seen, bought by the rules, the context).
    excluded: set[str] = field(default_factory=set)
    memo: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class CandidateSource(Protocol):
    """Proposes items for a request (LensKit's candidate selector)."""

    #: The source's name in the registry, the blend weights and the response's ``sources``.
    name: str

    def prepare(self, ctx: RecContext) -> None:
        """Add what the source needs to ``ctx.read`` (called before the state is read)."""
        ...

    def candidates(self, ctx: RecContext) -> Mapping[str, float]:
        """Proposed items, best first, each with the source's score of it (NaN: proposed
        without a score; :meth:`CandidateScorer.score` scores it later)."""
        ...


@runtime_checkable
class CandidateScorer(Protocol):
    """Scores given candidates, leaving out what it cannot score (LensKit's scorer)."""

    name: str

    def prepare(self, ctx: RecContext) -> None: ...

    def score(self, ctx: RecContext, item_ids: Sequence[str]) -> npt.NDArray[np.float64]:
        """One score per item in [0, 1]; NaN where the source cannot score it (never 0)."""
        ...
