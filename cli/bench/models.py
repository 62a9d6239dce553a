"""The batch models an API bench serves: trained on the bench's own seeded events.

``streamrec bench api`` measures what a trained API serves: the collaborative (ALS
fold-in), EASE-neighbour, all-time popularity and, where PyTorch imports, sequential
sources, and the learned ranker over their score matrix. Without a model version the
API would serve only its online sources, and the latency bars would be read on a
pipeline lighter than the real one.

The models are real fits of the seeded events, with the settings that bear on the cost
of a request and shortened training where only quality would gain:

* ``als``, ``popularity``: as ``streamrec train`` fits them;
* ``ease``: one fit at the default lambda (tuning changes the weights, not the cost of
  reading an item's top neighbours);
* ``sasrec`` (neural extra): the shipped architecture (dim, blocks, sequence length from
  the data) trained for at most ``sequential_s`` seconds, no refit;
* the ranker: LightGBM trees with the shipped parameters (:data:`RANKER_PARAMS`,
  binary objective, :data:`BENCH_RANKER_ROUNDS` rounds) fitted on the features of the
  pipeline's own candidates for some seeded shoppers. The labels are drawn at random
  (seeded): the bench has no held-out future to learn from, and a tree's cost at
  serving is its depth, which its leaves' limits bound, not its labels. So the ranker
  is there for cost only, and the figures say so.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core.events import InteractionEvent
from core.ports import RecRequest
from core.scoring import Interactions, Scorer
from core.settings import Settings
from core.types import Item
from offline.train import Fitted

__all__ = ["BENCH_RANKER_ROUNDS", "publish_bench_models"]

#: Rounds of the bench's ranker: the most the 3-fold check chose on the shared data sets
#: (Online Retail: binary, 100 rounds).
BENCH_RANKER_ROUNDS = 100
#: Seeded shoppers whose candidates train the bench's ranker.
RANKER_USERS = 300


def _fit_all(names: Sequence[str], log: Interactions, items: Sequence[Item],
             sequential_s: float) -> dict[str, Fitted]:
    from offline.models.ease import EASEScorer
    from offline.models.neural import torch_missing
    from offline.models.registry import make_model

    fitted: dict[str, Fitted] = {}
    wanted = [*names, *(["sasrec"] if torch_missing() is None else [])]
    for name in wanted:
        model: Scorer
        if name == "ease":
            model = EASEScorer()  # the default lambda, no tuning
        elif name == "sasrec":
            from offline.models.sasrec import SASRecScorer

            model = SASRecScorer(max_train_s=sequential_s, refit=False,
                                 orders=("time",))
        else:
            model = make_model(name)
        t0 = time.perf_counter()
        model.fit(log, items)
        fitted[name] = Fitted(model, time.perf_counter() - t0)
    return fitted


def publish_bench_models(settings: Settings, events: Sequence[InteractionEvent],
                         catalog: dict[str, Item], *, sequential_s: float = 60.0,
                         say: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Train the live pipeline's batch models on ``events``; publish them with a ranker.

    Two versions are written into ``settings.artifacts_dir``: the models, then the same
    models with the ranker (fitted on the first version's pipeline). Returns what the
    bench reports: seconds per model and how the ranker was made.
    """
    import lightgbm

    from infra.bootstrap import build_index, build_processor, build_recommender
    from infra.memory_store import InMemoryStateStore
    from infra.models import ModelProvider
    from infra.served import RANKER_PARAMS
    from offline.train import data_sha256, publish
    from online_models.serving.ranker import FILE, GbdtRanker, ranker_features

    log = Interactions.from_records((e.user_id, e.item_id, 1.0, e.timestamp.timestamp())
                                    for e in events)
    items = list(catalog.values())
    fitted = _fit_all(("als", "ease", "popularity"), log, items, sequential_s)
    common: dict[str, Any] = {"dataset": "bench", "digest": data_sha256(log),
                              "events": len(log), "items": len(items)}
    publish(settings.artifacts_dir, fitted, **common)
    say("bench models: " + ", ".join(f"{n} {f.fit_s:.1f} s" for n, f in fitted.items()))

    # The ranker's features: the pipeline of the first version over these events' state.
    models = ModelProvider(settings.artifacts_dir, min_interval_s=3600.0)
    state = InMemoryStateStore(recent_max=settings.recent_items_max,
                               half_life_s=settings.popularity_half_life_s,
                               covisit_max=settings.covisit_max)
    index, _ = build_index(settings, catalog)
    processor = build_processor(settings, state, index, catalog, models)
    for start in range(0, len(events), 1000):
        processor.apply(list(events[start:start + 1000]))
    recommender = build_recommender(settings, state, index, catalog, models)
    rng = np.random.default_rng(11)
    users = sorted({e.user_id for e in events})
    chosen = [users[int(i)] for i in rng.choice(len(users), min(RANKER_USERS, len(users)),
                                                replace=False)]
    blocks = []
    for user in chosen:
        ctx, scored = recommender.candidates(RecRequest(user, 20))
        if scored.ids:
            blocks.append(ranker_features(scored.matrix, ctx))
    x = np.vstack(blocks)
    labels = (rng.random(len(x)) < 0.05).astype(np.float64)
    booster = lightgbm.train({**RANKER_PARAMS, "seed": 11}, lightgbm.Dataset(x, labels),
                             num_boost_round=BENCH_RANKER_ROUNDS)
    ranker = GbdtRanker(booster, recommender.names,
                        {"chosen": "ranker", "bench": "cost only: random labels"})

    def write_ranker(folder: Path) -> dict[str, Any]:
        ranker.save(folder / FILE)
        return {"file": FILE, "info": ranker.info}

    publish(settings.artifacts_dir, fitted, extras={"ranker": write_ranker}, **common)
    return {"models": {n: round(f.fit_s, 2) for n, f in fitted.items()},
            "ranker": {"rounds": BENCH_RANKER_ROUNDS, "sources": list(recommender.names),
                       "candidate_rows": len(x), "labels": "random (cost only)"}}
