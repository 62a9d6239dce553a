"""The evaluation harness: fit each model on each split, rank all items, score.

Full ranking: every user is ranked against every item of the universe (the
training items plus the catalog), minus the user's own training items; no
sampled negatives. Relevant items are the user's test items they had not
already interacted with in training; users left with none are not evaluated.
Batch scorers are scored a block of users at a time (``score_many``); other
scorers row by row through ``score``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from tqdm.auto import tqdm

from core.errors import ConfigurationError
from core.scoring import BatchScorer, Interactions, Scorer
from offline.datasets import Dataset
from offline.evaluation import metrics as m
from offline.evaluation.protocols import Split, splits
from offline.evaluation.ranking import hits_of, relevance_matrix, top_k
from offline.models.base import skip_reason
from offline.models.registry import make_model

__all__ = ["EvaluationResult", "evaluate", "evaluate_split"]

DEFAULT_KS = (1, 5, 10, 20, 50)


@dataclass
class EvaluationResult:
    """Mean metrics per model (over splits) and what the run was."""

    dataset: str
    protocol: str
    k: int
    ks: tuple[int, ...]
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    #: model -> why it was skipped (cannot be fitted, or can score nothing on this data set)
    errors: dict[str, str] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    #: model -> split name -> what the model tuned on its validation split
    params: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_json(self) -> dict[str, dict[str, Any]]:
        """Model name -> metrics, plus ``params`` (what tuning chose, per split) for
        self-tuning models, and ``{"skipped": reason}`` for skipped models (the JSON the
        CLI writes).

        >>> r = EvaluationResult("d", "temporal", 10, (10,), {"ease": {"ndcg@10": 0.1}},
        ...                      {"content": "no item text"}, params={"ease": {"t": {"l2": 5}}})
        >>> r.to_json()["ease"]["params"], r.to_json()["content"]
        ({'t': {'l2': 5}}, {'skipped': 'no item text'})
        """
        out: dict[str, dict[str, Any]] = {}
        for name, res in self.metrics.items():
            out[name] = {**res, **({"params": self.params[name]} if name in self.params
                                   else {})}
        for name, reason in self.errors.items():
            out.setdefault(name, {"skipped": reason})
        return out


def _scores_block(model: Scorer, users: Sequence[str], items: Sequence[str]
                  ) -> npt.NDArray[np.float64]:
    if isinstance(model, BatchScorer):
        return model.score_many(users, items)
    col = {it: j for j, it in enumerate(items)}
    out = np.full((len(users), len(items)), np.nan)
    for r, user in enumerate(users):
        scored = model.score(user, items)
        idx = np.array([col[i] for i in scored.ids], dtype=np.int64)
        if len(idx):
            out[r, idx] = scored.scores
    return out


def _rating_metrics(model: Scorer, train: Interactions, test: Interactions) -> dict[str, float]:
    predict = getattr(model, "predict", None)
    if predict is None or not test.is_rating or not len(test):
        return {}
    pred = np.asarray(predict(test.users, test.items), dtype=np.float64)
    return {"rmse": m.rmse(test.values, pred), "mae": m.mae(test.values, pred)}


def evaluate_split(split: Split, items: Sequence[Any], model_names: Sequence[str], *,
                   protocol: str, ks: Sequence[int], batch_size: int = 512,
                   random_state: int = 0, progress: bool = True,
                   errors: dict[str, str] | None = None,
                   params: dict[str, dict[str, Any]] | None = None,
                   extra_models: Mapping[str, Callable[..., Scorer]] | None = None,
                   ) -> dict[str, dict[str, float]]:
    """Metrics of each model on one split.

    Models that cannot be fitted, or that can score nothing on this data set (see
    :func:`offline.models.base.skip_reason`), are skipped: their reason goes to
    ``errors``. What self-tuning models chose (``tuning_report()``) goes to
    ``params[model][split name]``. ``extra_models`` are factories of models the registry
    cannot build (``served``: the API's pipeline, wired by ``infra``), called like the
    registry's.
    """
    extra = extra_models or {}
    train, test = split.train, split.test
    universe = sorted(set(np.unique(train.items).tolist()) | {i.item_id for i in items})
    i_index = {it: j for j, it in enumerate(universe)}
    users = sorted(set(np.unique(test.users).tolist()))
    u_index = {u: r for r, u in enumerate(users)}
    seen = relevance_matrix(train, u_index, i_index)
    relevant = relevance_matrix(test, u_index, i_index)
    relevant = sp.csr_matrix(relevant - relevant.multiply(seen))
    relevant.eliminate_zeros()
    n_rel = np.asarray(relevant.sum(axis=1)).ravel()
    rows = np.flatnonzero(n_rel > 0)
    eval_users = [users[r] for r in rows]
    seen, relevant, n_rel = sp.csr_matrix(seen[rows]), sp.csr_matrix(relevant[rows]), n_rel[rows]
    # item popularity among training users, for novelty
    all_users = {u: r for r, u in enumerate(sorted(set(np.unique(train.users).tolist())))}
    pop = np.asarray(relevance_matrix(train, all_users, i_index).sum(axis=0)).ravel()
    pop_share = np.maximum(pop, 1) / max(len(all_users), 1)
    k_max = max(ks)
    out: dict[str, dict[str, float]] = {}
    for name in model_names:
        model = (extra[name](protocol=protocol, random_state=random_state) if name in extra
                 else make_model(name, protocol=protocol, random_state=random_state))
        t0 = time.perf_counter()
        try:
            model.fit(train, items)
        except ConfigurationError as exc:
            if errors is not None:
                errors[name] = exc.message
            continue
        fit_s = time.perf_counter() - t0
        reason = skip_reason(model)
        if reason is not None:
            if errors is not None:
                errors[name] = reason
            continue
        report = getattr(model, "tuning_report", None)
        if params is not None and callable(report):
            params.setdefault(name, {})[split.name] = report()
        t0 = time.perf_counter()
        best_blocks = []
        starts = range(0, len(eval_users), batch_size)
        for start in tqdm(starts, desc=f"{split.name} {name}", disable=not progress,
                          leave=False):
            block_users = eval_users[start:start + batch_size]
            scores = _scores_block(model, block_users, universe)
            best_blocks.append(top_k(scores, sp.csr_matrix(seen[start:start + batch_size]),
                                     k_max))
        best = np.vstack(best_blocks) if best_blocks else np.zeros((0, k_max), dtype=np.int64)
        predict_s = time.perf_counter() - t0
        hits = hits_of(best, relevant)
        res: dict[str, float] = {}
        for k in ks:
            h = hits[:, :k]
            res[f"precision@{k}"] = float(m.precision_at_k(h).mean())
            res[f"recall@{k}"] = float(m.recall_at_k(h, n_rel).mean())
            res[f"f1@{k}"] = float(m.f1_at_k(h, n_rel).mean())
            res[f"map@{k}"] = float(m.average_precision_at_k(h, n_rel).mean())
            res[f"ndcg@{k}"] = float(m.ndcg_at_k(h, n_rel).mean())
            res[f"hit_rate@{k}"] = float(m.hit_rate_at_k(h).mean())
            top = best[:, :k]
            shown = top[top >= 0]
            res[f"coverage@{k}"] = float(len(np.unique(shown)) / len(universe))
            res[f"novelty@{k}"] = m.novelty(pop_share[shown])
        res.update(_rating_metrics(model, train, test))
        res["fit_s"] = fit_s
        res["predict_s"] = predict_s
        res["users"] = float(len(eval_users))
        out[name] = res
    return out


def evaluate(dataset: Dataset, model_names: Sequence[str], *, protocol: str, k: int = 10,
             ks: Sequence[int] = DEFAULT_KS, n_folds: int = 5, test_fraction: float = 0.2,
             random_state: int = 0, progress: bool = True,
             extra_models: Mapping[str, Callable[..., Scorer]] | None = None,
             ) -> EvaluationResult:
    """Evaluate models on a data set under a protocol; metrics averaged over splits.

    The flat keys ``coverage`` and ``novelty`` are those at ``k``.
    """
    all_ks = tuple(sorted({*ks, k}))
    result = EvaluationResult(dataset.name, protocol, k, all_ks)
    parts = splits(dataset.interactions, protocol, n_folds=n_folds,
                   test_fraction=test_fraction, random_state=random_state)
    per_split = [
        evaluate_split(s, dataset.items, model_names, protocol=protocol, ks=all_ks,
                       random_state=random_state, progress=progress, errors=result.errors,
                       params=result.params, extra_models=extra_models)
        for s in tqdm(parts, desc="splits", disable=not progress or len(parts) == 1)
    ]
    for name in model_names:
        runs = [p[name] for p in per_split if name in p]
        if not runs:
            continue
        mean = {key: float(np.mean([r[key] for r in runs])) for key in runs[0]}
        mean["coverage"] = mean[f"coverage@{k}"]
        mean["novelty"] = mean[f"novelty@{k}"]
        result.metrics[name] = mean
    result.info = {
        "splits": [s.name for s in parts],
        "train_events": [len(s.train) for s in parts],
        "test_events": [len(s.test) for s in parts],
    }
    return result
