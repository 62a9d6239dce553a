"""The shared contract every Scorer passes (LensKit's ScorerTests, implicit's mixin).

Subclass :class:`ScorerContract` in a ``Test...`` class and implement
``make_scorer``; set ``ratings = True`` for models that need explicit ratings.
"""

from __future__ import annotations

import copy
import pickle
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

from core.scoring import BatchScorer, Interactions, Scorer
from core.types import Item

WORDS = ["red", "blue", "green", "tea", "cup", "pot", "lamp", "candle", "box", "bag"]


def generated_items(n_items: int = 30) -> list[Item]:
    """Items with short texts drawn from a small vocabulary (deterministic)."""
    rng = np.random.default_rng(1)
    return [Item(item_id=f"i{j}", name=" ".join(rng.choice(WORDS, 3).tolist()),
                 category=f"cat{j % 4}") for j in range(n_items)]


def generated_log(n_users: int = 40, n_items: int = 30, per_user: int = 8,
                  ratings: bool = False, seed: int = 0) -> Interactions:
    """A log with structure: users prefer items of their own taste group."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        group = u % 3
        pool = [j for j in range(n_items) if j % 3 == group]
        chosen = rng.choice(pool, size=min(per_user - 2, len(pool)), replace=False).tolist()
        chosen += rng.choice(n_items, size=2, replace=False).tolist()
        for t, j in enumerate(chosen):
            value = float(rng.integers(3, 6) if j % 3 == group else rng.integers(1, 3))
            rows.append((f"u{u}", f"i{j}", value if ratings else 1.0, float(u * 100 + t)))
    return Interactions.from_records(rows, is_rating=ratings)


def state_fingerprint(obj: Any, depth: int = 0) -> list[tuple[str, bytes]]:
    """Bytes of every array and plain value reachable from a model's attributes."""
    out: list[tuple[str, bytes]] = []
    if depth > 4:
        return out
    if isinstance(obj, np.ndarray):
        return [("array", obj.tobytes() + str(obj.shape).encode())]
    if sp.issparse(obj):
        m = sp.csr_matrix(obj)
        return [("sparse", m.data.tobytes() + m.indices.tobytes() + m.indptr.tobytes())]
    if isinstance(obj, (str, int, float, bool, type(None))):
        return [("value", repr(obj).encode())]
    if isinstance(obj, dict):
        for key, value in obj.items():
            out += [(f"{key}.{p}", b) for p, b in state_fingerprint(value, depth + 1)]
        return out
    if isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            out += [(f"{i}.{p}", b) for p, b in state_fingerprint(value, depth + 1)]
        return out
    if callable(obj) and not hasattr(obj, "__dict__"):
        return out
    if hasattr(obj, "__dict__"):
        for key, value in vars(obj).items():
            if callable(value) and not hasattr(value, "fit"):
                continue
            out += [(f"{key}.{p}", b) for p, b in state_fingerprint(value, depth + 1)]
        return out
    try:
        return [("pickle", pickle.dumps(obj))]
    except Exception:
        return out


class ScorerContract:
    """Behaviour every Scorer must show; subclasses provide ``make_scorer``."""

    ratings = False

    def make_scorer(self) -> Scorer:
        raise NotImplementedError

    @pytest.fixture
    def log(self) -> Interactions:
        return generated_log(ratings=self.ratings)

    @pytest.fixture
    def items(self) -> list[Item]:
        return generated_items()

    @pytest.fixture
    def fitted(self, log: Interactions, items: list[Item]) -> Scorer:
        model = self.make_scorer()
        model.fit(log, items)
        return model

    def test_is_a_scorer_with_a_name(self) -> None:
        model = self.make_scorer()
        assert isinstance(model, Scorer)
        assert isinstance(model.name, str) and model.name

    def test_scores_a_known_user_over_known_items(self, fitted: Scorer) -> None:
        scored = fitted.score("u1")
        assert len(scored) > 0
        assert len(set(scored.ids)) == len(scored.ids)
        assert set(scored.ids) <= {f"i{j}" for j in range(30)}

    def test_scores_are_finite(self, fitted: Scorer) -> None:
        for user in ("u0", "u1", "u2", "u7"):
            assert np.isfinite(fitted.score(user).scores).all()

    def test_unknown_user_is_left_out_unless_not_personalised(self, fitted: Scorer) -> None:
        scored = fitted.score("nobody-knows-me")
        if getattr(fitted, "personalised", True):
            assert len(scored) == 0
        else:
            assert np.isfinite(scored.scores).all()

    def test_unknown_item_is_left_out_not_scored_zero(self, fitted: Scorer) -> None:
        scored = fitted.score("u1", ["i1", "no-such-item", "i2"])
        assert "no-such-item" not in scored
        assert set(scored.ids) <= {"i1", "i2"}

    def test_requested_items_keep_their_scores(self, fitted: Scorer) -> None:
        scored = fitted.score("u1", ["i3", "i4"])
        assert set(scored.ids) <= {"i3", "i4"}
        assert np.isfinite(scored.scores).all()

    def test_scoring_does_not_change_the_model(self, fitted: Scorer) -> None:
        before = state_fingerprint(fitted)
        assert before
        fitted.score("u1")
        fitted.score("nobody")
        if isinstance(fitted, BatchScorer):
            fitted.score_many(["u1", "nobody"], ["i1", "zz"])
        assert state_fingerprint(fitted) == before

    def test_fit_is_deterministic(self, log: Interactions, items: list[Item]) -> None:
        a, b = self.make_scorer(), self.make_scorer()
        a.fit(log, items)
        b.fit(copy.deepcopy(log), items)
        sa, sb = a.score("u1"), b.score("u1")
        assert sa.ids == sb.ids
        np.testing.assert_allclose(sa.scores, sb.scores, rtol=1e-6, atol=1e-9)

    def test_score_many_matches_score_and_marks_unknown_with_nan(
            self, fitted: Scorer) -> None:
        if not isinstance(fitted, BatchScorer):
            pytest.skip("not a batch scorer")
        items = ["i1", "i2", "no-such-item"]
        matrix = fitted.score_many(["u1", "nobody"], items)
        assert matrix.shape == (2, 3)
        assert np.isnan(matrix[0, 2])
        single = fitted.score("u1", items).as_dict()
        for j, item in enumerate(items):
            if item in single:
                assert matrix[0, j] == pytest.approx(single[item])
            else:
                assert np.isnan(matrix[0, j])
        if getattr(fitted, "personalised", True):
            assert np.isnan(matrix[1]).all()
