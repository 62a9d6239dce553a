"""Catalog changes in the stream: embed new or changed items and share them.

:class:`CatalogUpdater` (in the consumers) embeds upserted items and records them
in the shared :class:`core.ports.CatalogLog`; :class:`CatalogReplica` (in every
process that serves or learns: API workers, consumers) keeps a local catalog and
vector index in step with that log, so a new product is recommendable at once,
through its content embedding, without a restart.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass

import numpy as np

from core.events import ItemUpserted
from core.ports import CatalogLog, Embedder, Vector, VectorIndex
from core.types import Item

__all__ = ["CatalogReplica", "CatalogUpdater", "CategoryLookup", "UpsertResult", "item_of"]


def item_of(event: ItemUpserted) -> Item:
    return Item(event.item_id, event.name, event.category, event.price, event.description,
                event.in_stock)


class CategoryLookup(Mapping[str, str]):
    """item id -> category, read live from a catalog that upserts keep changing.

    >>> catalog = {"a": Item("a", "A mug", "Mugs")}
    >>> lookup = CategoryLookup(catalog)
    >>> catalog["b"] = Item("b", "A bag", "Bags")
    >>> lookup.get("b"), len(lookup)
    ('Bags', 2)
    """

    def __init__(self, catalog: Mapping[str, Item]) -> None:
        self._catalog = catalog

    def __getitem__(self, item_id: str) -> str:
        return self._catalog[item_id].category

    def __iter__(self) -> Iterator[str]:
        return iter(self._catalog)

    def __len__(self) -> int:
        return len(self._catalog)


@dataclass(frozen=True, slots=True)
class UpsertResult:
    items: int
    embedded: int
    version: int


class CatalogUpdater:
    """Embeds upserted items and records them (items and vectors) in the log.

    An item whose text shares no term with the embedder's vocabulary gets a zero
    vector; it is recorded without a vector (it stays in the catalog, and content
    search cannot find it until the embedder is refitted by ``streamrec train``).
    """

    def __init__(self, embedder: Embedder, log: CatalogLog) -> None:
        self.embedder = embedder
        self.log = log

    def apply(self, events: Sequence[ItemUpserted]) -> UpsertResult:
        latest = {e.item_id: e for e in sorted(events, key=lambda e: e.ts)}  # last write wins
        items = [item_of(e) for e in latest.values()]
        if not items:
            return UpsertResult(0, 0, self.log.version())
        matrix = self.embedder.transform(items)
        vectors: dict[str, Vector] = {
            item.item_id: row for item, row in zip(items, matrix, strict=True)
            if float(np.linalg.norm(row)) > 0
        }
        version = self.log.record(items, vectors)
        return UpsertResult(len(items), len(vectors), version)


class CatalogReplica:
    """A process-local catalog and index that follow the shared catalog log.

    :meth:`refresh` is cheap when nothing changed (one read of the version) and
    is throttled to one log read per ``min_interval_s``.
    """

    def __init__(
        self,
        catalog: MutableMapping[str, Item],
        index: VectorIndex,
        log: CatalogLog,
        *,
        min_interval_s: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.catalog = catalog
        self.index = index
        self.log = log
        self.min_interval_s = min_interval_s
        self.clock = clock
        self.version = 0
        self._checked_at = -float("inf")
        self._lock = threading.Lock()

    def refresh(self, force: bool = False) -> int:
        """Apply the log's changes since the last refresh; return how many items changed."""
        now = self.clock()
        if not force and now - self._checked_at < self.min_interval_s:
            return 0
        with self._lock:
            self._checked_at = now
            if self.log.version() <= self.version:
                return 0
            version, items, vectors = self.log.changes_since(self.version)
            for item in items:
                self.catalog[item.item_id] = item
            if vectors:
                ids = list(vectors)
                self.index.upsert(ids, np.stack([vectors[i] for i in ids]))
            stale = [i.item_id for i in items if i.item_id not in vectors]
            if stale:
                self.index.remove(stale)  # a changed item without a vector: drop the old one
            self.version = version
            return len(items)
