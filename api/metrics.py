"""Prometheus metrics of the API, exposed at ``GET /metrics``.

Each app gets its own :class:`ApiMetrics` (own ``CollectorRegistry``), so tests can
build many apps. Under gunicorn with several workers each worker counts on its own;
set ``PROMETHEUS_MULTIPROC_DIR`` (an empty, writable folder, cleared before start) and
prometheus_client keeps the values in files there, and ``/metrics`` sums every
worker's files (``MultiProcessCollector``), whichever worker answers the scrape.

Metrics (all names start with ``streamrec_``):

- ``api_request_duration_seconds{endpoint,method}`` histogram: latency per URL rule
  (``/api/items/<item_id>``, never the raw path, so the label set stays bounded).
- ``api_requests_total{endpoint,method,status}``: responses by status code.
- ``recommendations_served_total{endpoint,variant}``: recommendation lists served.
- ``recommended_items_total{source}``: items served, once per source that scored
  them (the source mix); ``items_served_total{endpoint,variant}`` counts each item once.
- ``rec_feedback_total{variant,event_type}``: clicks, add-to-carts and purchases that
  carry a ``rec_id`` or ``variant`` (POST /api/events). CTR of a variant =
  ``rate(rec_feedback_total{event_type="click"})`` / ``rate(items_served_total)``,
  conversion the same with ``purchase``.
- ``rec_cache_total{result}``: recommendation requests by how they were answered:
  ``not_modified`` (304 to a current ``If-None-Match``), ``hit`` (the worker's cached list
  for unchanged versions) or ``miss`` (computed); hit ratio = (not_modified + hit) / all.
- ``model_info{version,created_at}`` = 1 and ``model_trained_timestamp_seconds``:
  the version the ``latest`` pointer names (read at scrape time; absent until a
  model is trained).

Every label value comes from a bounded set, never from what a client sends: a
series is never dropped, so each new client-chosen value would grow ``/metrics`` for
good. Variants are the configured ones (``Settings.variants``; any other ->
``other``), methods the standard HTTP ones (else ``other``), endpoints URL rules.
"""

from __future__ import annotations

import collections
import hmac
import time
from collections.abc import Iterable, Iterator, Sequence
from itertools import chain
from pathlib import Path
from typing import Any

from flask import Flask, Response, g, request
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from core.errors import Unauthorized
from core.events import InteractionEvent
from infra.registry import ModelRegistry

__all__ = ["DEFAULT_VARIANT", "FEEDBACK_TYPES", "OTHER", "ApiMetrics", "ModelInfoCollector",
           "api_metrics", "init_metrics", "observe_events", "observe_recommendation"]

#: Variant label of recommendations and feedback that name none.
DEFAULT_VARIANT = "default"
#: Label of any value outside a label's configured set (an unknown variant or method).
OTHER = "other"
#: HTTP methods counted under their own name.
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: Event types that count as feedback on a recommendation.
FEEDBACK_TYPES = frozenset({"click", "add_to_cart", "purchase"})
#: Request latency buckets (seconds). Fine below 10 ms, where the API's latency bars
#: (p50 <= 3 ms, p99 <= 10 ms) are read from this histogram: a quantile is interpolated
#: inside its bucket, so with bounds only at 2.5 and 5 ms a true p50 of 2.8 ms could read
#: as anything up to 5 ms. A bound AT each bar makes "within the bar" exact.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0015, 0.002, 0.0025, 0.003, 0.004, 0.005, 0.0075, 0.01,
                   0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_EXTENSION = "streamrec.metrics"


class ModelInfoCollector(Collector):
    """Reads the registry's ``latest`` manifest on each scrape (works in every worker)."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        latest = self.registry.latest()
        info = GaugeMetricFamily("streamrec_model_info", "Model version in use (value 1)",
                                 labels=["version", "created_at"])
        trained = GaugeMetricFamily("streamrec_model_trained_timestamp_seconds",
                                    "When the model version in use was trained")
        if latest is not None:
            info.add_metric([latest.version, latest.created_at or ""], 1.0)
            if latest.created_ts is not None:
                trained.add_metric([], latest.created_ts)
        yield info
        yield trained


class _Children:
    """One metric's labelled children, kept by their label values.

    ``labels()`` converts, checks and locks on every call (~2 us); a recommendation
    request counts under ten labels. The metric keeps its children anyway, so keeping
    them here too holds nothing more.
    """

    __slots__ = ("_found", "_metric")

    def __init__(self, metric: Any) -> None:
        self._metric = metric
        self._found: dict[tuple[object, ...], Any] = {}

    def __call__(self, *values: object) -> Any:
        child = self._found.get(values)
        if child is None:  # prometheus_client turns each value into a str itself
            child = self._found[values] = self._metric.labels(*values)
        return child


class ApiMetrics:
    """The API's metrics on one registry.

    Parameters
    ----------
    artifacts_dir
        Where trained versions live (``settings.artifacts_dir``), for ``model_info``.
    multiproc_dir
        ``PROMETHEUS_MULTIPROC_DIR`` when gunicorn runs several workers; empty: this
        process's values only.
    variants
        The configured A/B variants: the only ``variant`` label values besides
        ``default`` and ``other``.
    """

    def __init__(self, artifacts_dir: Path | None = None, multiproc_dir: str = "",
                 variants: Iterable[str] = ()) -> None:
        self.variants = frozenset(variants) | {DEFAULT_VARIANT}
        self.registry = CollectorRegistry()
        self.multiproc_dir = multiproc_dir
        self.model_info = ModelInfoCollector(ModelRegistry(artifacts_dir or Path("var/artifacts")))
        r = self.registry
        self.latency = Histogram(
            "streamrec_api_request_duration_seconds", "API latency per endpoint (URL rule)",
            ["endpoint", "method"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.requests = Counter(
            "streamrec_api_requests", "API responses by endpoint and status",
            ["endpoint", "method", "status"], registry=r,
        )
        self.recommendations = Counter(
            "streamrec_recommendations_served", "Recommendation lists served",
            ["endpoint", "variant"], registry=r,
        )
        self.items_served = Counter(
            "streamrec_items_served", "Recommended items served (each once)",
            ["endpoint", "variant"], registry=r,
        )
        self.source_items = Counter(
            "streamrec_recommended_items", "Recommended items, once per source that scored them",
            ["source"], registry=r,
        )
        self.feedback = Counter(
            "streamrec_rec_feedback", "Clicks/carts/purchases carrying a rec_id or variant",
            ["variant", "event_type"], registry=r,
        )
        self.lead_source_items = Counter(
            "streamrec_items_served_by_source",
            "Recommended items served, by the source that contributed most to each",
            ["source"], registry=r,
        )
        self.source_feedback = Counter(
            "streamrec_rec_feedback_by_source",
            "Clicks/carts/purchases of a recommended item, by the item's leading source",
            ["source", "event_type"], registry=r,
        )
        self.rec_cache = Counter(
            "streamrec_rec_cache", "Recommendation requests: not_modified (304), hit, miss",
            ["result"], registry=r,
        )
        self.registry.register(self.model_info)
        self._latency, self._requests = _Children(self.latency), _Children(self.requests)
        self._recommendations = _Children(self.recommendations)
        self._items_served = _Children(self.items_served)
        self._source_items = _Children(self.source_items)
        self._lead_source_items = _Children(self.lead_source_items)
        self._rec_cache = _Children(self.rec_cache)

    # --- observations ----------------------------------------------------------------------
    def variant_label(self, variant: str | None) -> str:
        """``variant`` when configured, ``default`` when none, else ``other``."""
        if not variant:
            return DEFAULT_VARIANT
        return variant if variant in self.variants else OTHER

    def observe_request(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        method = method if method in HTTP_METHODS else OTHER
        self._latency(endpoint, method).observe(seconds)
        self._requests(endpoint, method, status).inc()

    def observe_recommendation(
        self, endpoint: str, item_sources: Sequence[Iterable[str]], variant: str | None = None
    ) -> None:
        """One list served: ``item_sources`` holds, per item, the sources that scored it."""
        label = self.variant_label(variant)
        self._recommendations(endpoint, label).inc()
        if item_sources:
            self._items_served(endpoint, label).inc(len(item_sources))
        # One increment per label, not per item: a multiprocess counter writes a file each time.
        for source, count in collections.Counter(chain.from_iterable(item_sources)).items():
            self._source_items(source).inc(count)

    def observe_rec_cache(self, result: str) -> None:
        """One recommendation request answered ``not_modified``, from the cache (``hit``)
        or computed (``miss``)."""
        self._rec_cache(result).inc()

    def observe_lead_sources(self, lead_sources: Iterable[str]) -> None:
        for source, count in collections.Counter(lead_sources).items():
            self._lead_source_items(source).inc(count)

    def observe_attributed(self, source: str, event_type: str) -> None:
        self.source_feedback.labels(source, event_type).inc()

    def observe_events(self, events: Iterable[InteractionEvent]) -> None:
        for event in events:
            if event.event_type in FEEDBACK_TYPES and (event.rec_id or event.variant):
                self.feedback.labels(self.variant_label(event.variant), event.event_type).inc()

    # --- exposition --------------------------------------------------------------------------
    def exposition_registry(self) -> CollectorRegistry:
        """This process's registry, or every worker's values in multiprocess mode."""
        if not self.multiproc_dir:
            return self.registry
        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=self.multiproc_dir)
        merged.register(self.model_info)
        return merged

    def exposition(self) -> bytes:
        return generate_latest(self.exposition_registry())


# --- Flask wiring ------------------------------------------------------------------------------
def api_metrics(app: Flask | None = None) -> ApiMetrics:
    """The metrics of ``app`` (default: the current app)."""
    from flask import current_app

    found: ApiMetrics = (app or current_app).extensions[_EXTENSION]
    return found


def _endpoint_label() -> str:
    # The URL rule, not the path: /api/items/<item_id> is one label for every item.
    rule = request.url_rule
    return rule.rule if rule is not None else "<unmatched>"


def init_metrics(app: Flask, metrics: ApiMetrics, token: str = "") -> None:
    """Keep ``metrics`` on ``app``, time every request and serve ``GET /metrics``.

    With ``token``, ``/metrics`` answers only ``Authorization: Bearer <token>`` (401
    otherwise), compared in constant time.
    """
    app.extensions[_EXTENSION] = metrics

    @app.before_request
    def _start_timer() -> None:
        g.streamrec_t0 = time.perf_counter()

    @app.after_request
    def _observe(response: Response) -> Response:
        t0 = g.pop("streamrec_t0", None)
        if t0 is not None:
            metrics.observe_request(_endpoint_label(), request.method, response.status_code,
                                    time.perf_counter() - t0)
        return response

    def metrics_endpoint() -> Response:
        if token and not hmac.compare_digest(
                request.headers.get("Authorization", "").encode(), f"Bearer {token}".encode()):
            raise Unauthorized("/metrics needs 'Authorization: Bearer <metrics token>'")
        return Response(metrics.exposition(), content_type=CONTENT_TYPE_LATEST)

    app.add_url_rule("/metrics", "metrics", metrics_endpoint, methods=["GET"])


def observe_recommendation(rec: Any, variant: str | None = None) -> None:
    """Count a served recommendation (a ``Recommendation`` of the pipeline) on the current app."""
    variant = variant or getattr(rec, "variant", None)
    api_metrics().observe_recommendation(
        _endpoint_label(), [item.sources for item in rec.items], variant
    )


def observe_events(events: Iterable[InteractionEvent]) -> None:
    """Count recommendation feedback among accepted events on the current app."""
    api_metrics().observe_events(events)
