"""The one place that turns settings into wired objects.

Entry points (the CLI, gunicorn, tests) call these builders; nothing else
constructs Redis clients, Kafka producers or SQL engines.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from aiokafka import AIOKafkaClient

from core.errors import ArtifactIntegrityError, DataNotFound, ServiceUnavailable
from core.events import parse_interaction
from core.ports import StateStore, VectorIndex, VectorTables
from core.scoring import Interactions
from core.settings import Settings
from core.types import Item
from index.factory import build_vector_index, load_vector_index
from infra.attempts import MemoryAttemptCounter, RedisAttemptCounter
from infra.catalog_log import RedisCatalogLog
from infra.consumer_group import group_members
from infra.embedded import EmbeddedKafka, EmbeddedRedis, run_sync
from infra.kafka import KafkaEventPublisher, ensure_topics
from infra.models import ModelProvider
from infra.redis_store import RedisStateStore, redis_client
from infra.sql import SqlStore
from offline.catalog import load_catalog
from offline.content import ContentEmbedder
from offline.datasets import Dataset
from online_models.blender import BlenderCache, OnlineBlender
from online_models.catalog import CatalogReplica, CategoryLookup
from online_models.processor import StreamProcessor, implicit_weight
from online_models.profile import ContentProfile
from online_models.rating_mf import OnlineRatingMF
from online_models.serving.filters import Rules
from online_models.serving.pipeline import Recommender
from online_models.serving.popularity import PopularitySnapshot
from online_models.serving.registry import SOURCES, SourceDeps, build_sources

__all__ = [
    "EmbeddedStack",
    "archive_dataset",
    "build_attempt_counter",
    "build_catalog_log",
    "build_index",
    "build_model_provider",
    "build_processor",
    "build_publisher",
    "build_replica",
    "build_sql_store",
    "build_state_store",
    "clear_runtime",
    "consumers_joined",
    "ensure_catalog",
    "ensure_kafka_topics",
    "ensure_trained",
    "kafka_reachable",
    "start_embedded",
    "with_running_services",
    "write_runtime",
]

log = logging.getLogger(__name__)


# --- embedded services ---------------------------------------------------------------------
@dataclass
class EmbeddedStack:
    """Embedded services started for settings that name none; stop() ends them all."""

    settings: Settings
    servers: list[Any] = field(default_factory=list)

    def stop(self) -> None:
        for server in reversed(self.servers):
            server.stop()
        self.servers.clear()


def start_embedded(
    settings: Settings, log_dir: Path | None = None, *, persist_redis: bool = False
) -> EmbeddedStack:
    """Start Tansu and/or Redis where settings name no service; fill in SQLite.

    ``persist_redis`` snapshots the embedded Redis into ``state_dir/redis`` (and
    restores it on the next start). Returns the stack, whose ``settings`` carry the
    real addresses.
    """
    log_dir = log_dir or settings.state_dir / "logs"
    stack = EmbeddedStack(settings)
    try:
        kafka = redis_url = None
        if settings.uses_embedded_kafka:
            server = EmbeddedKafka(log_dir=log_dir).start()
            stack.servers.append(server)
            kafka = server.bootstrap
            log.info("embedded Kafka (Tansu) at %s", kafka)
        if settings.uses_embedded_redis:
            snapshots = settings.state_dir / "redis" if persist_redis else None
            if snapshots is not None:
                snapshots.mkdir(parents=True, exist_ok=True)
            rserver = EmbeddedRedis(log_dir=log_dir, snapshot_dir=snapshots,
                                    maxmemory=settings.embedded_redis_maxmemory).start()
            stack.servers.append(rserver)
            redis_url = rserver.url
            log.info("embedded Redis at %s", redis_url)
        database_url = settings.database_url or settings.sqlite_url
        stack.settings = settings.with_services(
            kafka_bootstrap=kafka, redis_url=redis_url, database_url=database_url
        )
    except BaseException:
        stack.stop()
        raise
    return stack


def _runtime_file(settings: Settings) -> Path:
    return settings.state_dir / "runtime.json"


def write_runtime(settings: Settings) -> Path:
    """Record where a running demo's services are, for other commands on this machine."""
    path = _runtime_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({
        "pid": os.getpid(),
        "kafka_bootstrap": settings.kafka_bootstrap,
        "redis_url": settings.redis_url,
        "database_url": settings.database_url,
        "api_url": f"http://{settings.api_host}:{settings.api_port}",
    }))
    tmp.replace(path)
    return path


def clear_runtime(settings: Settings) -> None:
    _runtime_file(settings).unlink(missing_ok=True)


def with_running_services(settings: Settings) -> Settings:
    """Fill service addresses the settings leave empty from a demo running here."""
    path = _runtime_file(settings)
    if not path.exists():
        return settings
    try:
        runtime = json.loads(path.read_text())
        os.kill(int(runtime["pid"]), 0)  # is that demo still alive?
    except (OSError, ValueError, KeyError):
        return settings
    return settings.with_services(
        kafka_bootstrap=settings.kafka_bootstrap or runtime.get("kafka_bootstrap"),
        redis_url=settings.redis_url or runtime.get("redis_url"),
        database_url=settings.database_url or runtime.get("database_url"),
    )


def ensure_kafka_topics(settings: Settings) -> None:
    """Create the topics with their partitions (existing ones are left as they are)."""
    ensure_topics(settings.kafka_bootstrap, {
        settings.interactions_topic: settings.topic_partitions,
        settings.catalog_topic: settings.topic_partitions,
        settings.dead_letter_topic: 1,
    })


def kafka_reachable(bootstrap: str, timeout_s: float = 2.0) -> bool:
    """True when a broker answers a metadata request."""

    async def metadata() -> None:
        client = AIOKafkaClient(
            bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000)
        )
        try:
            await asyncio.wait_for(client.bootstrap(), timeout_s)
        finally:
            await client.close()

    try:
        run_sync(metadata())
    except Exception:
        return False
    return True


def consumers_joined(settings: Settings) -> bool:
    """True once the state consumers' group has members with partitions (broker's view)."""
    return group_members(settings.kafka_bootstrap, settings.consumer_group) > 0


# --- catalog and index --------------------------------------------------------------------
def _database_url(settings: Settings) -> str:
    if not settings.database_url:
        settings.state_dir.mkdir(parents=True, exist_ok=True)
    return settings.database_url or settings.sqlite_url


def build_sql_store(settings: Settings) -> SqlStore:
    """The SQL store (catalog, events archive), its schema created if missing."""
    store = SqlStore(_database_url(settings))
    store.create_schema()
    return store


def ensure_catalog(settings: Settings) -> dict[str, Item]:
    """The catalog from the SQL store, loading the shipped catalog the first time."""
    store = build_sql_store(settings)
    try:
        items = store.products()
        if not items:
            items = load_catalog(settings.data_dir)
            store.upsert_products(items)
            log.info("loaded %d products from %s", len(items), settings.data_dir)
        return {item.item_id: item for item in items}
    finally:
        store.close()


def _catalog_key(catalog: dict[str, Item], dim: int) -> str:
    digest = hashlib.sha256(str(dim).encode())
    for item_id in sorted(catalog):
        digest.update(f"{item_id}\t{catalog[item_id].text}\n".encode())
    return digest.hexdigest()[:16]


def build_index(
    settings: Settings, catalog: dict[str, Item]
) -> tuple[VectorIndex, ContentEmbedder]:
    """The item index and embedder for this catalog: loaded if built before, else built.

    Exact (FAISS flat) up to ``index_flat_max`` items, beyond it IVF up to
    ``index_ivf_max`` and HNSW past that (``index_kind=ivf``; ``hnsw``: HNSW only),
    or exact on the GPU when ``index_device=gpu`` and FAISS has one (else a logged
    fallback to the CPU).
    """
    folder = settings.state_dir / "index" / _catalog_key(catalog, settings.embedding_dim)
    index_path, embedder_path = folder / "items.faiss", folder / "embedder.json"
    if index_path.exists() and embedder_path.exists():
        return load_vector_index(index_path), ContentEmbedder.load(embedder_path)
    items = list(catalog.values())
    embedder = ContentEmbedder(dim=settings.embedding_dim)
    vectors = embedder.fit_transform(items)
    index = build_vector_index(
        vectors.shape[1], len(items), flat_max=settings.index_flat_max,
        kind=settings.index_kind, ivf_max=settings.index_ivf_max,
        ivf_nlist=settings.index_ivf_nlist, device=settings.index_device,
        hnsw_m=settings.index_hnsw_m,
        ef_construction=settings.index_ef_construction, ef_search=settings.index_ef_search,
        target_recall=settings.index_target_recall,
        rebuild_fraction=settings.index_rebuild_fraction,
    )
    nonzero = np.linalg.norm(vectors, axis=1) > 0  # names sharing no term: no vector
    index.upsert([i.item_id for i, k in zip(items, nonzero, strict=True) if k], vectors[nonzero])
    folder.mkdir(parents=True, exist_ok=True)
    index.save(index_path)
    embedder.save(embedder_path)
    log.info("built the item index: %d items, dim %d (%s)", len(index), index.dim,
             type(index).__name__)
    return index, embedder


# --- state ---------------------------------------------------------------------------------
def build_state_store(settings: Settings) -> RedisStateStore:
    if not settings.redis_url:
        raise ServiceUnavailable(
            "no Redis configured: set STREAMREC_REDIS_URL (or REDIS_URL), or run `streamrec demo`"
        )
    # One Redis or Redis Cluster: redis_client asks the server (INFO cluster).
    client = redis_client(settings.redis_url)
    return RedisStateStore.from_settings(client, settings)


def build_attempt_counter(settings: Settings) -> RedisAttemptCounter | MemoryAttemptCounter:
    """Log-in attempts in Redis (shared by every worker), in memory without Redis."""
    if not settings.redis_url:
        return MemoryAttemptCounter()
    return RedisAttemptCounter(redis_client(settings.redis_url), prefix=settings.redis_prefix)


def build_catalog_log(settings: Settings) -> RedisCatalogLog:
    if not settings.redis_url:
        raise ServiceUnavailable("no Redis configured for the catalog log")
    return RedisCatalogLog(redis_client(settings.redis_url), prefix=settings.redis_prefix)


def build_replica(
    settings: Settings, catalog: dict[str, Item], index: VectorIndex
) -> CatalogReplica:
    """This process's catalog and index, kept in step with the shared catalog log."""
    replica = CatalogReplica(catalog, index, build_catalog_log(settings))
    replica.refresh(force=True)
    return replica


def build_model_provider(
    settings: Settings, store: VectorTables | None = None
) -> ModelProvider:
    """The trained models of ``state_dir/artifacts``, reloaded when a new version lands.

    With ``store``, items the consumers folded in since training join the
    collaborative candidates too.
    """
    return ModelProvider(
        settings.artifacts_dir, min_interval_s=settings.model_poll_s,
        new_item_factors=store.get_item_factors if store is not None else None,
    )


def build_recommender(
    settings: Settings, state: StateStore, index: VectorIndex, catalog: dict[str, Item],
    models: ModelProvider | None = None,
) -> Recommender:
    """The recommendation pipeline of ``settings.sources`` (the API's and ``served``'s)."""
    models = models if models is not None else build_model_provider(settings, state)
    popularity = PopularitySnapshot(state, catalog, settings.popularity_refresh_s,
                                    settings.popularity_snapshot_size)
    deps = SourceDeps(state, index, catalog, popularity, collaborative=models.current,
                      neighbours=models.neighbours, sequential=models.sequential,
                      artifact=models.artifact)
    return Recommender(
        state, index, catalog, build_sources(settings.sources, deps), settings.blend_weights,
        settings.recent_items_max, variants=settings.variants,
        variant_weights=settings.variant_weights,
        rules=Rules(
            exclude_purchased=settings.exclude_purchased,
            excluded_categories=frozenset(settings.excluded_categories),
            max_per_category=settings.max_per_category,
        ),
        blender=BlenderCache(state).current,
        learned_variants=settings.learned_variants,
        ranker=models.ranker, ranked_variants=settings.ranked_variants,
        known_sources=SOURCES,
        model_version=lambda: models.current_version() or "",
        popularity_epoch=popularity.epoch,
    )


def ensure_trained(settings: Settings) -> str:
    """Train the collaborative model on the shipped history if no usable version exists
    (none yet, or the latest one's ALS file fails its manifest's sha256)."""
    from offline.datasets import load_dataset
    from offline.train import read_latest, train, verify_model

    latest = read_latest(settings.artifacts_dir)
    if latest is not None:
        try:
            verify_model(settings.artifacts_dir, latest, "als")
            return latest
        except ArtifactIntegrityError as exc:
            log.warning("retraining: %s", exc)
        except DataNotFound:
            return latest  # a version without ALS: collaborative scores are off by choice
    dataset = load_dataset("online-retail", settings.data_dir)
    # popularity: its all-time item counts are the `alltime` source's data
    result = train(dataset, settings.artifacts_dir, ["als", "ease", "popularity"])
    log.info("trained ALS, EASE and popularity on %d events: version %s",
             len(dataset.interactions), result.version)
    return result.version


def archive_dataset(settings: Settings) -> Dataset:
    """The SQL events archive as a training data set (implicit weights per event type)."""
    store = build_sql_store(settings)
    try:
        payloads = store.events()
    finally:
        store.close()
    if not payloads:
        raise DataNotFound("the events archive is empty: run the consumers (or the demo) first")
    events = [parse_interaction(p) for p in payloads]
    records = [(e.user_id, e.item_id, implicit_weight(e), e.ts) for e in events
               if implicit_weight(e) > 0]
    catalog = ensure_catalog(settings)
    return Dataset("archive", Interactions.from_records(records), list(catalog.values()))


def build_processor(
    settings: Settings,
    store: StateStore,
    index: VectorIndex,
    catalog: dict[str, Item],
    models: ModelProvider | None = None,
) -> StreamProcessor:
    return StreamProcessor(
        store,
        index,
        CategoryLookup(catalog),
        half_life_s=settings.popularity_half_life_s,
        profile=ContentProfile(settings.profile_learning_rate),
        covisit_window=settings.covisit_window,
        covisit_direction=settings.covisit_direction,
        collaborative=models.foldin if models is not None else None,
        rating_model=OnlineRatingMF(n_factors=settings.rating_factors),
        blender=OnlineBlender(),
    )


# --- the publisher ------------------------------------------------------------------------
def build_publisher(settings: Settings) -> KafkaEventPublisher:
    return KafkaEventPublisher.from_settings(settings)


@contextlib.contextmanager
def embedded_services(settings: Settings, *, persist_redis: bool = False) -> Iterator[Settings]:
    """``with embedded_services(settings) as live:`` -- services up, topics made."""
    stack = start_embedded(settings, persist_redis=persist_redis)
    try:
        ensure_kafka_topics(stack.settings)
        yield stack.settings
    finally:
        stack.stop()
