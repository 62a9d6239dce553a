"""Live numbers for the dashboard: broker lag, the consumers' and the API's metrics.

The browser polls one JSON document and turns the cumulative counters into rates
between two polls, so the server keeps no history.
"""

from __future__ import annotations

import asyncio
import socket
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from core.errors import StreamrecError
from infra.kafka import PartitionLag, partition_lag

__all__ = ["LagReader", "consumer_targets", "read_consumers", "summarize_api", "summarize_samples"]

SCRAPE_TIMEOUT_S = 1.5


def consumer_targets(urls: str) -> list[str]:
    """Expand comma-separated metrics URLs: a host name becomes every address it has.

    ``docker compose up --scale consumer=3`` gives the service name three A records,
    so ``http://consumer:9100/metrics`` reads all three replicas.
    """
    targets: list[str] = []
    for url in filter(None, (u.strip() for u in urls.split(","))):
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port or 80
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            addresses = sorted({str(info[4][0]) for info in infos})
        except OSError:
            addresses = []
        if not addresses:
            targets.append(url)  # reported as down by the scrape
            continue
        for address in addresses:
            netloc = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
            targets.append(urlunsplit(parts._replace(netloc=netloc)))
    return targets


def _scrape(url: str) -> list[Sample]:
    with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT_S) as response:
        text = response.read().decode()
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def summarize_samples(samples: Iterable[Sample]) -> dict[str, Any]:
    """The consumers' cumulative numbers (summed over replicas) from their samples."""
    out: dict[str, Any] = {
        "events": {}, "dead_letters": 0.0, "duplicates": 0.0, "handler_errors": 0.0,
        "freshness": {"count": 0.0, "sum": 0.0, "buckets": {}}, "lag": {},
    }
    for s in samples:
        name, labels, value = s.name, s.labels, s.value
        if name == "streamrec_consumer_events_total":
            kind = labels.get("event_type", "?")
            out["events"][kind] = out["events"].get(kind, 0.0) + value
        elif name == "streamrec_consumer_dead_letters_total":
            out["dead_letters"] += value
        elif name == "streamrec_consumer_duplicate_events_total":
            out["duplicates"] += value
        elif name == "streamrec_consumer_handler_errors_total":
            out["handler_errors"] += value
        elif name == "streamrec_freshness_seconds_count":
            out["freshness"]["count"] += value
        elif name == "streamrec_freshness_seconds_sum":
            out["freshness"]["sum"] += value
        elif name == "streamrec_freshness_seconds_bucket":
            le = labels.get("le", "+Inf")
            out["freshness"]["buckets"][le] = out["freshness"]["buckets"].get(le, 0.0) + value
        elif name == "streamrec_consumer_lag_messages":
            key = f"{labels.get('topic', '?')}/{labels.get('partition', '?')}"
            out["lag"][key] = out["lag"].get(key, 0.0) + value
    return out


def read_consumers(urls: str) -> dict[str, Any]:
    """Scrape every consumer replica; ``targets`` says which answered."""
    targets = consumer_targets(urls)
    samples: list[Sample] = []
    status: list[dict[str, Any]] = []
    for target in targets:
        try:
            samples.extend(_scrape(target))
            status.append({"url": target, "up": True})
        except (OSError, ValueError) as exc:
            status.append({"url": target, "up": False, "error": f"{type(exc).__name__}: {exc}"})
    return {"targets": status, **summarize_samples(samples)}


def summarize_api(registry: Collector) -> dict[str, Any]:
    """The API's cumulative numbers: requests, 5xx, latency, source mix and variants."""
    requests: dict[str, float] = {}
    latency: dict[str, dict[str, float]] = {}
    errors = 0.0
    sources: dict[str, float] = {}
    variants: dict[str, dict[str, float]] = {}
    model: dict[str, Any] | None = None
    rec_cache = {"not_modified": 0.0, "hit": 0.0, "miss": 0.0}

    def variant(name: str) -> dict[str, float]:
        return variants.setdefault(name, {"served": 0.0, "items": 0.0, "click": 0.0,
                                          "add_to_cart": 0.0, "purchase": 0.0})

    for family in registry.collect():
        for s in family.samples:
            labels = s.labels
            if s.name == "streamrec_api_requests_total":
                endpoint = labels["endpoint"]
                requests[endpoint] = requests.get(endpoint, 0.0) + s.value
                if labels["status"].startswith("5"):
                    errors += s.value
            elif s.name in ("streamrec_api_request_duration_seconds_sum",
                            "streamrec_api_request_duration_seconds_count"):
                slot = latency.setdefault(labels["endpoint"], {"sum": 0.0, "count": 0.0})
                slot["sum" if s.name.endswith("_sum") else "count"] += s.value
            elif s.name == "streamrec_recommended_items_total":
                sources[labels["source"]] = sources.get(labels["source"], 0.0) + s.value
            elif s.name == "streamrec_recommendations_served_total":
                variant(labels["variant"])["served"] += s.value
            elif s.name == "streamrec_items_served_total":
                variant(labels["variant"])["items"] += s.value
            elif s.name == "streamrec_rec_feedback_total":
                variant(labels["variant"])[labels["event_type"]] += s.value
            elif s.name == "streamrec_rec_cache_total":
                result = labels["result"]
                rec_cache[result] = rec_cache.get(result, 0.0) + s.value
            elif s.name == "streamrec_model_info":
                model = {"version": labels["version"], "created_at": labels["created_at"]}
    for v in variants.values():
        v["ctr"] = v["click"] / v["items"] if v["items"] else 0.0
        v["conversion"] = v["purchase"] / v["items"] if v["items"] else 0.0
    return {"requests": requests, "errors_5xx": errors, "latency": latency,
            "sources": sources, "variants": variants, "model": model, "rec_cache": rec_cache}


@dataclass
class LagReader:
    """Per-partition lag of the consumer group, read from the broker, cached briefly.

    ``read`` defaults to :func:`infra.kafka.partition_lag` (committed offset vs the
    high-water mark); tests may pass another coroutine function of the same shape.
    """

    bootstrap: str
    group: str
    topic: str
    cache_s: float = 2.0
    timeout_s: float = 5.0
    read: Callable[..., Any] = partition_lag

    def __post_init__(self) -> None:
        self._cached: tuple[float, dict[str, Any]] | None = None

    def __call__(self) -> dict[str, Any]:
        now = time.monotonic()
        if self._cached is not None and now - self._cached[0] < self.cache_s:
            return self._cached[1]
        result = self._read()
        self._cached = (now, result)
        return result

    def _read(self) -> dict[str, Any]:
        base: dict[str, Any] = {"topic": self.topic, "group": self.group, "partitions": [],
                                "total": None, "error": None}
        if not self.bootstrap:
            return {**base, "error": "no broker configured (STREAMREC_KAFKA_BOOTSTRAP)"}
        try:
            rows: list[PartitionLag] = asyncio.run(
                self.read(self.bootstrap, self.group, self.topic, timeout_s=self.timeout_s))
        except StreamrecError as exc:
            return {**base, "error": exc.message}
        return {**base, "total": sum(r.lag for r in rows), "partitions": [
            {"partition": r.partition, "committed": r.committed, "highwater": r.highwater,
             "lag": r.lag} for r in rows]}
