"""Learned ranker: gradient boosted trees over the features of other models.

The ranker re-ranks candidates: the union of each base model's top
``n_candidates`` unseen items for the user. It is trained on the shared
validation split of the training log (base models fitted on its fit part,
labels = the held-out items), then the base models are refitted on the whole
log. Items outside the candidate set are left out (it cannot rank them).

Robustness rules: base models that can score nothing on the data set are dropped
(logged); a third of the validation users is kept out of training, and unless the
trees beat every base model alone on them, the ranker serves the best base model
instead (``fallback_``), so it does not validate below tuned EASE.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from sklearn.ensemble import HistGradientBoostingClassifier

from core.scoring import BatchScorer, Interactions
from core.types import Item, ScoredItems
from offline.evaluation.ranking import mask_seen, relevance_matrix, validation_ndcg
from offline.models.components import (
    combined_report,
    fit_components,
    fit_validation_copies,
)
from offline.models.hybrid import zscore_rows
from offline.models.tuning import ValidationSlice, make_validation_slice

__all__ = ["LearnedRanker"]

FloatMatrix = npt.NDArray[np.float64]

log = logging.getLogger(__name__)


class LearnedRanker:
    """Gradient boosted trees (``HistGradientBoostingClassifier``) over base-model features.

    Features of a (user, candidate) pair: per base model the raw score, the
    per-user z-score and the rank in its top list; the item's log popularity
    and the user's log history length.

    Parameters
    ----------
    base
        Factories of the base scorers, by name.
    n_candidates
        Candidates taken from each base model per user.
    protocol
        How the validation slice is carved (``temporal`` or ``leave-one-out``).
    negatives_per_user
        Negatives sampled per validation user for training (positives all kept).

    >>> from offline.models.popularity import PopularityScorer
    >>> from offline.models.item_knn import ItemKNNScorer
    >>> rng = np.random.default_rng(0)
    >>> log = Interactions.from_records(
    ...     [(f"u{u}", f"i{(u + j) % 12}", 1, j) for u in range(40) for j in range(5)])
    >>> model = LearnedRanker({"pop": PopularityScorer, "knn": ItemKNNScorer}, n_candidates=5)
    >>> model.fit(log)
    >>> len(model.score("u1").top(3))
    3
    """

    name = "ranker"

    def __init__(self, base: dict[str, Callable[[], BatchScorer]], n_candidates: int = 50,
                 protocol: str = "leave-one-out", negatives_per_user: int = 50,
                 max_validation_users: int = 4000, max_iter: int = 200,
                 learning_rate: float = 0.05, check_share: float = 0.33,
                 random_state: int = 0) -> None:
        self.base = base
        self.n_candidates = n_candidates
        self.protocol = protocol
        self.negatives_per_user = negatives_per_user
        self.max_validation_users = max_validation_users
        self.max_iter = max_iter
        self.learning_rate = learning_rate
        self.check_share = check_share
        self.random_state = random_state
        self.models_: dict[str, BatchScorer] = {}
        self.dropped_: dict[str, str] = {}
        self.fallback_: str | None = None
        self.tuning_: dict[str, Any] = {}
        self.classifier_: HistGradientBoostingClassifier | None = None
        self.user_index_: dict[str, int] = {}
        self.item_index_: dict[str, int] = {}
        self.seen_: sp.csr_matrix = sp.csr_matrix((0, 0))
        self.item_pop_: dict[str, float] = {}

    # -- fitting --------------------------------------------------------------------
    def _remember(self, train: Interactions) -> None:
        self.user_index_ = {u: i for i, u in enumerate(sorted(set(train.users.tolist())))}
        self.item_index_ = {it: i for i, it in enumerate(sorted(set(train.items.tolist())))}
        self.seen_ = relevance_matrix(train, self.user_index_, self.item_index_)
        counts = np.asarray(self.seen_.sum(axis=0)).ravel()
        self.item_pop_ = dict(zip(self.item_index_, np.log1p(counts).tolist(), strict=True))

    def fit(self, train: Interactions, items: Sequence[Item] = ()) -> None:
        self.classifier_, self.fallback_, self.tuning_ = None, None, {}
        full, self.dropped_ = fit_components("ranker", self.base, train, items)
        val = make_validation_slice(train, self.protocol, self.max_validation_users,
                                    self.random_state)
        if val is not None and full:
            self.models_ = fit_validation_copies(full, self.base, val.train, items)
            self._remember(val.train)
            self._learn(val)
        self.models_ = full
        self._remember(train)

    def _train(self, feats: FloatMatrix, labels: npt.NDArray[np.bool_],
               among: npt.NDArray[np.bool_], n_users: int, rng: np.random.Generator
               ) -> HistGradientBoostingClassifier | None:
        """Trees fitted on the rows ``among`` (positives all, negatives sampled)."""
        keep = among & (labels | (rng.random(len(labels)) <
                                  self.negatives_per_user * n_users / max(int(among.sum()), 1)))
        if not (labels[keep].any() and (~labels[keep]).any()):
            return None
        clf = HistGradientBoostingClassifier(
            max_iter=self.max_iter, learning_rate=self.learning_rate,
            random_state=self.random_state, early_stopping=False)
        clf.fit(feats[keep], labels[keep])
        return clf

    def _learn(self, val: ValidationSlice) -> None:
        """Train the trees on part of the validation users; on the rest, keep them only if
        they beat every base model alone (else serve the best of those: the fallback).
        Trees that win are refitted on all validation users."""
        rng = np.random.default_rng(self.random_state)
        n = len(val.users)
        check = np.zeros(n, dtype=bool)
        check[rng.permutation(n)[: int(n * self.check_share)]] = True
        rows, cols, feats = self._features(val.users, val.item_ids, val.seen)
        labels = np.asarray(val.relevant[rows, cols]).ravel() > 0
        n_learn = int((~check).sum())
        clf = self._train(feats, labels, ~check[rows], n_learn, rng)
        if clf is None:
            return
        self.classifier_ = clf  # kept for inspection even when a fallback serves
        users = np.flatnonzero(check)
        seen, relevant = val.seen[users], val.relevant[users]
        ranked = np.full((n, len(val.item_ids)), np.nan)
        on_check = check[rows]
        ranked[rows[on_check], cols[on_check]] = clf.predict_proba(feats[on_check])[:, 1]
        quality = {"ranker": validation_ndcg(ranked[users], seen, relevant)}
        check_users = [val.users[u] for u in users]
        for name, model in self.models_.items():
            quality[name] = validation_ndcg(model.score_many(check_users, val.item_ids),
                                            seen, relevant)
        best = max(quality, key=lambda k: (quality[k], k == "ranker"))
        if best == "ranker":
            self.classifier_ = self._train(feats, labels, np.ones(len(rows), dtype=bool), n,
                                           rng) or clf
        else:
            self.fallback_ = best
            log.warning("ranker: %s alone validates better (NDCG@10 %.4f vs %.4f): "
                        "serving it instead", best, quality[best], quality["ranker"])
        self.tuning_ = {"fallback": self.fallback_,
                        "check_validation_ndcg@10": {k: round(v, 5) for k, v in quality.items()},
                        "check_users": len(users), "learn_users": n_learn,
                        "validation": val.info.as_dict()}

    def tuning_report(self) -> dict[str, Any]:
        """Whether the trees serve or a base model does, the check that decided it, what was
        dropped, and the base models' own tuning (EASE's lambda)."""
        return combined_report(self.tuning_, self.models_, self.dropped_)

    # -- features -------------------------------------------------------------------
    def _features(self, users: Sequence[str], item_ids: Sequence[str], seen: sp.csr_matrix
                  ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], FloatMatrix]:
        n, m = len(users), len(item_ids)
        k = min(self.n_candidates, m)
        raw, z, ranks = [], [], []
        candidate = np.zeros((n, m), dtype=bool)
        for model in self.models_.values():
            s = model.score_many(users, item_ids)
            zs = zscore_rows(s)
            masked = mask_seen(zs, seen)
            top = np.argpartition(-masked, k - 1, axis=1)[:, :k]
            top_scores = np.take_along_axis(masked, top, axis=1)
            order = np.argsort(-top_scores, axis=1, kind="stable")
            top = np.take_along_axis(top, order, axis=1)
            ok = np.take_along_axis(top_scores, order, axis=1) > -np.inf
            rank = np.full((n, m), float(k + 1))
            r_idx = np.repeat(np.arange(n), k).reshape(n, k)
            rank[r_idx[ok], top[ok]] = np.tile(np.arange(k, dtype=np.float64), (n, 1))[ok]
            candidate[r_idx[ok], top[ok]] = True
            raw.append(s)
            z.append(zs)
            ranks.append(rank)
        rows, cols = np.nonzero(candidate)
        pop = np.array([self.item_pop_.get(i, 0.0) for i in item_ids])
        hist = np.log1p(np.asarray(seen.sum(axis=1)).ravel())
        columns = [np.nan_to_num(a[rows, cols], nan=-1e3) for a in (*raw, *z)]
        columns += [r[rows, cols] for r in ranks]
        columns += [pop[cols], hist[rows]]
        return rows, cols, np.column_stack(columns)

    def _seen_for(self, users: Sequence[str], item_ids: Sequence[str]) -> sp.csr_matrix:
        rows = np.array([self.user_index_.get(u, -1) for u in users])
        cols = np.array([self.item_index_.get(i, -1) for i in item_ids])
        sub = sp.csr_matrix((len(users), len(item_ids)))
        kr, kc = rows >= 0, cols >= 0
        if kr.any() and kc.any():
            block = self.seen_[rows[kr]][:, cols[kc]]
            full = sp.lil_matrix((len(users), len(item_ids)))
            full[np.ix_(np.flatnonzero(kr), np.flatnonzero(kc))] = block
            sub = sp.csr_matrix(full)
        return sub

    # -- scoring --------------------------------------------------------------------
    def score_many(self, user_ids: Sequence[str], item_ids: Sequence[str]) -> FloatMatrix:
        if self.fallback_ is not None:
            return self.models_[self.fallback_].score_many(user_ids, item_ids)
        out = np.full((len(user_ids), len(item_ids)), np.nan)
        if not self.models_ or not len(item_ids) or not len(user_ids):
            return out
        rows, cols, feats = self._features(user_ids, item_ids,
                                           self._seen_for(user_ids, item_ids))
        if not len(rows):
            return out
        if self.classifier_ is None:  # too little data to learn: mean z-score
            n_models = len(self.models_)
            out[rows, cols] = feats[:, n_models:2 * n_models].mean(axis=1)
        else:
            out[rows, cols] = self.classifier_.predict_proba(feats)[:, 1]
        return out

    def score(self, user_id: str, item_ids: Sequence[str] | None = None) -> ScoredItems:
        ids = sorted(self.item_index_) if item_ids is None else list(item_ids)
        row = self.score_many([user_id], ids)[0]
        ok = ~np.isnan(row)
        return ScoredItems([i for i, keep in zip(ids, ok, strict=True) if keep], row[ok])

    def __repr__(self) -> str:
        return f"LearnedRanker(base={list(self.base)}, n_candidates={self.n_candidates})"
