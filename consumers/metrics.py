"""Prometheus metrics of the consumers (one registry per app, so tests can build many)."""

from __future__ import annotations

import time
from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from consumers.handlers import BatchResult, Record

__all__ = ["ConsumerMetrics"]

FRESHNESS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ConsumerMetrics:
    """Events by type, dead letters, batch time, freshness and per-partition lag."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.events = Counter(
            "streamrec_consumer_events", "Events applied, by type", ["event_type"],
            registry=self.registry,
        )
        self.duplicates = Counter(
            "streamrec_consumer_duplicate_events", "Events skipped as already applied",
            registry=self.registry,
        )
        self.dead_letters = Counter(
            "streamrec_consumer_dead_letters", "Records sent to the dead-letter topic",
            registry=self.registry,
        )
        self.batch_seconds = Histogram(
            "streamrec_consumer_batch_seconds", "Time to apply one batch",
            registry=self.registry,
        )
        self.freshness = Histogram(
            "streamrec_freshness_seconds",
            "Time from an event's produce (record timestamp) to its state being visible",
            buckets=FRESHNESS_BUCKETS, registry=self.registry,
        )
        self.lag = Gauge(
            "streamrec_consumer_lag_messages", "High-water mark minus next offset to read",
            ["topic", "partition"], registry=self.registry,
        )
        self.lag_seconds = Gauge(
            "streamrec_consumer_lag_seconds",
            "Event time of the newest record fetched minus that of the last one applied",
            ["topic", "partition"], registry=self.registry,
        )
        self.handler_errors = Counter(
            "streamrec_consumer_handler_errors", "Batches that failed and will be redelivered",
            registry=self.registry,
        )

    def observe_batch(self, records: Sequence[Record], result: BatchResult, seconds: float) -> None:
        now_ms = time.time() * 1000
        for name, value in result.update.counters.items():
            if name.startswith("events.") and name.count(".") == 1:
                kind = name.split(".", 1)[1]
                if kind not in {"total", "duplicate", "dead_letter", "unknown_item"}:
                    self.events.labels(kind).inc(value)
        self.duplicates.inc(result.duplicates)
        self.dead_letters.inc(result.dead_letters)
        self.batch_seconds.observe(seconds)
        for record in records:
            self.freshness.observe(max(0.0, (now_ms - record.timestamp_ms) / 1000))

    def observe_lag(self, topic: str, partition: int, lag: int) -> None:
        self.lag.labels(topic, str(partition)).set(lag)

    def observe_lag_seconds(self, topic: str, partition: int, seconds: float) -> None:
        self.lag_seconds.labels(topic, str(partition)).set(max(0.0, seconds))

    def observe_handler_error(self) -> None:
        self.handler_errors.inc()
