"""Conditional recommendation requests: a versioned ETag and a per-worker list cache.

Pages poll ``GET /api/recommendations`` (the storefront every 1.5 s) and the answer
rarely changes between two of a shopper's events. An answer depends on:

- the user's state version (:meth:`core.ports.UserStateReader.user_version`, moved by the
  same atomic update that applies the user's events): read per request, the one
  state-store round trip of an unchanged answer;
- the collaborative model's version and the catalog's version (in-process);
- the popularity epoch of the user (``PopularitySnapshot.epoch`` of the pipeline):
  global signals (trending, co-visitation, the online blender) change with everyone's
  activity, so a list is rebuilt once an epoch, ``STREAMREC_POPULARITY_REFRESH_S``;
- the variant and the request's parameters, and the ranking configuration.

Their digest is the response's ``ETag``. ``If-None-Match`` with the current tag gets
``304 Not Modified`` (no body, nothing recomputed); without it, an unchanged tag gets the
list this worker last served for the same request from a bounded LRU cache (same
``rec_id``, so clicks stay attributed to the list on screen); a changed tag gets a fresh
list and a new ``rec_id``.

Round trips: a request that has a tag to compare (``If-None-Match``, or a list of this
worker for the same request) reads the user's version first (one small read); a list
that is computed reads the user's state once, and the state carries the version of that
same read (:attr:`core.ports.UserState.version`), which tags the list. So a request with
nothing to compare costs one round trip, not two, and a list is never tagged with a
version older or newer than the state it was computed from. The other versions are read
(in-process) before the list is computed: a tag is never newer than its list.

>>> cache = RecCache(2)
>>> cache.put("a", CachedList("r1", b"{}")); cache.put("b", CachedList("r2", b"{}"))
>>> cache.get("a").rec_id
'r1'
>>> cache.put("c", CachedList("r3", b"{}"))  # "b" is the least recently used
>>> cache.get("b") is None, len(cache)
(True, 2)
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from core.ports import RecRequest, UserStateReader

__all__ = ["CACHE_CONTROL", "REQUEST_PARSED", "VERSIONS_READ", "CachedList", "ConditionalRecs",
           "RecCache", "Versions"]

#: Browsers keep the answer but revalidate it on every use; shared caches never keep it.
CACHE_CONTROL = "private, no-cache"
#: WSGI environ key: the :class:`Versions` the 304 fast path read for a request it let
#: through (its tag did not match), so the view does not read them again.
VERSIONS_READ = "streamrec.versions"
#: WSGI environ key: the request's :class:`core.ports.RecRequest` as the fast path parsed it.
REQUEST_PARSED = "streamrec.rec_request"


@dataclass(frozen=True, slots=True)
class Versions:
    """Everything a recommendation list depends on, besides the request itself."""

    user: int
    model: str
    catalog: int
    popularity_epoch: int
    variant: str


@dataclass(frozen=True, slots=True)
class CachedList:
    """A served list: its ``rec_id``, its JSON body as sent and its ETag."""

    rec_id: str
    body: bytes
    etag: str = ""


class RecCache:
    """The last served list of each request, least recently used dropped past ``size``
    (thread-safe)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._lists: OrderedDict[Hashable, CachedList] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._lists)

    def get(self, key: Hashable) -> CachedList | None:
        if not self._lists:  # no lock for the empty cache (size 0, a fresh worker)
            return None
        with self._lock:
            found = self._lists.get(key)
            if found is not None:
                self._lists.move_to_end(key)
            return found

    def put(self, key: Hashable, served: CachedList) -> None:
        if self.size <= 0:
            return
        with self._lock:
            self._lists[key] = served
            self._lists.move_to_end(key)
            while len(self._lists) > self.size:
                self._lists.popitem(last=False)


class ConditionalRecs:
    """Computes a request's ETag from the current versions; holds the worker's cache.

    Parameters
    ----------
    state
        Where the users' state versions are read.
    model_version
        The collaborative model version in use ("" without one).
    catalog_version
        The catalog version this worker's catalog and index have caught up with.
    popularity_epoch
        user id -> the user's popularity epoch.
    config
        The ranking configuration (blend weights, variants, rules): a new
        configuration makes new tags even for unchanged state.
    cache_size
        Lists kept by :attr:`cache` (0: none).
    """

    def __init__(self, state: UserStateReader, *, model_version: Callable[[], str],
                 catalog_version: Callable[[], int], popularity_epoch: Callable[[str], int],
                 config: object = None, cache_size: int = 10_000) -> None:
        self.state = state
        self.model_version = model_version
        self.catalog_version = catalog_version
        self.popularity_epoch = popularity_epoch
        # JSON, not repr: the same text in every worker (no set or hash order in it).
        self.config = json.dumps(config, sort_keys=True)
        self.cache = RecCache(cache_size)

    def versions(self, user_id: str, variant: str, user_version: int | None = None) -> Versions:
        """The current versions: with ``user_version`` None, the user's is read from the
        state store (one small read; TemporaryFailure when it is down), else it is taken
        as given (nothing read: the caller reads it with the state)."""
        if user_version is None:
            user_version = self.state.user_version(user_id)
        return Versions(user_version, self.model_version(), self.catalog_version(),
                        self.popularity_epoch(user_id), variant)

    def etag(self, request: RecRequest, versions: Versions) -> str:
        """The ETag (a strong validator, without its quotes) of ``request`` at ``versions``."""
        # The dataclasses' generated reprs: every field, the same text in every process
        # (dataclasses.astuple's deep copy took a third of a 304's time in the endpoint).
        key = repr((request, versions, self.config)).encode()
        return hashlib.blake2b(key, digest_size=12).hexdigest()
