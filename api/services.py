"""What the API needs from the outside, built by bootstrap and kept on the app."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from flask import current_app

from api.conditional import ConditionalRecs
from api.degraded import PopularFallback
from api.impressions import ImpressionWriter
from core.ports import AttemptCounter, EventPublisher, StateStore, UserStateReader, VectorIndex
from core.settings import Settings
from core.types import Item
from infra.accounts import AccountStore
from infra.attempts import MemoryAttemptCounter
from online_models.catalog import CatalogReplica
from online_models.serving.pipeline import Recommender

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
    #: Popular items for degraded answers, when the state store is unreachable.
    fallback: PopularFallback = field(init=False)

    def __post_init__(self) -> None:
        self.impressions = ImpressionWriter(self.state, self.settings.impression_ttl_s)
        self.fallback = PopularFallback(self.catalog, self.settings.degraded_refresh_s)
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


def conditional_recs(settings: Settings, state: UserStateReader, recommender: Recommender,
                     replica: CatalogReplica | None) -> ConditionalRecs:
    """The versions a recommendation list depends on, read from the parts that hold them."""
    rules = recommender.rules
    return ConditionalRecs(
        state, model_version=recommender.model_version,
        catalog_version=(lambda: replica.version) if replica is not None else (lambda: 0),
        popularity_epoch=recommender.popularity_epoch,
        config=[recommender.weights, recommender.variant_weights, recommender.assigner.variants,
                sorted(recommender.learned_variants), sorted(recommender.ranked_variants),
                list(recommender.names),
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
        recommender=bootstrap.build_recommender(settings, state, index, catalog),
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
