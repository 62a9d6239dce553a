"""Key names of the Redis state store, each carrying a Redis Cluster hash tag.

Redis Cluster places a key by the part between its first ``{`` and ``}`` (the hash
tag), and a script or transaction may only touch keys of one node. So every key
names its owner in a tag: all keys of one user share the slot of ``{u:<user>}``,
all keys of one item that of ``{i:<item>}``, the store's few global keys (counters,
meta, dedupe log, journal) that of ``{g}``; a popularity scope is split over
``shards`` sub-keys ``{p:<scope>:<k>}`` so no single key takes every write. A new
per-user key is one method here returning ``self._user("name", user)``.

>>> keys = KeySpace("sr:", popularity_shards=4)
>>> keys.recent("alice"), keys.covisit("mug")
('sr:recent:{u:alice}', 'sr:co:{i:mug}')
>>> keys.popularity_key("all", "mug") in keys.popularity_keys("all")
True
>>> hash_tag(keys.recent("alice")) == hash_tag(keys.history("alice"))
True
"""

from __future__ import annotations

import zlib

__all__ = ["GLOBAL_TAG", "KeySpace", "hash_tag"]

#: The tag of the store's global keys (one slot: they change together once per batch).
GLOBAL_TAG = "{g}"
#: Field names inside a user's (or an item's) vector hash.
PROFILE_FIELD = "p"
RATING_FIELD = "r"


def factors_field(version: str) -> str:
    """The field of a user's collaborative vector of model ``version`` in its vector hash."""
    return f"f:{version}"


def hash_tag(key: str) -> str:
    """The part of ``key`` Redis Cluster hashes: its first ``{...}``, else the whole key.

    >>> hash_tag("sr:recent:{u:a}"), hash_tag("plain")
    ('{u:a}', 'plain')
    """
    start = key.find("{")
    end = key.find("}", start + 1)
    return key[start:end + 1] if start >= 0 and end > start + 1 else key


class KeySpace:
    """Every key name of one store ``prefix`` (see the module doc)."""

    def __init__(self, prefix: str, *, popularity_shards: int = 1) -> None:
        if "{" in prefix or "}" in prefix:
            raise ValueError("a Redis key prefix must not contain '{' or '}' (hash tags)")
        if popularity_shards < 1:
            raise ValueError("popularity_shards must be >= 1")
        self.prefix = prefix
        self.popularity_shards = popularity_shards

    def _user(self, name: str, user_id: str) -> str:
        return f"{self.prefix}{name}:{{u:{user_id}}}"

    def _item(self, name: str, item_id: str) -> str:
        return f"{self.prefix}{name}:{{i:{item_id}}}"

    def _global(self, name: str) -> str:
        return f"{self.prefix}{name}:{GLOBAL_TAG}"

    # --- per user ------------------------------------------------------------------------
    def recent(self, user_id: str) -> str:
        return self._user("recent", user_id)

    def history(self, user_id: str) -> str:
        return self._user("hist", user_id)

    def purchased(self, user_id: str) -> str:
        return self._user("bought", user_id)

    def user_vectors(self, user_id: str) -> str:
        """Hash: ``p`` profile, ``r`` rating parameters, ``f:<version>`` factors."""
        return self._user("uvec", user_id)

    def own_events(self, user_id: str) -> str:
        """List: items of the user's events the API accepted and no batch applied yet,
        newest first (short TTL; see :class:`core.ports.OwnEvents`)."""
        return self._user("own", user_id)

    def user_version(self, user_id: str) -> str:
        """String: the user's state version (INCR by every apply changing their state)."""
        return self._user("uver", user_id)

    # --- per item ------------------------------------------------------------------------
    def item_history(self, item_id: str) -> str:
        return self._item("ihist", item_id)

    def item_vectors(self, item_id: str) -> str:
        """Hash: ``r`` rating parameters."""
        return self._item("ivec", item_id)

    def covisit(self, item_id: str) -> str:
        """Sorted set of the items co-visited with ``item_id`` (scope ``co:<item>``)."""
        return self._item("co", item_id)

    def item_factors(self, version: str) -> str:
        """Hash item -> folded-in factors of model ``version`` (read whole)."""
        return f"{self.prefix}ifactors:{{v:{version}}}"

    # --- popularity ----------------------------------------------------------------------
    def popularity_keys(self, scope: str) -> list[str]:
        """The sorted sets a scope is kept in (one for ``co:<item>``, else every shard)."""
        if scope.startswith("co:"):
            return [self.covisit(scope[3:])]
        return [self._shard(scope, k) for k in range(self.popularity_shards)]

    def popularity_key(self, scope: str, item_id: str) -> str:
        """The sorted set of ``scope`` that holds ``item_id``."""
        if scope.startswith("co:"):
            return self.covisit(scope[3:])
        if self.popularity_shards == 1:
            return self._shard(scope, 0)
        return self._shard(scope, zlib.crc32(item_id.encode()) % self.popularity_shards)

    def _shard(self, scope: str, k: int) -> str:
        return f"{self.prefix}pop:{{p:{scope}:{k}}}"

    @staticmethod
    def reference(popularity_key: str) -> str:
        """The time a popularity set's scores are relative to (same slot as the set)."""
        return popularity_key + ":ref"

    # --- global --------------------------------------------------------------------------
    @property
    def meta(self) -> str:
        """Hash: ``pop_now`` (newest popularity time), ``last_event_ts``."""
        return self._global("meta")

    @property
    def counters(self) -> str:
        return self._global("counters")

    @property
    def blobs(self) -> str:
        return self._global("blobs")

    @property
    def rating_meta(self) -> str:
        return self._global("rating")

    @property
    def journal(self) -> str:
        """Hash: update id -> the groups of a cluster update not yet all applied."""
        return self._global("journal")

    def seen(self, bucket: int) -> str:
        return f"{self.prefix}seen:{GLOBAL_TAG}:{bucket}"

    def applied(self, group_key: str, update_id: str) -> str:
        """Marks ``update_id`` applied to the group of ``group_key`` (same slot)."""
        return f"{self.prefix}applied:{hash_tag(group_key)}:{update_id}"

    def shown(self, rec_id: str) -> str:
        return f"{self.prefix}shown:{rec_id}"


