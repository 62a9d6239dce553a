"""The catalog change log on Redis (and in memory for tests).

Keys under the store prefix: ``catalog:version`` (counter), ``catalog:changes`` (zset
item -> version of its last change), ``catalog:items`` (hash item -> JSON) and
``catalog:vectors`` (hash item -> float32 bytes). One MULTI/EXEC per record.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import asdict

import numpy as np

from core.ports import Vector
from core.types import Item
from infra.redis_cluster import RedisClient
from infra.redis_store import redis_failures

__all__ = ["InMemoryCatalogLog", "RedisCatalogLog"]


def _item_json(item: Item) -> str:
    return json.dumps(asdict(item), separators=(",", ":"))


class RedisCatalogLog:
    """A :class:`core.ports.CatalogLog` on Redis."""

    def __init__(self, client: RedisClient, *, prefix: str = "sr:") -> None:
        self.client = client
        # One hash tag: the keys change together in one transaction, on Redis Cluster too.
        self._version = f"{prefix}catalog:{{c}}:version"
        self._changes = f"{prefix}catalog:{{c}}:changes"
        self._items = f"{prefix}catalog:{{c}}:items"
        self._vectors = f"{prefix}catalog:{{c}}:vectors"

    def version(self) -> int:
        with redis_failures("catalog version"):
            raw = self.client.get(self._version)
        return int(raw or 0)

    def record(self, items: Sequence[Item], vectors: dict[str, Vector]) -> int:
        if not items:
            return self.version()
        with redis_failures("catalog record"):
            version = int(self.client.incr(self._version))
            pipe = self.client.pipeline(transaction=True)
            pipe.hset(self._items, mapping={i.item_id: _item_json(i) for i in items})
            if vectors:
                pipe.hset(self._vectors, mapping={
                    k: np.asarray(v, dtype=np.float32).tobytes() for k, v in vectors.items()
                })
            pipe.zadd(self._changes, {i.item_id: version for i in items})
            pipe.execute()
        return version

    def changes_since(self, version: int) -> tuple[int, list[Item], dict[str, Vector]]:
        with redis_failures("catalog changes"):
            pipe = self.client.pipeline(transaction=True)
            pipe.get(self._version)
            pipe.zrangebyscore(self._changes, f"({version}", "+inf")
            now_raw, changed = pipe.execute()
            now = int(now_raw or 0)
            if not changed:
                return max(now, version), [], {}
            pipe = self.client.pipeline(transaction=True)
            pipe.hmget(self._items, changed)
            pipe.hmget(self._vectors, changed)
            raw_items, raw_vectors = pipe.execute()
        items = [Item(**json.loads(raw)) for raw in raw_items if raw is not None]
        vectors = {
            item_id.decode(): np.frombuffer(blob, dtype=np.float32).copy()
            for item_id, blob in zip(changed, raw_vectors, strict=True)
            if blob is not None
        }
        return now, items, vectors


class InMemoryCatalogLog:
    """The same log in process memory (unit tests).

    >>> log = InMemoryCatalogLog()
    >>> log.record([Item("a", "A mug")], {})
    1
    >>> version, items, vectors = log.changes_since(0)
    >>> version, [i.item_id for i in items], vectors
    (1, ['a'], {})
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._version = 0
        self._changes: dict[str, int] = {}
        self._items: dict[str, Item] = {}
        self._vectors: dict[str, Vector] = {}

    def version(self) -> int:
        return self._version

    def record(self, items: Sequence[Item], vectors: dict[str, Vector]) -> int:
        with self._lock:
            if items:
                self._version += 1
                for item in items:
                    self._items[item.item_id] = item
                    self._changes[item.item_id] = self._version
                self._vectors.update({k: np.asarray(v, np.float32) for k, v in vectors.items()})
            return self._version

    def changes_since(self, version: int) -> tuple[int, list[Item], dict[str, Vector]]:
        with self._lock:
            changed = [i for i, v in self._changes.items() if v > version]
            return (
                max(self._version, version),
                [self._items[i] for i in changed],
                {i: self._vectors[i].copy() for i in changed if i in self._vectors},
            )
