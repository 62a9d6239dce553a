"""Tuned EASE, its neighbour artifact and ``ease_knn``, ``covisit``, and the robustness
rules of the hybrid and the ranker (start from / fall back to the best component)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from core.errors import DataNotFound
from core.scoring import Interactions, Scorer
from core.types import Item
from offline.models.covisit import CovisitScorer
from offline.models.ease import EASEKNNScorer, EASEScorer, ease_weights, tune_l2
from offline.models.hybrid import HybridScorer
from offline.models.item_knn import ItemKNNScorer
from offline.models.popularity import PopularityScorer
from offline.models.ranker import LearnedRanker
from offline.models.registry import make_model
from online_models.neighbours import ItemNeighbours
from tests.contracts.scorer import ScorerContract, generated_log


class TestCovisit(ScorerContract):
    def make_scorer(self) -> Scorer:
        return CovisitScorer()


class TestEASEKNN(ScorerContract):
    def make_scorer(self) -> Scorer:
        return EASEKNNScorer(k=5, l2=10.0)


class TestTunedEASE(ScorerContract):
    def make_scorer(self) -> Scorer:
        return EASEScorer(l2=None)


def test_ease_weights_match_the_textbook_inverse() -> None:
    rng = np.random.default_rng(0)
    x = (rng.random((50, 12)) < 0.3).astype(float)
    gram = x.T @ x
    p = np.linalg.inv(gram + 7.0 * np.eye(12))
    expected = -p / np.diag(p)
    np.fill_diagonal(expected, 0.0)
    np.testing.assert_allclose(ease_weights(gram, 7.0), expected, atol=1e-10)


def test_registered_ease_tunes_lambda_on_validation_and_reports_it() -> None:
    log = generated_log(n_users=90, per_user=9, seed=4)
    model = make_model("ease", protocol="leave-one-out")
    model.fit(log)
    report = model.tuning_report()  # type: ignore[attr-defined]
    grid = {float(k): v for k, v in report["grid"].items()}
    assert len(grid) >= 7
    # the chosen lambda is the grid point with the best validation NDCG@10
    assert report["l2"] == max(grid, key=lambda lam: (grid[lam], lam))
    assert model.l2_ == report["l2"]  # type: ignore[attr-defined]
    assert report["validation"]["rule"] == "last-timestamp-group"
    # the copy the hybrid scores on validation keeps the chosen value, untuned
    assert model.fixed_copy().l2 == report["l2"]  # type: ignore[attr-defined]


def test_tuning_follows_the_data_not_a_fixed_value() -> None:
    # one log where every item is popular (large Gram diagonal) and one where items are rare
    dense = generated_log(n_users=120, n_items=12, per_user=8, seed=1)
    sparse = generated_log(n_users=60, n_items=60, per_user=6, seed=1)
    chosen = {tune_l2(dense, "leave-one-out")[0], tune_l2(sparse, "leave-one-out")[0]}
    assert len(chosen) == 2


def test_neighbours_are_the_strongest_positive_weights_of_each_row(tmp_path: Path) -> None:
    log = generated_log(n_users=60, seed=2)
    ease = EASEScorer(l2=10.0)
    ease.fit(log)
    nb = ease.neighbours(k=5)
    j = ease.item_index_["i4"]
    row = ease.weights_[j].copy()
    row[j] = -np.inf
    expected = [ease.item_ids_[c] for c in np.argsort(-row, kind="stable")[:5] if row[c] > 0]
    assert nb.neighbours(["i4"], 5)["i4"].ids == expected
    assert nb.neighbours(["i4"], 2)["i4"].ids == expected[:2]
    assert nb.neighbours(["unknown"], 5) == {}
    nb.save(tmp_path / "ease_neighbours")
    with zipfile.ZipFile(tmp_path / "ease_neighbours.npz") as z:  # plain arrays, no pickle
        assert sorted(z.namelist()) == ["item_ids.npy", "rows.npy", "weights.npy"]
    header = json.loads((tmp_path / "ease_neighbours.json").read_text())
    assert header["k"] == 5 and header["meta"]["l2"] == 10.0
    loaded = ItemNeighbours.load(tmp_path / "ease_neighbours")
    assert loaded.neighbours(["i4"], 5)["i4"].ids == expected
    with pytest.raises(DataNotFound):
        ItemNeighbours.load(tmp_path / "missing")


def test_ease_knn_scores_through_the_served_neighbours_only() -> None:
    log = generated_log(n_users=60, seed=3)
    knn = EASEKNNScorer(k=3, l2=10.0)
    knn.fit(log)
    ease = EASEScorer(l2=10.0)
    ease.fit(log)
    lists = ease.neighbours(3).neighbours(ease.item_ids_, 3)
    history = log.items[log.users == "u7"].tolist()
    expected: dict[str, float] = {}
    for anchor in dict.fromkeys(history):
        for item, w in zip(lists[anchor].ids, lists[anchor].scores.tolist(), strict=True):
            expected[item] = expected.get(item, 0.0) + w
    got = knn.score("u7")
    assert sorted(got.ids) == sorted(expected)
    np.testing.assert_allclose([dict(zip(got.ids, got.scores, strict=True))[i]
                                for i in expected], list(expected.values()), rtol=1e-5)


def test_covisit_counts_pairs_within_the_window_like_the_stream() -> None:
    log = Interactions.from_records(
        [("u", "a", 1, 1), ("u", "b", 1, 2), ("u", "c", 1, 3), ("u", "d", 1, 4)])
    both = CovisitScorer(window=2, anchors=1, half_life_s=None)
    both.fit(log)
    c = both.covisits_.toarray()
    ix = both.item_index_
    pairs = {(a, b) for a in "abcd" for b in "abcd" if c[ix[a], ix[b]] > 0}
    assert pairs == {("a", "b"), ("b", "a"), ("a", "c"), ("c", "a"), ("b", "c"), ("c", "b"),
                     ("b", "d"), ("d", "b"), ("c", "d"), ("d", "c")}  # a-d: beyond window 2
    forward = CovisitScorer(window=2, anchors=1, direction="forward", half_life_s=None)
    forward.fit(log)
    f = forward.covisits_.toarray()
    assert f[ix["a"], ix["b"]] == 1 and f[ix["b"], ix["a"]] == 0  # a came first


def test_covisit_decays_old_pairs_and_scores_from_the_last_anchors() -> None:
    log = Interactions.from_records(
        [("u", "a", 1, 0), ("u", "b", 1, 1), ("v", "a", 1, 10), ("v", "c", 1, 11),
         ("w", "x", 1, 12), ("w", "a", 1, 13)])
    model = CovisitScorer(window=1, anchors=1, half_life_s=1.0)
    model.fit(log)
    scored = model.score("w", ["b", "c"])
    assert scored.top(2).ids == ["c", "b"]  # a-c is recent, a-b ten half-lives old
    assert model.score("u", ["c"]).ids == []  # u's anchor b never met c: left out, not 0


def test_hybrid_validates_at_least_as_well_as_its_best_component() -> None:
    log = generated_log(n_users=120, seed=5)
    model = HybridScorer({"pop": PopularityScorer, "knn": lambda: ItemKNNScorer(k=10),
                          "ease": lambda: EASEScorer(l2=10.0)})
    model.fit(log)
    report = model.tuning_report()
    assert report["validation_ndcg@10"] >= max(report["alone_validation_ndcg@10"].values())


def test_ranker_serves_its_best_validated_option() -> None:
    log = generated_log(n_users=90, seed=6)
    model = LearnedRanker({"pop": PopularityScorer, "ease": lambda: EASEScorer(l2=10.0)},
                          n_candidates=10, max_iter=20)
    model.fit(log)
    quality = model.tuning_report()["check_validation_ndcg@10"]
    served = model.fallback_ or "ranker"
    assert quality[served] == max(quality.values())
    if model.fallback_ is not None:
        users, items = ["u1", "u2"], ["i1", "i2", "i3"]
        np.testing.assert_array_equal(model.score_many(users, items),
                                      model.models_[model.fallback_].score_many(users, items))


def test_content_without_item_text_is_dropped_from_the_hybrid_and_the_ranker(
        caplog: pytest.LogCaptureFixture) -> None:
    from offline.models.content import ContentScorer

    log = generated_log(n_users=60, seed=7)
    no_text = [Item(item_id=f"i{j}", name="") for j in range(30)]
    hybrid = HybridScorer({"content": ContentScorer, "ease": lambda: EASEScorer(l2=10.0)})
    with caplog.at_level("WARNING"):
        hybrid.fit(log, no_text)
    assert list(hybrid.models_) == ["ease"] and "content" in hybrid.dropped_
    assert "dropping content (no item text" in caplog.text
    assert hybrid.tuning_report()["dropped"] == {"content": "no item text in this data set"}
    ranker = LearnedRanker({"content": ContentScorer, "knn": lambda: ItemKNNScorer(k=10)},
                           n_candidates=10, max_iter=20)
    ranker.fit(log, no_text)
    assert list(ranker.models_) == ["knn"] and "content" in ranker.dropped_


def test_a_csv_without_items_file_reports_content_as_skipped(tmp_path: Path) -> None:
    from offline.datasets import load_dataset
    from offline.evaluation.harness import evaluate
    from offline.evaluation.report import format_table, plot_curves

    log = generated_log(n_users=60, seed=8)
    lines = ["user_id,item_id,timestamp"] + [
        f"{u},{i},{t}" for u, i, t in zip(log.users, log.items, log.timestamps, strict=True)]
    (tmp_path / "shop.csv").write_text("\n".join(lines) + "\n")
    ds = load_dataset("csv", tmp_path / "shop.csv")
    result = evaluate(ds, ["content", "ease", "hybrid"], protocol="leave-one-out", ks=(5,),
                      k=5, progress=False)
    assert set(result.metrics) == {"ease", "hybrid"}
    assert result.errors == {"content": "no item text in this data set"}
    assert result.to_json()["content"] == {"skipped": "no item text in this data set"}
    assert "| content | skipped: no item text in this data set |" in format_table(result)
    hybrid = result.params["hybrid"]["leave-one-out"]
    assert hybrid["dropped"] == {"content": "no item text in this data set"}
    assert "content" not in hybrid["weights"]
    assert "l2" in result.to_json()["ease"]["params"]["leave-one-out"]
    assert plot_curves(result, tmp_path / "plots")
