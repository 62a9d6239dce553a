"""``streamrec evaluate --replay``: what real time is worth, measured on a real log.

The log is cut by time: the earlier part trains the batch ALS model and warms the
online state; the latest ``stream_events`` events are then replayed through the
real path -- Kafka (embedded Tansu unless configured) -> the consumers -> Redis --
in chunks. Before a chunk is produced, every model is asked for each of its
events' user's top-k (test-then-learn), so a model sees an event only after it
was scored. Compared:

* ``static_als`` -- the batch ALS model as trained: user vectors never change;
* ``streaming_als`` -- the same item factors, the user vector folded in again
  after every event (collaborative source of the live recommender alone);
* ``static_ease`` -- the lambda-tuned EASE model as trained, on each user's training
  history (the best batch baseline, frozen);
* ``static_served`` -- the served pipeline (same sources, same settings) frozen at the
  start of the stream: its state is the training part replayed in memory and never
  changes after;
* ``streaming_hybrid`` -- the same pipeline live: the API's recommender over the state
  the consumers keep current (content profile, ALS fold-in, co-visitation, EASE
  neighbours, decayed popularity).

Chunking is the only approximation: events of one chunk do not see each other
(as with a consumer lag of ``chunk`` events).
"""

from __future__ import annotations

import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from api.services import build_services
from consumers.app import BackgroundConsumer, create_consumer_app
from core.events import Purchased
from core.ports import RecRequest
from core.scoring import Interactions
from core.settings import Settings
from infra.bootstrap import (
    build_index,
    build_processor,
    build_sql_store,
    build_state_store,
    embedded_services,
)
from infra.served import ServedWorld, catalog_of, world_settings
from offline.datasets import Dataset
from offline.evaluation.prequential import PrequentialScore
from offline.models.als import ALSScorer
from offline.train import load_model, train
from online_models.serving.pipeline import Recommender

__all__ = ["run_replay"]

#: Events per state-warming batch (applied directly through the stream processor).
WARM_BATCH = 1_000


def _events(log: Interactions, start: int = 0) -> list[Purchased]:
    return [
        Purchased(event_id=f"replay-{start + n}", user_id=str(u), item_id=str(i),
                  timestamp=float(t))
        for n, (u, i, t) in enumerate(zip(log.users, log.items, log.timestamps, strict=True))
    ]


def _static_ranker(model: ALSScorer) -> Callable[[str, int, set[str]], list[str]]:
    factors = model.item_factors_

    def top(user: str, k: int, seen: set[str]) -> list[str]:
        row = model.user_index_.get(user)
        if row is None:
            return []  # a user the batch model never saw: it cannot score them
        order = np.argsort(-(factors @ model.user_factors_[row]))
        return _first_unseen(map(model.item_ids_.__getitem__, order.tolist()), seen, k)

    return top


def _first_unseen(ranked: Iterable[str], seen: set[str], k: int) -> list[str]:
    """The first ``k`` of ``ranked`` the user has not seen."""
    return list(islice((item for item in ranked if item not in seen), k))


def _static_scorer(model: Any, known: set[str]) -> Callable[[str, int, set[str]], list[str]]:
    """Top-k of a batch scorer that ranks every item for a user it knows."""

    def top(user: str, k: int, seen: set[str]) -> list[str]:
        if user not in known:
            return []
        scored = model.score(user)
        order = np.argsort(-scored.scores, kind="stable")
        return _first_unseen(map(scored.ids.__getitem__, order.tolist()), seen, k)

    return top


def _frozen_served(world: ServedWorld) -> Callable[[str, int, set[str]], list[str]]:
    def top(user: str, k: int, seen: set[str]) -> list[str]:
        return _first_unseen(world.top(user, k + 40), seen, k)

    return top


def _live_ranker(
    live: Recommender, weights: dict[str, float]
) -> Callable[[str, int, set[str]], list[str]]:
    recommender = Recommender(live.state, live.index, live.catalog, live.sources, weights,
                              live.recent_max, known_sources=live.names)

    def top(user: str, k: int, seen: set[str]) -> list[str]:
        rec = recommender.run(RecRequest(user_id=user, k=k + 40))
        return [r.item.item_id for r in rec.items if r.item.item_id not in seen][:k]

    return top


def run_replay(
    dataset: Dataset,
    *,
    stream_events: int = 5_000,
    chunk: int = 100,
    k: int = 10,
    base: Settings | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Replay the last ``stream_events`` events of ``dataset``; return metrics per model.

    The log's times are moved, gaps kept, to end now: the consumers accept event times
    only within a window around their clock (``event_max_age_s``), as for any producer.
    """
    log = dataset.interactions
    log = Interactions(log.users, log.items, log.values,
                       log.timestamps + (time.time() - float(log.timestamps.max(initial=0.0))),
                       log.is_rating)
    order = np.argsort(log.timestamps, kind="stable")
    ordered = Interactions(log.users[order], log.items[order], log.values[order],
                           log.timestamps[order])
    n_train = len(ordered) - min(stream_events, len(ordered) // 2)
    train_log = ordered.subset(np.arange(len(ordered)) < n_train)
    stream = _events(ordered.subset(np.arange(len(ordered)) >= n_train), start=n_train)

    with tempfile.TemporaryDirectory(prefix="streamrec-replay-") as tmp:
        tag = uuid.uuid4().hex[:8]  # topics, group and keys of this run alone
        settings = (base or Settings()).model_copy(update={
            "state_dir": Path(tmp), "database_url": "", "redis_prefix": f"replay-{tag}:",
            "interactions_topic": f"replay-{tag}", "catalog_topic": f"replay-{tag}.catalog",
            "dead_letter_topic": f"replay-{tag}.dlq", "consumer_group": f"replay-{tag}",
        })
        with embedded_services(settings) as live:
            return _replay(dataset, live, train_log, stream, chunk=chunk, k=k,
                           progress=progress)


def _replay(
    dataset: Dataset, settings: Settings, train_log: Interactions, stream: list[Purchased],
    *, chunk: int, k: int, progress: bool,
) -> dict[str, Any]:
    t0 = time.perf_counter()
    catalog = {item.item_id: item for item in dataset.items}
    sql = build_sql_store(settings)
    sql.upsert_products(list(catalog.values()))
    sql.close()
    result = train(Dataset(dataset.name, train_log, dataset.items), settings.artifacts_dir,
                   ["als", "ease"])
    static_model = load_model(settings.artifacts_dir, result.version, "als")
    assert isinstance(static_model, ALSScorer)
    static_ease = load_model(settings.artifacts_dir, result.version, "ease")
    with world_settings(settings) as frozen_settings:
        frozen = ServedWorld.build(frozen_settings, train_log,
                                   catalog=catalog_of(train_log, dataset.items))

    # Warm the online state with the training part, through the same stream processor.
    store = build_state_store(settings)
    store.clear()
    index, _ = build_index(settings, catalog)
    warm = build_processor(settings, store, index, catalog)
    warm_events = _events(train_log)
    for start in range(0, len(warm_events), WARM_BATCH):
        warm.apply(warm_events[start:start + WARM_BATCH])
    warmed = store.counters().get("events.total", 0)
    warm_s = time.perf_counter() - t0

    seen: dict[str, set[str]] = defaultdict(set)
    for user, item in zip(train_log.users, train_log.items, strict=True):
        seen[str(user)].add(str(item))
    services = build_services(settings)
    publisher = services.publisher
    rankers = {
        "static_als": _static_ranker(static_model),
        "static_ease": _static_scorer(static_ease, set(np.unique(train_log.users).tolist())),
        "static_served": _frozen_served(frozen),
        "streaming_als": _live_ranker(services.recommender, {"collab": 1.0}),
        "streaming_hybrid": _live_ranker(services.recommender, settings.blend_weights),
    }
    score = PrequentialScore(k)
    known = PrequentialScore(k)  # only users the batch model knows
    t1 = time.perf_counter()
    try:
        with BackgroundConsumer(create_consumer_app(settings)):
            applied = warmed
            bar = tqdm(total=len(stream), desc="replay", unit="event", disable=not progress)
            for start in range(0, len(stream), chunk):
                batch = stream[start:start + chunk]
                for event in batch:
                    if event.item_id in seen[event.user_id]:
                        continue
                    for name, top in rankers.items():
                        ranked = top(event.user_id, k, seen[event.user_id])
                        score.add(name, ranked, event.item_id)
                        if event.user_id in static_model.user_index_:
                            known.add(name, ranked, event.item_id)
                publisher.publish(batch)
                applied += len({e.event_id for e in batch})
                _wait_applied(store, applied)
                for event in batch:
                    seen[event.user_id].add(event.item_id)
                bar.update(len(batch))
            bar.close()
    finally:
        services.close()
        store.clear()
    return {
        "dataset": dataset.name,
        "train_events": len(train_log),
        "stream_events": len(stream),
        "chunk": chunk,
        "k": k,
        "warm_seconds": round(warm_s, 1),
        "replay_seconds": round(time.perf_counter() - t1, 1),
        "models": score.summary(),
        "models_known_users": known.summary(),
    }


def _wait_applied(store: Any, target: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while store.counters().get("events.total", 0) < target:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the consumers applied fewer than {target} events in time")
        time.sleep(0.01)
