"""Served lists, written to the state store off the request path.

A recommendation request queues what it showed; a background thread per process
writes the queue in one round trip per batch. A shopper's click comes seconds
later; feedback handled in the same process flushes the queue before it looks.
"""

from __future__ import annotations

import logging
import threading

from core.errors import TemporaryFailure
from core.ports import StateStore

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
    """

    def __init__(self, state: StateStore, ttl_s: int = IMPRESSION_TTL_S,
                 max_pending: int = 10_000) -> None:
        self.state = state
        self.ttl_s = ttl_s
        self.max_pending = max_pending
        self._pending: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self._thread: threading.Thread | None = None

    def add(self, rec_id: str, shown: dict[str, str]) -> None:
        """Queue one list; the background thread writes it shortly (at once once closed)."""
        with self._lock:
            if len(self._pending) >= self.max_pending:
                dropped = next(iter(self._pending))
                del self._pending[dropped]
                log.warning("impressions of %s dropped: %d lists waiting", dropped,
                            self.max_pending)
            self._pending[rec_id] = shown
            closed = self._closed
            if self._thread is None and not closed:  # the first request's: after forking
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="streamrec-impressions")
                self._thread.start()
        if closed:
            self._flush_logged()
        else:
            self._wake.set()

    def flush(self) -> None:
        """Write every queued list now (raises TemporaryFailure; they are queued again)."""
        with self._lock:
            batch, self._pending = self._pending, {}
        if not batch:
            return
        try:
            self.state.remember_impressions(batch, self.ttl_s)
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
        return True

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait()
            self._wake.clear()
            if not self._flush_logged() and not self._closed:
                self._wake.wait(1.0)  # Redis is down: retry on the next list or in 1 s
