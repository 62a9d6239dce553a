"""Every registered offline model passes the shared Scorer contract, plus model specifics."""

from __future__ import annotations

import numpy as np
import pytest

from core.errors import ConfigurationError
from core.scoring import Interactions, Scorer
from core.types import Item
from offline.models.als import ALSScorer
from offline.models.content import ContentScorer
from offline.models.ease import EASEScorer
from offline.models.hybrid import HybridScorer, zscore_rows
from offline.models.item_knn import ItemKNNScorer
from offline.models.popularity import PopularityScorer
from offline.models.ranker import LearnedRanker
from offline.models.registry import MODELS, make_model
from tests.contracts.scorer import ScorerContract, generated_log


class TestPopularity(ScorerContract):
    def make_scorer(self) -> Scorer:
        return PopularityScorer()


class TestTrending(ScorerContract):
    def make_scorer(self) -> Scorer:
        return PopularityScorer(half_life_s=100.0)


class TestItemKNN(ScorerContract):
    def make_scorer(self) -> Scorer:
        return ItemKNNScorer(k=10)


class TestALS(ScorerContract):
    def make_scorer(self) -> Scorer:
        return ALSScorer(factors=4, iterations=5, random_state=3)


class TestEASE(ScorerContract):
    def make_scorer(self) -> Scorer:
        return EASEScorer(l2=10.0)


class TestContent(ScorerContract):
    def make_scorer(self) -> Scorer:
        return ContentScorer()


class TestHybrid(ScorerContract):
    def make_scorer(self) -> Scorer:
        return HybridScorer({"ease": lambda: EASEScorer(l2=10.0), "content": ContentScorer},
                            grid_step=0.5, rounds=1)


class TestRanker(ScorerContract):
    def make_scorer(self) -> Scorer:
        return LearnedRanker({"knn": lambda: ItemKNNScorer(k=10),
                              "ease": lambda: EASEScorer(l2=10.0)},
                             n_candidates=10, max_iter=20)


class TestRegisteredRatingMF(ScorerContract):
    ratings = True

    def make_scorer(self) -> Scorer:
        return make_model("rating_mf")


def test_registry_builds_every_model_by_name() -> None:
    from offline.models.neural import NEURAL_MODELS, torch_missing

    # The neural models exist only with the optional PyTorch extra (tests/test_sasrec.py).
    absent = NEURAL_MODELS if torch_missing() else ()
    for name in (n for n in MODELS if n not in absent):
        model = make_model(name)
        assert isinstance(model, Scorer)


def test_registry_rejects_an_unknown_name() -> None:
    with pytest.raises(ConfigurationError, match="unknown model"):
        make_model("nope")


def test_popularity_ranks_by_distinct_users() -> None:
    log = Interactions.from_records(
        [("u", "a", 1, 0), ("u", "a", 1, 1), ("u", "a", 1, 2), ("v", "b", 1, 3),
         ("w", "b", 1, 4)])
    model = PopularityScorer()
    model.fit(log)
    assert model.score("u").as_dict() == {"a": 1.0, "b": 2.0}


def test_ease_closed_form_matches_a_hand_inverse() -> None:
    log = Interactions.from_records(
        [("u", "a", 1, 0), ("u", "b", 1, 1), ("v", "b", 1, 2), ("v", "c", 1, 3)])
    model = EASEScorer(l2=1.0)
    model.fit(log)
    x = np.array([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]])
    p = np.linalg.inv(x.T @ x + np.eye(3))
    b = -p / np.diag(p)
    np.fill_diagonal(b, 0.0)
    np.testing.assert_allclose(model.score("u", ["a", "b", "c"]).scores, x[0] @ b)


def test_item_knn_scores_are_sums_of_cosines() -> None:
    log = Interactions.from_records(
        [("u", "a", 1, 0), ("u", "b", 1, 1), ("v", "a", 1, 2), ("w", "b", 1, 3)])
    model = ItemKNNScorer(k=5)
    model.fit(log)
    # cos(a, b) = 1 / (sqrt(2) * sqrt(2)) = 0.5; user v has only a
    assert model.score("v", ["b"]).scores[0] == pytest.approx(0.5)


def test_content_scores_catalog_items_nobody_bought() -> None:
    items = [Item("a", "red tea cup"), Item("b", "red tea pot"), Item("c", "garden hose")]
    model = ContentScorer()
    model.fit(Interactions.from_records([("u", "a", 1, 0)]), items)
    scored = model.score("u", ["b", "c"]).as_dict()
    assert scored["b"] > scored["c"]


def test_zscore_rows_ignores_nan() -> None:
    z = zscore_rows(np.array([[2.0, np.nan, 4.0], [1.0, 1.0, 1.0]]))
    np.testing.assert_allclose(z[0, [0, 2]], [-1.0, 1.0])
    assert np.isnan(z[0, 1])
    np.testing.assert_allclose(z[1], 0.0)


def test_hybrid_tunes_weights_on_the_training_log_only() -> None:
    log = generated_log(n_users=60)
    items_seen_by_tuning: list[int] = []

    class Spy(ItemKNNScorer):
        def fit(self, train: Interactions, items: object = ()) -> None:
            items_seen_by_tuning.append(len(train))
            super().fit(train)

    model = HybridScorer({"knn": Spy, "ease": lambda: EASEScorer(l2=10.0)},
                         grid_step=0.5, rounds=1)
    model.fit(log, [])
    # one fit on the full training log, one on the validation split's (smaller) fit part
    assert sorted(items_seen_by_tuning)[0] < sorted(items_seen_by_tuning)[1] == len(log)
    assert len(items_seen_by_tuning) == 2
    assert sum(model.weights_) == pytest.approx(1.0)


def test_ranker_learns_a_classifier_from_the_validation_slice() -> None:
    model = LearnedRanker({"knn": lambda: ItemKNNScorer(k=10), "pop": PopularityScorer},
                          n_candidates=10, max_iter=20)
    model.fit(generated_log(n_users=60), [])
    assert model.classifier_ is not None


def test_content_leaves_out_a_user_whose_items_have_no_text() -> None:
    items = [Item("a", "red tea cup"), Item("b", "")]
    model = ContentScorer()
    model.fit(Interactions.from_records([("u", "b", 1, 0), ("v", "a", 1, 1)]), items)
    assert len(model.score("u")) == 0
    assert model.score("v").ids == ["a"]
