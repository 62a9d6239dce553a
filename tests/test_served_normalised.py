"""The normalised blend: the request's z-scored source columns, weighted; the same code in
the API's pipeline and in ``served``'s combiner choice."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from core.errors import DataNotFound
from core.ports import RecRequest
from core.settings import Settings
from infra.served import ServedWorld, catalog_of, choose_combiner
from offline.datasets import Dataset
from online_models.serving.pipeline import normalised_blend, normalised_columns, zscore_columns
from online_models.serving.ranker import BLEND_FORMAT, BlendRanker, GbdtRanker, load_ranker
from tests.contracts.scorer import generated_items, generated_log

NAN = np.nan


def test_a_column_is_z_scored_over_the_candidates_its_source_scored_only() -> None:
    matrix = np.array([[1.0, 0.9], [3.0, NAN], [5.0, NAN], [NAN, 0.1]])
    z = zscore_columns(matrix)
    np.testing.assert_allclose(z[:3, 0], (np.array([1.0, 3.0, 5.0]) - 3.0) / np.std([1, 3, 5]))
    np.testing.assert_allclose(z[[0, 3], 1], [1.0, -1.0])  # mean 0.5 of its two, not of four
    assert np.isnan(z[3, 0]) and np.isnan(z[1, 1]) and np.isnan(z[2, 1])


def test_a_source_that_cannot_score_a_candidate_adds_nothing_to_it_never_a_score() -> None:
    """NaN (cannot score) stays out of the sum: the candidate's blend is that of the sources
    that could score it, as if the missing source's weight were 0 for that row only."""
    matrix = np.array([[0.2, 0.9], [0.8, NAN], [0.5, 0.1]])
    w = np.array([0.7, 0.3])
    z = zscore_columns(matrix)
    blend = normalised_blend(matrix, w)
    assert blend[1] == pytest.approx(w[0] * z[1, 0])
    np.testing.assert_allclose(blend[[0, 2]], z[[0, 2]] @ w)
    assert not np.isnan(normalised_columns(matrix)).any()


def test_a_source_that_scored_no_candidate_changes_no_order() -> None:
    matrix = np.array([[0.2, NAN], [0.8, NAN], [0.5, NAN]])
    np.testing.assert_array_equal(normalised_blend(matrix, np.array([1.0, 5.0])),
                                  normalised_blend(matrix, np.array([1.0, 0.0])))


def test_a_column_without_spread_scores_zero_where_it_scored() -> None:
    z = zscore_columns(np.array([[0.4, NAN], [0.4, 0.7], [0.4, NAN]]))
    assert z[:, 0].tolist() == [0.0, 0.0, 0.0]
    assert z[1, 1] == 0.0 and np.isnan(z[0, 1])


def test_the_blend_ignores_each_source_s_own_scale() -> None:
    """The point of the normalisation: a source's weight weighs its order in the request,
    whatever the range its scores come in."""
    rng = np.random.default_rng(1)
    matrix = rng.random((20, 3))
    matrix[rng.random((20, 3)) < 0.3] = NAN
    rescaled = matrix * np.array([10.0, 0.01, 1.0]) + np.array([5.0, -2.0, 0.0])
    w = np.array([0.2, 0.5, 0.3])
    np.testing.assert_allclose(normalised_blend(rescaled, w), normalised_blend(matrix, w))


def test_an_empty_request_blends_to_nothing() -> None:
    assert normalised_blend(np.empty((0, 3)), np.ones(3)).shape == (0,)


@pytest.fixture(scope="module")
def shop() -> Dataset:
    return Dataset("toy", generated_log(n_users=80, n_items=40, per_user=10),
                   generated_items(40))


def test_the_api_ranks_a_blend_ranker_s_candidates_by_the_harness_s_function(
        shop: Dataset, tmp_path: Path) -> None:
    """``served`` learns the normalised weights on ``normalised_columns`` of the pipeline's
    score matrices; the pipeline serves them through ``BlendRanker.rank`` in ``_rank``:
    for one request, the order served is the order of ``normalised_blend`` of the very
    matrix the combiner is trained on."""
    log = shop.interactions
    world = ServedWorld.build(Settings(state_dir=tmp_path), log,
                              catalog=catalog_of(log, shop.items))
    names = world.recommender.names
    rng = np.random.default_rng(0)
    weights = rng.random(len(names))
    world.recommender.ranker = lambda: BlendRanker(weights.tolist(), names)
    world.recommender.ranked_variants = frozenset(world.recommender.assigner.variants)
    user = str(log.users[5])
    _, scored = world.recommender.candidates(RecRequest(user, 10))
    expected = normalised_columns(scored.matrix) @ weights
    order = np.argsort(-expected, kind="stable")[:10]
    served = world.recommender.run(RecRequest(user, 10)).items
    assert [r.item.item_id for r in served] == [scored.ids[j] for j in order.tolist()]
    np.testing.assert_allclose([r.score for r in served], expected[order])


def test_a_blend_file_and_a_tree_file_each_read_back_as_their_own_kind(tmp_path: Path) -> None:
    lightgbm = pytest.importorskip("lightgbm")
    blend = BlendRanker([0.5, 0.25], ["ease", "covisit"], {"chosen": "normalised"})
    blend.save(tmp_path / "blend.json")
    assert json.loads((tmp_path / "blend.json").read_text())["format"] == BLEND_FORMAT
    back = load_ranker(tmp_path / "blend.json")
    assert isinstance(back, BlendRanker)
    assert back.sources == ("ease", "covisit") and back.weights.tolist() == [0.5, 0.25]
    rng = np.random.default_rng(0)
    x, y = rng.random((200, 9)), (rng.random(200) < 0.3).astype(float)
    booster = lightgbm.train({"objective": "binary", "verbose": -1}, lightgbm.Dataset(x, y),
                             num_boost_round=3)
    GbdtRanker(booster, ["ease", "covisit"]).save(tmp_path / "trees.json")
    assert isinstance(load_ranker(tmp_path / "trees.json"), GbdtRanker)
    (tmp_path / "other.json").write_text(json.dumps({"format": "something/9"}))
    with pytest.raises(DataNotFound):
        load_ranker(tmp_path / "other.json")
    with pytest.raises(DataNotFound):
        load_ranker(tmp_path / "missing.json")


def test_a_blend_needs_one_weight_per_source() -> None:
    with pytest.raises(ValueError, match="weights"):
        BlendRanker([1.0], ["ease", "covisit"])


def _users(mean: float, n: int = 400, seed: int = 0) -> np.ndarray:
    return np.clip(np.random.default_rng(seed).normal(mean, 0.3, n), 0.0, 1.0)


#: +-1 per user, mean exactly 0: per-user noise whose size the test controls.
ALTERNATING = np.resize([1.0, -1.0], 400)


def test_a_more_flexible_combiner_within_noise_of_the_best_is_passed_over() -> None:
    """Trees 0.002 better on average, per-user differences of +-0.3 (standard error
    0.015): the gain is noise, the configured weights are served."""
    base = _users(0.3)
    per_user = {"configured": base, "tuned": base + 0.001 + 0.01 * ALTERNATING,
                "normalised": base, "trees": base + 0.002 + 0.3 * ALTERNATING}
    chosen, lags = choose_combiner(per_user)
    assert chosen == "configured"
    assert lags["trees"] == 0.0 and 0.0 < lags["configured"] <= 1.0


def test_a_combiner_clearly_better_than_the_simpler_ones_is_chosen() -> None:
    base = _users(0.3)
    per_user = {"configured": base, "tuned": base + 0.01 * ALTERNATING,
                "normalised": base, "trees": base + 0.05 + 0.1 * ALTERNATING}
    chosen, lags = choose_combiner(per_user)
    assert chosen == "trees"
    assert min(lags["configured"], lags["tuned"], lags["normalised"]) > 1.0


def test_within_a_tier_the_better_of_the_two_weight_searches_is_chosen() -> None:
    """Both weight searches come within noise of the trees, the configured weights do
    not: the better of the two is served."""
    base = _users(0.3)
    per_user = {"configured": base, "tuned": base + 0.02 + 0.01 * ALTERNATING,
                "normalised": base + 0.03, "trees": base + 0.031 + 0.3 * ALTERNATING}
    chosen, lags = choose_combiner(per_user)
    assert chosen == "normalised"
    assert lags["configured"] > 1.0 and lags["tuned"] <= 1.0


def test_served_reports_its_candidates_recall_and_each_fold_and_serves_what_it_chose(
        shop: Dataset) -> None:
    """The choice is reported with what it rests on (the share of held-out items among the
    candidates, every combiner's figure in every fold, each one's lag in standard errors),
    the chosen one is the least flexible within one standard error, and the evaluated
    pipeline ranks with it."""
    from infra.served import COMBINER_TIERS, N_FOLDS, ServedModel

    model = ServedModel(protocol="leave-one-out")
    model.fit(shop.interactions, shop.items)
    info = model.tuning_report()
    assert 0.0 < info["candidate_recall"] <= 1.0
    assert all(len(v) == N_FOLDS for v in info["fold_ndcg"].values())
    assert {"configured", "tuned", "normalised"} <= set(info["fold_ndcg"])
    lags = info["lag_in_standard_errors"]
    assert set(lags) == {name for tier in COMBINER_TIERS for name in tier}
    chosen = "trees" if info["chosen"] == "ranker" else info["chosen"]
    assert lags[chosen] <= 1.0
    simpler = [name for tier in COMBINER_TIERS[:next(
        n for n, tier in enumerate(COMBINER_TIERS) if chosen in tier)] for name in tier]
    assert all(lags[name] > 1.0 for name in simpler)
    recommender = model._world.recommender if model._world is not None else None
    assert recommender is not None
    served = recommender.ranker() if recommender.ranker is not None else None
    if chosen == "normalised":
        assert isinstance(served, BlendRanker)
    elif chosen == "trees":
        assert isinstance(served, GbdtRanker)
    else:
        assert served is None


def test_the_weight_search_s_fast_ndcg_equals_the_per_user_one() -> None:
    """``MeanNdcg`` (array operations over held-out/candidate pairs) is the mean of
    ``_ndcg`` per user: ties broken by row order, several held-out items per user, fewer
    candidates than k, graded labels."""
    from infra.served import MeanNdcg, _ndcg

    rng = np.random.default_rng(3)
    matrices, labels = [], []
    for n in rng.integers(3, 40, size=60).tolist():
        matrices.append(rng.integers(0, 4, size=(n, 3)).astype(float))  # many ties
        lab = (rng.random(n) < 0.15).astype(float) * rng.choice([1.0, 2.0], n)
        lab[rng.integers(n)] = 1.0
        labels.append(lab)
    judge = MeanNdcg(matrices, labels, 10)
    for w in (np.array([1.0, 0.0, 0.0]), np.array([0.3, 0.5, 0.2]), np.zeros(3),
              rng.random(3)):
        expected = np.mean([_ndcg(m @ w, lab, 10) for m, lab in
                            zip(matrices, labels, strict=True)])
        assert judge(w) == pytest.approx(expected, abs=1e-12)
