"""``served``: the API's own recommendation pipeline, measured offline and trained for serving.

A :class:`ServedWorld` is what one API process has, built from an interaction log: the
batch ALS artifact trained on the log, the content index of the catalog, and the online
state reached by replaying the log, event by event in time order, through the same
stream processor the consumers run (into the in-memory state store), with the same
pipeline (:func:`infra.bootstrap.build_recommender`, the sources of ``settings``) on top.

:class:`ServedModel` is ``served`` in ``streamrec evaluate``: inside ``fit`` it carves a
validation slice from the training log only
(:func:`offline.evaluation.validation.validation_split`),
builds a world of the earlier part, learns how to combine the sources on the
held-out items (:func:`fit_combiner`: the LightGBM ranker over the pipeline's own score
matrices, or blend weights, whichever ranks the validation users better), then builds
the world of the whole training log with that combiner and asks it for every test user.
``streamrec train`` calls :func:`train_ranker` to ship the same combiner with a model
version (:mod:`online_models.serving.ranker`), so what is served is what was measured.
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from core.errors import DataNotFound
from core.events import Purchased
from core.ports import RecRequest
from core.scoring import Interactions
from core.settings import Settings
from core.types import Item, ScoredItems
from infra.memory_store import InMemoryStateStore
from infra.models import ModelProvider
from offline.datasets import Dataset
from offline.evaluation.validation import validation_split
from online_models.processor import StreamProcessor
from online_models.serving.pipeline import Recommender, normalised_columns
from online_models.serving.ranker import BlendRanker, GbdtRanker, ranker_features

__all__ = ["RankerTraining", "ServedModel", "ServedWorld", "fit_combiner", "train_ranker",
           "world_trains_sequential"]

log = logging.getLogger(__name__)

#: Events per replayed batch. Larger than a consumer's batch (4,000 records): the final
#: state is the same sums, with fewer fold-ins and trims of the same users' lists.
REPLAY_BATCH = 10_000
#: The batch models behind the live sources (``collab``: ALS; ``ease``: its neighbours;
#: ``alltime``: popularity's all-time counts).
SERVED_MODELS = ("als", "ease", "popularity")
#: The sequential network's name (``sequential`` source), trained where PyTorch imports.
SEQUENTIAL_MODEL = "sasrec"
#: Wall-clock seconds SASRec may train inside ``served``: the standalone ``sasrec``'s own
#: budget (``SASRecScorer.max_train_s``), so ``served`` holds as well trained a network as
#: ``sasrec`` alone. It is trained once, on the validation world's log, and the final
#: world keeps it (as a live system serves a network trained on older events, reading
#: the shopper's newest clicks at request time), so the combiner learns its weight from
#: the very network that serves; ``streamrec train`` ships that same network
#: (:class:`RankerTraining`). Measured on MovieLens-100k as a bare csv (leave-one-out,
#: load 4-5): a 120 s budget left SASRec at 2 epochs per row order and ``served`` at
#: NDCG@10 0.0933; this budget gave 0.1035 (tuned EASE 0.0723, ``sasrec`` alone 0.0724).
SEQUENTIAL_BUDGET_S = 720.0
#: Logs with more events than this get no sequential network inside ``served``: on 2
#: cores an epoch costs about 0.1 ms per event (Online Retail: 4 epochs of 285k events
#: in 129 s, validation NDCG 0.05 and still rising; Amazon Scientific: 21 epochs of
#: 42k events in 100 s, converged), so within the budget a larger log gets too few
#: epochs to be of use and only costs time. ``streamrec train`` trains the full SASRec
#: (its own budget) whatever the size.
SEQUENTIAL_MAX_EVENTS = 100_000
#: Items asked of the pipeline per evaluated user (the harness scores up to k=50).
EVAL_K = 60
#: Folds of the validation users the ways of combining sources are compared on.
N_FOLDS = 3
#: The learned ranker: LightGBM trees over :func:`ranker_features`; strong leaves (a few
#: thousand validation users at most).
RANKER_PARAMS: dict[str, Any] = {"objective": "binary", "learning_rate": 0.05,
                                 "num_leaves": 15, "min_data_in_leaf": 100,
                                 "feature_fraction": 0.9, "verbose": -1, "num_threads": 2}
#: Objectives the trees may learn (binary: is it a next item; lambdarank: the order of
#: one user's candidates, NDCG's own), each read at these numbers of rounds; the folds
#: choose (:func:`fit_combiner`).
RANKER_OBJECTIVES: dict[str, dict[str, Any]] = {
    "binary": {"objective": "binary"},
    "lambdarank": {"objective": "lambdarank", "lambdarank_truncation_level": 20,
                   "eval_at": [10]},
}
RANKER_ROUNDS = (50, 100, 200)
#: Relative validation gain a step of the weight search must bring to be kept.
MIN_GAIN = 0.005
#: Validation users the combiner learns from (a sample when there are more).
MAX_VALIDATION_USERS = 4_000


def catalog_of(train: Interactions, items: Sequence[Item]) -> dict[str, Item]:
    """The shop's catalog: its items, plus a bare item for any id only the log knows."""
    catalog = {item.item_id: item for item in items}
    for item_id in np.unique(train.items).tolist():
        catalog.setdefault(item_id, Item(item_id, item_id, "", 0.0))
    return catalog


def replay_events(log_: Interactions, tag: str) -> list[Purchased]:
    """The log as purchase events, in time order (ties keep the log's order); event ids
    are ``<tag>-<position in the log>``."""
    order = np.argsort(log_.timestamps, kind="stable")
    users, items, ts = log_.users[order], log_.items[order], log_.timestamps[order]
    return [Purchased(event_id=f"{tag}-{n}", user_id=u, item_id=i, timestamp=t)
            for n, u, i, t in zip(order.tolist(), users.tolist(), items.tolist(), ts.tolist(),
                                  strict=True)]


@dataclass
class ServedWorld:
    """One process's worth of serving state, reached from a log (see the module doc)."""

    settings: Settings
    catalog: dict[str, Item]
    state: InMemoryStateStore
    recommender: Recommender
    models: ModelProvider
    processor: StreamProcessor
    protocol: str
    timings: dict[str, float] = field(default_factory=dict)

    @classmethod
    def build(cls, settings: Settings, log_: Interactions, *, catalog: dict[str, Item],
              protocol: str = "temporal", sequential_budget_s: float | None = None
              ) -> ServedWorld:
        from infra.bootstrap import build_index, build_processor, build_recommender
        from offline.train import train

        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        names = list(SERVED_MODELS)
        if sequential_budget_s is None:
            sequential_budget_s = SEQUENTIAL_BUDGET_S
        if wants_sequential(settings) and sequential_budget_s > 0:
            if len(log_) <= SEQUENTIAL_MAX_EVENTS:
                names.append(SEQUENTIAL_MODEL)
            else:
                log.warning("served: no sequential network for a log of %d events (more than "
                            "%d: too few epochs in %.0f s to help)", len(log_),
                            SEQUENTIAL_MAX_EVENTS, sequential_budget_s)
        result = train(Dataset("served", log_, list(catalog.values())), settings.artifacts_dir,
                       names, protocol=protocol,
                       make=partial(_make_served, sequential_budget_s=sequential_budget_s))
        models = ModelProvider(settings.artifacts_dir, min_interval_s=3600.0)
        for name in names:
            timings[f"{name}_fit_s"] = float(result.manifest["models"][name]["fit_s"])
        timings["models_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        index, _ = build_index(settings, catalog)
        timings["index_s"] = time.perf_counter() - t0
        state = InMemoryStateStore(recent_max=settings.recent_items_max,
                                   half_life_s=settings.popularity_half_life_s,
                                   covisit_max=settings.covisit_max)
        processor = build_processor(settings, state, index, catalog, models)
        recommender = build_recommender(settings, state, index, catalog, models)
        world = cls(settings, catalog, state, recommender, models, processor, protocol, timings)
        world.replay(log_, "a")
        return world

    def replay(self, log_: Interactions, tag: str) -> None:
        """Apply ``log_`` through the stream processor, in batches, in time order."""
        t0 = time.perf_counter()
        events = replay_events(log_, tag)
        for start in range(0, len(events), REPLAY_BATCH):
            self.processor.apply(events[start:start + REPLAY_BATCH])
        self.timings["replay_s"] = self.timings.get("replay_s", 0.0) + time.perf_counter() - t0

    def extend(self, full: Interactions, rest: Interactions) -> None:
        """Go on to the state of ``full`` (= the log so far + ``rest``), as the live system
        does: a model trained on ``full`` is published (and picked up), then ``rest``
        streams in."""
        from offline.models.ease import EASEScorer
        from offline.models.registry import make_model
        from offline.train import load_model, read_latest, train

        t0 = time.perf_counter()
        # EASE's lambda as tuned for the earlier part: tuning again on nearly the same log
        # would cost most of the refit and choose about the same.
        latest = read_latest(self.settings.artifacts_dir)
        ease = load_model(self.settings.artifacts_dir, latest, "ease") if latest else None
        fixed = ease.fixed_copy() if isinstance(ease, EASEScorer) else None

        def make(name: str, **context: Any) -> Any:
            return fixed if name == "ease" and fixed is not None else make_model(name, **context)

        # The sequential network trained on the earlier part goes on serving (see
        # SEQUENTIAL_BUDGET_S): its files are carried into the new version.
        extras = {}
        if latest is not None and (self.settings.artifacts_dir / latest /
                                   f"{SEQUENTIAL_MODEL}.json").exists():
            extras[SEQUENTIAL_MODEL] = partial(_carry_files, self.settings.artifacts_dir / latest,
                                               SEQUENTIAL_MODEL)
        train(Dataset("served", full, list(self.catalog.values())),
              self.settings.artifacts_dir, list(SERVED_MODELS), protocol=self.protocol,
              make=make, extras=extras)
        self.models.refresh()
        self.timings["models_s"] = (self.timings.get("models_s", 0.0)
                                    + time.perf_counter() - t0)
        self.replay(rest, "b")

    def top(self, user_id: str, k: int) -> list[str]:
        rec = self.recommender.run(RecRequest(user_id, k))
        return [r.item.item_id for r in rec.items]

    def matrices(self, users: Sequence[str], k: int
                 ) -> Iterator[tuple[str, list[str], npt.NDArray[np.float64]]]:
        """Per user: the candidate ids and :func:`ranker_features` of the pipeline's scores."""
        for user in users:
            ctx, scored = self.recommender.candidates(RecRequest(user, k))
            if scored.ids:
                yield user, scored.ids, ranker_features(scored.matrix, ctx)


def wants_sequential(settings: Settings) -> bool:
    """The settings name the ``sequential`` source and PyTorch imports (else the source
    is absent, as in an API process without the ``neural`` extra)."""
    from offline.models.neural import torch_missing

    return "sequential" in settings.sources and torch_missing() is None


def _make_served(name: str, *, sequential_budget_s: float, **context: Any) -> Any:
    """The batch models of a world: the registry's, SASRec with served's time budget."""
    from offline.models.registry import make_model

    if name == SEQUENTIAL_MODEL:
        from offline.models.sasrec import SASRecScorer

        return SASRecScorer(random_state=int(context.get("random_state", 0)),
                            max_train_s=sequential_budget_s)
    return make_model(name, **context)


def _carry_files(source: Path, stem: str, staging: Path) -> dict[str, Any]:
    """Copy a version's ``<stem>.*`` files into a new version's staging folder."""
    import shutil

    from offline.train import file_sha256

    files = sorted(p.name for p in source.glob(f"{stem}.*"))
    for name in files:
        shutil.copyfile(source / name, staging / name)
    return {"files": files, "format": "arrays", "carried_from": source.name,
            "sha256": {f: file_sha256(staging / f) for f in files}}


@contextmanager
def world_settings(base: Settings | None) -> Iterator[Settings]:
    """Settings of a throw-away world: its own state folder (artifacts, index)."""
    with tempfile.TemporaryDirectory(prefix="streamrec-served-") as tmp:
        yield (base or Settings()).model_copy(update={"state_dir": Path(tmp)})


@dataclass
class Combiner:
    """How the sources are combined: a learned ranker (trees, or a normalised blend), or
    else blend weights."""

    ranker: GbdtRanker | BlendRanker | None
    weights: dict[str, float]
    info: dict[str, Any]


def _ndcg(order_scores: npt.NDArray[np.float64], labels: npt.NDArray[np.float64], k: int
          ) -> float:
    order = np.argsort(-order_scores, kind="stable")[:k]
    gains = labels[order] / np.log2(np.arange(2, len(order) + 2))
    ideal = np.sort(labels)[::-1][:k] / np.log2(np.arange(2, min(k, len(labels)) + 2))
    return float(gains.sum() / ideal.sum()) if ideal.sum() > 0 else 0.0


#: The ways of combining the sources, in tiers of flexibility: the configured weights
#: (nothing learnt); one weight per source, on the raw scores (``tuned``) or on the
#: request's normalised columns (``normalised``,
#: :func:`online_models.serving.pipeline.normalised_blend`: a fixed transform, no more
#: parameters); trees (hundreds of leaves).
COMBINER_TIERS: tuple[tuple[str, ...], ...] = (("configured",), ("tuned", "normalised"),
                                               ("trees",))


def choose_combiner(per_user: Mapping[str, Sequence[float]],
                    tiers: Sequence[Sequence[str]] = COMBINER_TIERS
                    ) -> tuple[str, dict[str, float]]:
    """The best combiner of the least flexible tier that comes within one standard error
    of the best overall.

    ``per_user`` holds each combiner's out-of-fold NDCG per validation user, in the same
    user order. A combiner is within reach when its users' NDCG lags the best's by no more
    than the standard error of that paired difference. Near-equal combiners (on Amazon
    the four lie within 1-2 % of each other on validation) would otherwise be chosen by
    noise, and the choice flip with the seed or a retrained network; a more flexible
    combiner must beat a less flexible one by more than the users' noise to be served
    (the "one-standard-error rule"). Returns the choice and, per combiner, its mean lag
    behind the best in standard errors.

    >>> choose_combiner({"a": [0.5, 0.0, 0.5, 0.0], "b": [0.5, 0.1, 0.5, 0.0]}, [["a"], ["b"]])
    ('a', {'a': 1.0, 'b': 0.0})
    >>> choose_combiner({"a": [0.0, 0.0, 0.0, 0.1], "b": [0.5, 0.1, 0.5, 0.2]}, [["a"], ["b"]])[0]
    'b'
    """
    names = [name for tier in tiers for name in tier]
    means = {name: float(np.mean(per_user[name])) for name in names}
    best = max(names, key=lambda name: (means[name], -names.index(name)))
    lags: dict[str, float] = {}
    for name in names:
        diff = np.asarray(per_user[best], dtype=np.float64) - np.asarray(per_user[name])
        se = float(np.std(diff, ddof=1) / np.sqrt(len(diff))) if len(diff) > 1 else 0.0
        mean = float(diff.mean())
        lags[name] = round(mean / se, 3) if se > 0 else (0.0 if mean <= 0 else math.inf)
    for tier in tiers:
        within = [name for name in tier if lags[name] <= 1.0]
        if within:
            return max(within, key=lambda name: (means[name], -names.index(name))), lags
    return best, lags  # not reached: the best is within reach of itself


def fit_combiner(world: ServedWorld, holdout: Mapping[str, set[str]], *, k: int = 10,
                 random_state: int = 0) -> Combiner:
    """Learn how to combine the sources on held-out items of ``holdout``'s users.

    The ways of :data:`COMBINER_TIERS` are compared by NDCG@k over :data:`N_FOLDS` folds of
    the validation users (each judged on users it did not learn from): the configured
    blend weights, blend weights tuned by coordinate ascent on the raw scores, the same
    on the request's normalised columns (:func:`normalised_columns`), and a LightGBM
    model over :func:`ranker_features`; :func:`choose_combiner` takes the simplest
    within noise of the best, refitted on every validation user.
    Sources that scored nothing for any validation user are dropped (logged and
    reported), so a source that cannot work on a shop does not blur the others.
    """
    import lightgbm

    rng = np.random.default_rng(random_state)
    users = sorted(holdout)
    if len(users) > MAX_VALIDATION_USERS:
        users = sorted(rng.choice(users, MAX_VALIDATION_USERS, replace=False).tolist())
    names = world.recommender.names
    n_src = len(names)
    rows: list[tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]] = []
    in_candidates = 0
    for user, ids, features in world.matrices(users, EVAL_K):
        labels = np.fromiter((i in holdout[user] for i in ids), np.float64, count=len(ids))
        in_candidates += int(labels.sum())
        if labels.any():
            rows.append((features, labels))
    held = sum(len(holdout[u]) for u in users)
    configured = {n: world.settings.blend_weights.get(n, 0.0) for n in names}
    # How many held-out items the candidates hold at all: the ceiling of any combiner.
    info: dict[str, Any] = {"validation_users": len(users), "users_with_a_hit": len(rows),
                            "candidate_recall": round(in_candidates / held, 4) if held else 0.0}
    if len(rows) < 20:
        info["chosen"] = "configured weights (too few validation users with a candidate hit)"
        return Combiner(None, configured, info)
    scored_any = np.any([np.any(~np.isnan(f[:, :n_src]), axis=0) for f, _ in rows], axis=0)
    skipped = [n for n, ok in zip(names, scored_any.tolist(), strict=True) if not ok]
    if skipped:
        log.warning("served: sources %s scored no validation candidate; left out", skipped)
    info["skipped_sources"] = skipped
    folds = rng.permutation(len(rows)) % N_FOLDS
    base_w = np.array([configured[n] for n in names])
    skip = ~scored_any
    t_check = time.perf_counter()
    normalised = [(normalised_columns(f[:, :n_src]), lab) for f, lab in rows]
    t_normalised = time.perf_counter() - t_check  # its share of the check, reported

    def fit_ranker(part: Sequence[tuple[Any, Any]], objective: str, rounds: int) -> Any:
        x = np.vstack([f for f, _ in part])
        y = np.concatenate([lab for _, lab in part])
        params = {**RANKER_PARAMS, **RANKER_OBJECTIVES[objective], "seed": random_state}
        data = lightgbm.Dataset(x, y, group=[len(lab) for _, lab in part]
                                if objective == "lambdarank" else None)
        return lightgbm.train(params, data, num_boost_round=rounds)

    # Each way of combining is judged on users it did not learn from (k folds), so the
    # choice rests on every validation user, not on a fifth of them. The trees' objective
    # and number of rounds are chosen by the same folds (one fit per objective, read at
    # each round count of RANKER_ROUNDS): no fixed setting has to suit every shop.
    scores: dict[str, list[float]] = {"configured": [], "tuned": [], "normalised": []}
    for objective in RANKER_OBJECTIVES:
        for rounds in RANKER_ROUNDS:
            scores[f"{objective}:{rounds}"] = []
    fold_means: dict[str, list[float]] = {name: [] for name in scores}
    for fold in range(N_FOLDS):
        in_fold = [f == fold for f in folds.tolist()]
        held_rows = [r for r, f in zip(rows, in_fold, strict=True) if f]
        fit = [r for r, f in zip(rows, in_fold, strict=True) if not f]
        w = _coordinate_ascent(fit, n_src, skipped_mask=skip, k=k)
        norm_fit = [r for r, f in zip(normalised, in_fold, strict=True) if not f]
        norm_held = [r for r, f in zip(normalised, in_fold, strict=True) if f]
        t0 = time.perf_counter()
        w_norm = _coordinate_ascent(norm_fit, n_src, skipped_mask=skip, k=k)
        t_normalised += time.perf_counter() - t0
        fold_scores = {
            "configured": [_ndcg(np.nan_to_num(f[:, :n_src]) @ base_w, lab, k)
                           for f, lab in held_rows],
            "tuned": [_ndcg(np.nan_to_num(f[:, :n_src]) @ w, lab, k) for f, lab in held_rows],
            "normalised": [_ndcg(m @ w_norm, lab, k) for m, lab in norm_held]}
        block = np.vstack([feats for feats, _ in held_rows])  # one predict call per setting
        bounds = np.cumsum([len(lab) for _, lab in held_rows])[:-1]
        for objective in RANKER_OBJECTIVES:
            booster = fit_ranker(fit, objective, max(RANKER_ROUNDS))
            for rounds in RANKER_ROUNDS:
                predicted = np.split(booster.predict(block, num_iteration=rounds), bounds)
                fold_scores[f"{objective}:{rounds}"] = [
                    _ndcg(p, lab, k) for p, (_, lab) in zip(predicted, held_rows, strict=True)]
        for name, values in fold_scores.items():
            scores[name] += values
            fold_means[name].append(round(float(np.mean(values)), 5))
    results = {name: float(np.mean(v)) for name, v in scores.items()}
    trees = max((n for n in results if ":" in n), key=results.__getitem__)
    contenders = {name: scores[trees if name == "trees" else name]
                  for tier in COMBINER_TIERS for name in tier}
    best, lags = choose_combiner(contenders)
    tuned_w = _coordinate_ascent(rows, n_src, skipped_mask=skip, k=k)
    info.update({"validation_ndcg": {key: round(v, 5) for key, v in results.items()},
                 "check_s": round(time.perf_counter() - t_check, 1),
                 "normalised_search_s": round(t_normalised, 1),
                 "fold_ndcg": fold_means, "folds": N_FOLDS,
                 "lag_in_standard_errors": lags,
                 "tuned_weights": {n: round(float(w), 3) for n, w in zip(names, tuned_w,
                                                                          strict=True)}})
    info["chosen"] = "ranker" if best == "trees" else best
    log.info("served: validation NDCG@%d (%d folds) %s; lag behind the best in standard "
             "errors %s -> %s", k, N_FOLDS, info["validation_ndcg"], lags, best)
    if best == "trees":
        chosen_objective, chosen_rounds = trees.split(":")
        info["ranker"] = {"objective": chosen_objective, "rounds": int(chosen_rounds)}
        ranker = GbdtRanker(fit_ranker(rows, chosen_objective, int(chosen_rounds)), names,
                            info)
        return Combiner(ranker, configured, info)
    if best == "normalised":
        norm_w = _coordinate_ascent(normalised, n_src, skipped_mask=skip, k=k)
        info["normalised_weights"] = {n: round(float(w), 3) for n, w in
                                      zip(names, norm_w, strict=True)}
        return Combiner(BlendRanker(norm_w.tolist(), names, info), configured, info)
    weights = configured if best == "configured" else dict(zip(names, tuned_w.tolist(),
                                                                 strict=True))
    return Combiner(None, weights, info)


class MeanNdcg:
    """Mean NDCG@k over users of the blend ``matrix @ w``, for many ``w`` (the weight
    search asks a few hundred): the mean of :func:`_ndcg` per user, in one pass of
    array operations instead of a sort per user.

    A held-out item's rank is the number of its user's candidates scored above it, plus
    those scored alike that come earlier (the stable sort of :func:`_ndcg`); so only the
    (held-out item, candidate of the same user) pairs are compared, once per ``w``.

    >>> judge = MeanNdcg([np.array([[1.0], [2.0], [3.0]])], [np.array([0.0, 1.0, 0.0])], 10)
    >>> round(judge(np.array([1.0])), 4)  # ranked 2nd: 1 / log2(3)
    0.6309
    """

    def __init__(self, matrices: Sequence[npt.NDArray[np.float64]],
                 labels: Sequence[npt.NDArray[np.float64]], k: int) -> None:
        sizes = np.array([len(lab) for lab in labels], dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self.stack = np.vstack(matrices) if matrices else np.zeros((0, 0))
        flat = np.concatenate(labels) if labels else np.zeros(0)
        positive = np.flatnonzero(flat > 0)
        user = np.repeat(np.arange(len(sizes)), sizes)[positive]
        self.gain = flat[positive]
        self.user = user
        self.n_users = len(sizes)
        # Each held-out item against every candidate of its user.
        self.pair_item = np.repeat(positive, sizes[user])
        self.pair_row = (np.arange(len(self.pair_item))
                         - np.repeat(np.cumsum(sizes[user]) - sizes[user], sizes[user])
                         + np.repeat(starts[user], sizes[user]))
        self.earlier = self.pair_row < self.pair_item
        self.offsets = np.concatenate([[0], np.cumsum(sizes[user])[:-1]]).astype(np.int64)
        self.k = k
        ideal = np.zeros(len(sizes))
        discount = 1.0 / np.log2(np.arange(2, k + 2))
        for n, lab in enumerate(labels):
            top = np.sort(lab)[::-1][:k]
            ideal[n] = float(top @ discount[:len(top)])
        self.ideal = ideal

    def __call__(self, w: npt.NDArray[np.float64]) -> float:
        if self.n_users == 0:
            return float("nan")
        scores = self.stack @ w
        mine, theirs = scores[self.pair_item], scores[self.pair_row]
        above = (theirs > mine) | ((theirs == mine) & self.earlier)
        rank = (np.add.reduceat(above.astype(np.int64), self.offsets) if len(self.offsets)
                else np.zeros(0, dtype=np.int64))
        dcg = np.where(rank < self.k, self.gain / np.log2(rank + 2.0), 0.0)
        per_user = np.bincount(self.user, weights=dcg, minlength=self.n_users)
        ndcg = np.divide(per_user, self.ideal, out=np.zeros(self.n_users),
                         where=self.ideal > 0)
        return float(ndcg.mean())


def _coordinate_ascent(rows: Sequence[tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]],
                       n_src: int, *, skipped_mask: npt.NDArray[np.bool_], k: int,
                       rounds: int = 2) -> npt.NDArray[np.float64]:
    """Blend weights on a grid of 0..1 (step 0.1), one source at a time, a few rounds.

    It starts from the best of "every source alike" and each source alone, and keeps a
    step only for a gain of :data:`MIN_GAIN` (relative): it never does worse than its
    best single source on the users it learns from, and small, noisy gains on a few
    hundred users do not move it (the hybrid's rule in ``offline/models/hybrid.py``).
    """
    quality = MeanNdcg([np.nan_to_num(f[:, :n_src], nan=0.0) for f, _ in rows],
                       [lab for _, lab in rows], k)
    starts = [np.where(skipped_mask, 0.0, 1.0)]
    starts += [np.eye(n_src)[j] for j in range(n_src) if not skipped_mask[j]]
    scored = [(quality(start), n, start) for n, start in enumerate(starts)]
    best, _, w = max(scored, key=lambda t: (t[0], -t[1]))
    grid = np.round(np.arange(0.0, 1.01, 0.1), 2)
    for _ in range(rounds):
        changed = False
        for j in range(n_src):
            if skipped_mask[j]:
                continue
            for value in grid:
                trial = w.copy()
                trial[j] = value
                if not trial.any():
                    continue
                q = quality(trial)
                if q > best * (1 + MIN_GAIN):
                    best, w, changed = q, trial, True
        if not changed:
            break
    return w


def _holdout(split_test: Interactions, fit_part: Interactions) -> dict[str, set[str]]:
    """Held-out items per user known in ``fit_part``, minus what they already had there."""
    seen: dict[str, set[str]] = {}
    for u, i in zip(fit_part.users.tolist(), fit_part.items.tolist(), strict=True):
        seen.setdefault(u, set()).add(i)
    out: dict[str, set[str]] = {}
    for u, i in zip(split_test.users.tolist(), split_test.items.tolist(), strict=True):
        if u in seen and i not in seen[u]:
            out.setdefault(u, set()).add(i)
    return out


def _remainder(full: Interactions, part: Interactions) -> Interactions:
    """The events of ``full`` that are not in ``part`` (a sub-log of it), as a multiset."""
    left = Counter(zip(part.users.tolist(), part.items.tolist(), part.timestamps.tolist(),
                       strict=True))
    keep = np.ones(len(full), dtype=bool)
    for n, key in enumerate(zip(full.users.tolist(), full.items.tolist(),
                                full.timestamps.tolist(), strict=True)):
        if left[key] > 0:
            left[key] -= 1
            keep[n] = False
    return full.subset(keep)


def learn_combiner(world_of: Callable[[Interactions], ServedWorld], train: Interactions, *,
                   protocol: str, random_state: int = 0) -> tuple[Combiner, ServedWorld]:
    """Carve validation from ``train``, build the earlier part's world, learn the combiner;
    then bring the world up to all of ``train`` (see :meth:`ServedWorld.extend`)."""
    fit_part, held_out, how = validation_split(train, protocol, seed=random_state)
    world = world_of(fit_part)
    combiner = fit_combiner(world, _holdout(held_out, fit_part), random_state=random_state)
    combiner.info["validation"] = {"protocol": protocol, **how.as_dict()}
    world.extend(train, _remainder(train, fit_part))
    return combiner, world


def world_trains_sequential(settings: Settings, events: int) -> bool:
    """Whether a world of a log of ``events`` events trains the sequential network."""
    return wants_sequential(settings) and events <= SEQUENTIAL_MAX_EVENTS


class RankerTraining:
    """``streamrec train``'s part of ``served``: the combiner and, where the world trains
    one, the sequential network, both shipped with a model version.

    The world that learns the combiner trains SASRec on the earlier part of the log; the
    combiner learnt its weight (or the trees their splits) from that very network. So
    where the world trains one, that network ships as the version's ``sasrec`` too
    (:meth:`write_sequential`), instead of a second one trained on the whole log: the
    API serves the network whose scores the combiner was fitted on (no skew between the
    features of training and of serving), and SASRec is trained once per ``train``.

    Parameters
    ----------
    settings, dataset, protocol, random_state
        As :func:`train_ranker`.
    keep_sequential
        Keep the world's sequential network for :meth:`write_sequential`.

    ``write_ranker`` must run first (``publish`` calls its extras in order).
    """

    def __init__(self, settings: Settings, dataset: Dataset, *, protocol: str = "temporal",
                 random_state: int = 0, keep_sequential: bool = False) -> None:
        self.settings, self.dataset = settings, dataset
        self.protocol, self.random_state = protocol, random_state
        self.keep_sequential = keep_sequential
        self._sequential_entry: dict[str, Any] | None = None

    def write_ranker(self, folder: Path) -> dict[str, Any]:
        """Learn the combiner and write it into a model version's ``folder``.

        Returns the manifest entry. A ranker (trees, or a normalised blend) goes to
        ``ranker.json`` (data only, read by :func:`online_models.serving.ranker.load_ranker`);
        tuned raw blend weights are reported (set ``STREAMREC_BLEND_WEIGHTS`` to serve them).
        """
        from online_models.serving.ranker import FILE

        t0 = time.perf_counter()
        catalog = catalog_of(self.dataset.interactions, self.dataset.items)
        with world_settings(self.settings) as inner:
            combiner, world = learn_combiner(
                partial(ServedWorld.build, inner, catalog=catalog, protocol=self.protocol),
                self.dataset.interactions, protocol=self.protocol,
                random_state=self.random_state)
            if self.keep_sequential:
                self._keep_sequential(world, folder)
        entry: dict[str, Any] = {"fit_s": time.perf_counter() - t0, "info": combiner.info}
        if combiner.ranker is not None:
            combiner.ranker.save(folder / FILE)
            entry["file"] = FILE
        else:
            entry["weights"] = combiner.weights
        return entry

    def _keep_sequential(self, world: ServedWorld, folder: Path) -> None:
        from offline.train import read_latest, read_manifest

        artifacts = world.settings.artifacts_dir
        latest = read_latest(artifacts)
        if latest is None or world.models.sequential() is None:
            log.warning("served: the world trained no sequential network to ship")
            return
        entry = _carry_files(artifacts / latest, SEQUENTIAL_MODEL, folder)
        # The world's later versions carry the network over from the one that trained it.
        carried = read_manifest(artifacts, latest)["models"].get(SEQUENTIAL_MODEL, {})
        origin = str(carried.get("carried_from", latest))
        trained = read_manifest(artifacts, origin)["models"].get(SEQUENTIAL_MODEL, {})
        entry.update({"params": trained.get("params"), "fit_s": trained.get("fit_s"),
                      "trained_on": "the ranker's validation world (the log before its "
                                    "validation slice)"})
        self._sequential_entry = entry

    def write_sequential(self, folder: Path) -> dict[str, Any]:
        """The manifest entry of the world's network, copied by :meth:`write_ranker`."""
        if self._sequential_entry is None:
            raise DataNotFound("the ranker's world trained no sequential network")
        return self._sequential_entry


def train_ranker(settings: Settings, dataset: Dataset, folder: Path, *,
                 protocol: str = "temporal", random_state: int = 0) -> dict[str, Any]:
    """Learn the combiner on ``dataset`` and write it into a model version's ``folder``
    (:meth:`RankerTraining.write_ranker`); returns the manifest entry."""
    return RankerTraining(settings, dataset, protocol=protocol,
                          random_state=random_state).write_ranker(folder)


class ServedModel:
    """``served`` in the evaluation harness: exactly the pipeline the API runs.

    Parameters
    ----------
    protocol
        How the validation slice is carved from the training log (as the test was).
    random_state
        Seed of the validation sample and the ranker.
    settings
        The serving settings (sources, weights, decay, windows); default: ``Settings()``.
    """

    name = "served"

    def __init__(self, protocol: str = "temporal", random_state: int = 0,
                 settings: Settings | None = None) -> None:
        self.protocol = protocol
        self.random_state = random_state
        self.settings = settings
        self.info_: dict[str, Any] = {}
        self._world: ServedWorld | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    def __repr__(self) -> str:
        return f"ServedModel(protocol={self.protocol!r}, random_state={self.random_state})"

    def fit(self, train: Interactions, items: Sequence[Item] = ()) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
        # One state folder for both worlds: the content index is built once per catalog.
        self._tmp = tempfile.TemporaryDirectory(prefix="streamrec-served-")
        base = (self.settings or Settings()).model_copy(
            update={"state_dir": Path(self._tmp.name)})
        catalog = catalog_of(train, items)
        combiner, world = learn_combiner(partial(ServedWorld.build, base, catalog=catalog,
                                                 protocol=self.protocol),
                                         train, protocol=self.protocol,
                                         random_state=self.random_state)
        world.recommender.weights = dict(combiner.weights)
        ranker = combiner.ranker
        if ranker is not None:
            world.recommender.ranker = lambda: ranker
            world.recommender.ranked_variants = frozenset(world.recommender.assigner.variants)
        self._world = world
        self.info_ = {**combiner.info, "timings": world.timings}

    def tuning_report(self) -> dict[str, Any]:
        """How the sources' combination was chosen (the harness's ``params``)."""
        return dict(self.info_)

    def score(self, user_id: str, item_ids: Sequence[str] | None = None) -> ScoredItems:
        """The served list's items, scored by rank (the pipeline ranks; it does not score
        items it did not choose: those are left out)."""
        if self._world is None:
            raise RuntimeError("fit first")
        ranked = self._world.top(user_id, EVAL_K)
        wanted = None if item_ids is None else set(item_ids)
        kept = [i for i in ranked if wanted is None or i in wanted]
        return ScoredItems(kept, np.arange(len(kept), 0, -1, dtype=np.float64))

    def __del__(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
