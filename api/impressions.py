"""Served lists, written to the state store off the request path.

A recommendation request queues what it showed; a background thread per process
writes the queue in one round trip per batch, every ``interval_s`` or as soon as
``batch_size`` lists wait. Requests never wake the thread one by one: under load,
a wake-up per request cost more than the write (GIL hand-offs between the
request threads and the writer). A shopper's click comes seconds later; feedback
handled in the same process flushes the queue before it looks.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from core.errors import TemporaryFailure
from core.ports import BlobStore
from online_models.blender import Shown, encode_shown

__all__ = ["IMPRESSION_TTL_S", "ImpressionWriter"]

log = logging.getLogger(__name__)

#: How long a served list can earn attributed feedback.
IMPRESSION_TTL_S = 24 * 3600


class ImpressionWriter:
    """Writes served lists to the state store in the background, in batches.

    Parameters
    ----------
    state
        Where impressions are kept.
    ttl_s
        How long each is kept.
    max_pending
        Lists queued at most while the store is unreachable; older ones are dropped
        (attribution is best effort, the recommendations are not).
    interval_s
        How long a list waits at most before the thread writes it.
    batch_size
        Lists that wake the thread before ``interval_s``.
    """

    def __init__(self, state: BlobStore, ttl_s: int = IMPRESSION_TTL_S,
                 max_pending: int = 10_000, interval_s: float = 0.05,
                 batch_size: int = 200) -> None:
        if interval_s <= 0 or batch_size < 1:
            raise ValueError("interval_s must be > 0 and batch_size >= 1")
        self.state = state
        self.ttl_s = ttl_s
        self.max_pending = max_pending
        self.interval_s = interval_s
        self.batch_size = batch_size
        self._pending: dict[str, tuple[Sequence[tuple[str, Shown]], int]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None

    def add(self, rec_id: str, shown: Sequence[tuple[str, Shown]],
            ttl_s: int | None = None) -> None:
        """Queue one list (item, what was shown), best first, kept ``ttl_s`` (default:
        the writer's); the background thread encodes and writes it shortly (at once
        once closed)."""
        with self._lock:
            if len(self._pending) >= self.max_pending:
                dropped = next(iter(self._pending))
                del self._pending[dropped]
                log.warning("impressions of %s dropped: %d lists waiting", dropped,
                            self.max_pending)
            self._pending[rec_id] = (shown, self.ttl_s if ttl_s is None else ttl_s)
            full = len(self._pending) >= self.batch_size
            closed = self._closed
            if self._thread is None and not closed:  # the first request's: after forking
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="streamrec-impressions")
                self._thread.start()
        if closed:
            self._flush_logged()
        elif full:
            self._wake.set()

    def flush(self) -> None:
        """Write every queued list now (raises TemporaryFailure; they are queued again)."""
        with self._lock:
            batch, self._pending = self._pending, {}
        if not batch:
            return
        by_ttl: dict[int, dict[str, str]] = {}
        for rec_id, (items, ttl_s) in batch.items():
            if items:
                by_ttl.setdefault(ttl_s, {})[rec_id] = encode_shown(items)
        try:
            for ttl_s, lists in by_ttl.items():
                self.state.remember_impressions(lists, ttl_s)
        except TemporaryFailure:
            with self._lock:
                self._pending = {**batch, **self._pending}
                while len(self._pending) > self.max_pending:
                    del self._pending[next(iter(self._pending))]
            raise

    def close(self) -> None:
        """Stop the thread after a last write."""
        with self._lock:
            self._closed = True
            thread = self._thread
        self._wake.set()
        if thread is not None:
            thread.join(timeout=10)
        self._flush_logged()

    def _flush_logged(self) -> bool:
        try:
            self.flush()
        except TemporaryFailure as exc:  # kept queued
            log.warning("impressions not kept yet: %s", exc)
            return False
        except Exception:  # a bug must not end the thread: later lists still get written
            log.exception("impressions of a batch lost")
        return True

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(self.interval_s)
            self._wake.clear()
            if not self._flush_logged() and not self._closed:
                self._wake.wait(1.0)  # Redis is down: retry in 1 s (or on a full batch)
