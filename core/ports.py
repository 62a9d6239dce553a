"""Ports: the interfaces the core needs from the outside world.

Adapters live in ``infra`` (Redis, Kafka, SQL) and ``index`` (FAISS); each port
has an in-memory fake for unit tests, and every implementation passes the
shared contract suite in ``tests/contracts``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from core.events import InteractionEvent, ItemUpserted
from core.types import Item, ScoredItems

__all__ = [
    "ALL_ITEMS",
    "BatchWriter",
    "BlobStore",
    "CatalogLog",
    "CovisitSkip",
    "DecayedCounters",
    "DedupeLog",
    "Embedder",
    "EventPublisher",
    "HistoryMode",
    "ItemNeighbours",
    "RatingParams",
    "SearchIndex",
    "StateMeta",
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
        """
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
    DedupeLog, BatchWriter, UserStateReader, DecayedCounters, ItemNeighbours, VectorTables,
    BlobStore, StateMeta, Protocol,
):
    """All online state roles together: what a store adapter implements."""


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


