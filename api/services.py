"""What the API needs from the outside, built by bootstrap and kept on the app."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from flask import current_app

from api.conditional import ConditionalRecs
from api.impressions import ImpressionWriter
from api.popularity import PopularitySnapshot
from api.recommender import Recommender, Rules
from core.ports import AttemptCounter, EventPublisher, StateStore, VectorIndex
from core.settings import Settings
from core.types import Item
from infra.accounts import AccountStore
from infra.attempts import MemoryAttemptCounter
from online_models.blender import BLOB, BlenderStateError, OnlineBlender
from online_models.catalog import CatalogReplica

__all__ = ["ApiServices", "build_services", "conditional_recs", "services"]

log = logging.getLogger(__name__)


@dataclass
class ApiServices:
    settings: Settings
    state: StateStore
    index: VectorIndex
    catalog: Mapping[str, Item]
    publisher: EventPublisher
    recommender: Recommender
    #: Storefront accounts (users, ratings, carts, orders); None: no storefront accounts.
    accounts: AccountStore | None = None
    health_checks: dict[str, Callable[[], bool]] = field(default_factory=dict)
    #: Parts that start after the API does (the consumers): False while starting.
    readiness_checks: dict[str, Callable[[], bool]] = field(default_factory=dict)
    #: Keeps ``catalog`` and ``index`` in step with catalog upserts (None: a fixed catalog).
    replica: CatalogReplica | None = None
    closers: list[Callable[[], None]] = field(default_factory=list)
    #: Log-in attempts, shared by every worker (Redis); in memory for one process.
    attempts: AttemptCounter = field(default_factory=MemoryAttemptCounter)
    #: Served lists on their way to the state store (for attribution and the blender).
    impressions: ImpressionWriter = field(init=False)
    #: ETags of recommendation lists and the worker's cache of served lists.
    conditional: ConditionalRecs = field(init=False)

    def __post_init__(self) -> None:
        self.impressions = ImpressionWriter(self.state, self.settings.impression_ttl_s)
        self.conditional = conditional_recs(self.settings, self.state, self.recommender,
                                            self.replica)

    def close(self) -> None:
        self.impressions.close()
        for close in reversed(self.closers):
            close()
        self.closers.clear()


def services() -> ApiServices:
    """The services of the current app."""
    found: ApiServices = current_app.extensions["streamrec"]
    return found


class BlenderCache:
    """The online blender's latest model from the state store, re-read every few seconds."""

    def __init__(self, state: StateStore, max_age_s: float = 5.0) -> None:
        self.state = state
        self.max_age_s = max_age_s
        self._read_at = -float("inf")
        self._model: Any = None
        self._blender = OnlineBlender()

    def current(self) -> Any:
        now = time.monotonic()
        if now - self._read_at >= self.max_age_s:
            self._read_at = now
            blob = self.state.get_blob(BLOB)
            if blob is not None:
                try:
                    self._model = self._blender.loads(blob)
                except BlenderStateError as exc:  # never unpickled: refused, and said so
                    log.error("stored blender model refused: %s", exc)
        return self._model


def conditional_recs(settings: Settings, state: StateStore, recommender: Recommender,
                     replica: CatalogReplica | None) -> ConditionalRecs:
    """The versions a recommendation list depends on, read from the parts that hold them."""
    models = recommender.models

    def model_version() -> str:
        foldin = models()[0] if models is not None else None
        return foldin.version if foldin is not None else ""

    rules = recommender.rules
    return ConditionalRecs(
        state, model_version=model_version,
        catalog_version=(lambda: replica.version) if replica is not None else (lambda: 0),
        popularity_epoch=recommender.popularity.epoch,
        config=[recommender.weights, recommender.variant_weights, recommender.assigner.variants,
                sorted(recommender.learned_variants),
                # sorted: a set's order differs between processes (hash seeds), tags must not
                [rules.exclude_purchased, sorted(rules.excluded_categories),
                 rules.max_per_category]],
        cache_size=settings.rec_cache_size)


def build_services(settings: Settings) -> ApiServices:
    """Everything the API needs, wired from ``settings`` by infra's builders."""
    from infra import bootstrap

    catalog = bootstrap.ensure_catalog(settings)
    index, _ = bootstrap.build_index(settings, catalog)
    replica = bootstrap.build_replica(settings, catalog, index)
    state = bootstrap.build_state_store(settings)
    publisher = bootstrap.build_publisher(settings)
    accounts = AccountStore.from_settings(settings)
    accounts.create_schema()
    built = ApiServices(
        settings=settings,
        state=state,
        index=index,
        catalog=catalog,
        publisher=publisher,
        recommender=Recommender(
            state, index, catalog, settings.blend_weights, settings.recent_items_max,
            models=bootstrap.build_model_provider(settings, state).current,
            variants=settings.variants, variant_weights=settings.variant_weights,
            rules=Rules(
                exclude_purchased=settings.exclude_purchased,
                excluded_categories=frozenset(settings.excluded_categories),
                max_per_category=settings.max_per_category,
            ),
            blender=BlenderCache(state).current,
            learned_variants=settings.learned_variants,
            popularity=PopularitySnapshot(state, catalog, settings.popularity_refresh_s,
                                          settings.popularity_snapshot_size),
        ),
        accounts=accounts,
        health_checks={
            "redis": state.ping,
            "kafka": lambda: bootstrap.kafka_reachable(settings.kafka_bootstrap),
        },
        replica=replica,
        readiness_checks={"consumers": lambda: bootstrap.consumers_joined(settings)},
        attempts=bootstrap.build_attempt_counter(settings),
    )
    built.closers.append(publisher.close)
    built.closers.append(accounts.close)
    return built
