"""What both benchmarks share: services, bench-only names, events, figures, JSON.

A benchmark runs on the services the settings name, or on embedded ones (Tansu,
redis-server, SQLite) where they name none, exactly as ``streamrec demo`` does.
Every run uses its own topic, consumer group and Redis key prefix, deletes its
Redis keys afterwards, and archives into a temporary SQLite file unless a
database is configured, so a benchmark never mixes with a demo's data.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import resource
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from redis.cluster import RedisCluster

from core.events import AddedToCart, InteractionEvent, ItemClicked, ItemViewed, Purchased
from core.settings import Settings
from infra.bootstrap import build_state_store, ensure_catalog, start_embedded
from infra.embedded import EmbeddedKafka
from infra.kafka import ensure_topics
from infra.redis_cluster import RedisClient, redis_client

__all__ = [
    "EVENT_MIX",
    "BenchEnv",
    "bench_services",
    "clear_prefix",
    "cpu_seconds",
    "event_mix",
    "machine_info",
    "make_events",
    "make_history_events",
    "percentile_ms",
    "print_figures",
    "process_cpu_seconds",
    "redis_for",
    "used_memory",
    "write_json",
]

#: Share of each interaction kind in generated traffic (a typical shop funnel).
EVENT_MIX: Mapping[type[InteractionEvent], float] = {
    ItemViewed: 0.70,
    ItemClicked: 0.18,
    AddedToCart: 0.08,
    Purchased: 0.04,
}


@dataclass(frozen=True)
class BenchEnv:
    """Running services for one benchmark: settings with the bench's topic, the item ids."""

    settings: Settings
    item_ids: list[str]
    tmp_dir: Path
    #: Set when the SQL archive is the bench's own SQLite (each run then gets a fresh file).
    own_database: bool
    #: Pid of the embedded broker (for its CPU time); None for a configured one.
    broker_pid: int | None

    def run(self, label: str) -> Settings:
        """Settings of one pipeline run: its own consumer group, Redis prefix and archive."""
        tag = uuid.uuid4().hex[:8]
        update: dict[str, Any] = {
            "consumer_group": f"bench-{label}-{tag}",
            "redis_prefix": f"bench:{label}:{tag}:",
        }
        if self.own_database:
            update["database_url"] = f"sqlite:///{self.tmp_dir / f'{label}-{tag}.db'}"
        return self.settings.model_copy(update=update)


@contextlib.contextmanager
def bench_services(settings: Settings, *, label: str, partitions: int) -> Iterator[BenchEnv]:
    """Services up and a fresh interactions topic with ``partitions`` partitions.

    The interactions topic, its dead-letter topic and the catalog topic get unique
    names; the SQL archive is a temporary SQLite file unless a database is set.
    """
    tag = uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory(prefix="streamrec-bench-") as tmp:
        tmp_dir = Path(tmp)
        stack = start_embedded(settings, log_dir=tmp_dir / "logs")
        try:
            live = stack.settings.model_copy(update={
                "database_url": settings.database_url or f"sqlite:///{tmp_dir / 'catalog.db'}",
                "interactions_topic": f"bench-{label}-{tag}",
                "dead_letter_topic": f"bench-{label}-{tag}.dlq",
                "catalog_topic": f"bench-{label}-{tag}.catalog",
                "topic_partitions": partitions,
            })
            ensure_topics(live.kafka_bootstrap, {
                live.interactions_topic: partitions,
                live.dead_letter_topic: 1,
                live.catalog_topic: 1,
            })
            catalog = ensure_catalog(live)
            broker_pid = None
            if settings.uses_embedded_kafka:
                broker_pid = next((s.pid for s in stack.servers if isinstance(s, EmbeddedKafka)),
                                  None)
            yield BenchEnv(live, sorted(catalog), tmp_dir, not settings.database_url, broker_pid)
        finally:
            stack.stop()


def clear_prefix(settings: Settings) -> None:
    """Delete a run's Redis keys (the store's own SCAN + UNLINK)."""
    store = build_state_store(settings)
    try:
        store.clear()
    finally:
        store.client.close()


def make_events(
    n: int, users: int, item_ids: Sequence[str], *, seed: int = 7, start_ts: float | None = None,
    span_s: float = 60.0,
) -> list[InteractionEvent]:
    """``n`` shopper events: every one of ``min(n, users)`` users at least once.

    Users beyond the first pass and items are drawn with a long tail (Zipf-like),
    as in real shops; kinds follow :data:`EVENT_MIX`; event times spread over
    ``span_s`` seconds ending at ``start_ts + span_s`` (default: now).
    """
    if n < 0 or users < 1 or not item_ids:
        raise ValueError("need n >= 0, users >= 1 and at least one item id")
    rng = np.random.default_rng(seed)
    user_idx = _long_tail(rng, users, n)
    first = min(n, users)
    user_idx[:first] = rng.permutation(users)[:first]  # every user appears
    rng.shuffle(user_idx)
    return _events_of(rng, user_idx, item_ids, start_ts, span_s)


def make_history_events(
    users: int, per_user: int, item_ids: Sequence[str], *, seed: int = 7,
    start_ts: float | None = None, span_s: float = 60.0,
) -> list[InteractionEvent]:
    """``per_user`` events of each of ``users`` users (``u0``...): histories to warm state.

    Items and kinds as in :func:`make_events`; the users' events are interleaved.
    """
    if users < 1 or per_user < 0 or not item_ids:
        raise ValueError("need users >= 1, per_user >= 0 and at least one item id")
    rng = np.random.default_rng(seed)
    user_idx = np.tile(np.arange(users), per_user)
    rng.shuffle(user_idx)
    return _events_of(rng, user_idx, item_ids, start_ts, span_s)


def _events_of(
    rng: np.random.Generator, user_idx: np.ndarray, item_ids: Sequence[str],
    start_ts: float | None, span_s: float,
) -> list[InteractionEvent]:
    n = len(user_idx)
    item_idx = _long_tail(rng, len(item_ids), n)
    kinds = list(EVENT_MIX)
    kind_idx = rng.choice(len(kinds), size=n, p=list(EVENT_MIX.values()))
    start = (time.time() - span_s) if start_ts is None else start_ts
    times = start + np.sort(rng.uniform(0.0, span_s, size=n))
    return [
        kinds[k](user_id=f"u{u}", item_id=item_ids[i], timestamp=float(t))
        for u, i, k, t in zip(user_idx, item_idx, kind_idx, times, strict=True)
    ]


def _long_tail(rng: np.random.Generator, size: int, n: int) -> np.ndarray:
    # Rank r is drawn with weight 1 / (r + 10): a heavy head without one item taking all.
    weights = 1.0 / (np.arange(size) + 10.0)
    return rng.choice(size, size=n, p=weights / weights.sum())


def event_mix(events: Sequence[InteractionEvent]) -> dict[str, int]:
    """How many events of each kind."""
    counts: dict[str, int] = {}
    for event in events:
        counts[event.event_type] = counts.get(event.event_type, 0) + 1
    return counts


def _info(client: RedisClient, section: str) -> list[dict[str, Any]]:
    """``INFO section`` of the server, or of every node of a cluster (masters and replicas)."""
    if isinstance(client, RedisCluster):
        return list(client.info(section, target_nodes=RedisCluster.ALL_NODES).values())
    return [client.info(section)]


def used_memory(client: RedisClient) -> int:
    """Redis ``INFO memory`` ``used_memory`` in bytes (summed over a cluster's nodes)."""
    return sum(int(info["used_memory"]) for info in _info(client, "memory"))


def redis_for(settings: Settings) -> RedisClient:
    """A client of the settings' Redis or Redis Cluster (for INFO and MEMORY USAGE)."""
    return redis_client(settings.redis_url)


def cpu_seconds(client: RedisClient, broker_pid: int | None) -> dict[str, float]:
    """CPU seconds used so far by this process, the Redis server(s) and the embedded broker.

    Differences of two readings say where a run's CPU went (the broker only when
    it is embedded: its pid is known; Linux ``/proc``).
    """
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out = {
        "bench_process": usage.ru_utime + usage.ru_stime,
        "redis": sum(float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
                     for info in _info(client, "cpu")),
    }
    if broker_pid is not None:
        broker = process_cpu_seconds(broker_pid)
        if broker is not None:
            out["broker"] = broker
    return out


def percentile_ms(seconds: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``seconds``, in milliseconds (nearest rank)."""
    if not seconds:
        return math.nan
    ordered = sorted(seconds)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1] * 1000


def machine_info() -> dict[str, Any]:
    """nproc, CPU model, memory and Python version of this machine."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        # Other work on the box skews a benchmark: the 1-minute load says how busy it was.
        "loadavg_1m": os.getloadavg()[0],
    }


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` so far (Linux ``/proc``; else None)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        # utime and stime are fields 14 and 15 of proc_pid_stat(5); fields[0] is field 3.
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def write_json(path: Path | None, figures: Mapping[str, Any]) -> None:
    """Write ``figures`` as indented JSON (``None``: nothing)."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(figures, indent=2, sort_keys=True) + "\n")


def print_figures(title: str, figures: Mapping[str, Any], out: Any = None) -> None:
    """Print ``figures`` as aligned ``name  value`` lines under ``title``."""
    out = out or sys.stdout
    print(title, file=out)
    width = max((len(k) for k in figures), default=0)
    for name, value in figures.items():
        if isinstance(value, Mapping):
            value = ", ".join(f"{k}={_fmt(v)}" for k, v in value.items())
        print(f"  {name:<{width}}  {_fmt(value)}", file=out)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if abs(value) < 1:
            return f"{value:.4g}"
        return f"{value:,.2f}" if abs(value) < 1e6 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)
