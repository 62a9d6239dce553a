"""`served`: the API's pipeline evaluated offline, and its learned combiner shipped to serving."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from core.ports import RecRequest
from core.settings import Settings
from infra.served import ServedModel, ServedWorld, catalog_of, train_ranker
from offline.datasets import Dataset
from offline.evaluation.harness import evaluate
from online_models.serving.pipeline import normalised_blend
from online_models.serving.ranker import (
    BLEND_FORMAT,
    BlendRanker,
    load_ranker,
    ranker_features,
)
from tests.contracts.scorer import generated_items, generated_log


@pytest.fixture(scope="module")
def shop() -> Dataset:
    return Dataset("toy", generated_log(n_users=120, n_items=40, per_user=10),
                   generated_items(40))


def test_served_is_measured_in_the_same_table_as_the_other_models(shop: Dataset) -> None:
    result = evaluate(shop, ["popularity", "served"], protocol="leave-one-out", k=10,
                      progress=False, extra_models={"served": ServedModel})
    assert set(result.metrics) == {"popularity", "served"}
    assert result.metrics["served"]["ndcg@10"] > 0


def test_the_world_replays_the_log_through_the_stream_processor(shop: Dataset,
                                                                tmp_path: Path) -> None:
    log = shop.interactions
    world = ServedWorld.build(Settings(state_dir=tmp_path), log,
                              catalog=catalog_of(log, shop.items))
    assert world.state.counters()["events.total"] == len(log)
    user = str(log.users[0])
    seen = {str(i) for u, i in zip(log.users, log.items, strict=True) if str(u) == user}
    top = world.top(user, 5)
    assert len(top) == 5 and not set(top) & seen  # bought items are not shown again


def test_the_shipped_ranker_reads_back_as_data_and_scores_like_the_trained_one(
        shop: Dataset, tmp_path: Path) -> None:
    entry = train_ranker(Settings(state_dir=tmp_path / "s"), shop, tmp_path,
                         protocol="leave-one-out")
    info = entry["info"]
    assert info["validation"]["rule"] == "last-timestamp-group"
    assert info["chosen"] in {"ranker", "tuned", "configured", "normalised"}
    if "file" not in entry:
        pytest.skip(f"weights won on validation ({info['validation_ndcg']}): weights ship")
    path = tmp_path / entry["file"]
    assert b"pickle" not in path.read_bytes()
    loaded = load_ranker(path)
    matrix = np.array([[0.5, np.nan, 0.1], [1.0, 0.2, np.nan]])
    world = ServedWorld.build(Settings(state_dir=tmp_path / "w"), shop.interactions,
                              catalog=catalog_of(shop.interactions, shop.items))
    ctx = world.recommender.context(RecRequest("u1", 5))
    full = np.full((2, len(loaded.sources)), np.nan)
    full[:, :3] = matrix
    if isinstance(loaded, BlendRanker):
        assert info["chosen"] == "normalised"
        assert json.loads(path.read_text())["format"] == BLEND_FORMAT
        np.testing.assert_array_equal(loaded.rank(full, ctx),
                                      normalised_blend(full, loaded.weights))
        return
    assert info["chosen"] == "ranker"
    assert json.loads(path.read_text())["format"].startswith("streamrec.gbdt-ranker")
    np.testing.assert_array_equal(loaded.rank(full, ctx),
                                  loaded.booster.predict(ranker_features(full, ctx)))


def test_training_and_serving_compute_the_same_features(shop: Dataset, tmp_path: Path) -> None:
    """The ranker is trained on ``world.matrices`` and serves on the pipeline's own score
    matrix: for one request both are ``ranker_features`` of the same numbers."""
    log = shop.interactions
    world = ServedWorld.build(Settings(state_dir=tmp_path), log,
                              catalog=catalog_of(log, shop.items))
    user = str(log.users[3])
    (_, ids, trained), = list(world.matrices([user], 20))
    ctx, scored = world.recommender.candidates(RecRequest(user, 20))
    assert scored.ids == ids
    np.testing.assert_array_equal(ranker_features(scored.matrix, ctx), trained)


def test_the_weight_search_never_ends_below_its_best_single_source() -> None:
    from infra.served import _coordinate_ascent, _ndcg

    rng = np.random.default_rng(0)
    rows = []
    for _ in range(40):
        labels = (rng.random(30) < 0.1).astype(float)
        labels[0] = 1.0
        good = labels + rng.normal(0, 0.05, 30)  # source 1 knows the answer
        rows.append((np.column_stack([rng.random(30), good, rng.random(30)]), labels))
    w = _coordinate_ascent(rows, 3, skipped_mask=np.zeros(3, bool), k=10)

    def quality(weights: np.ndarray) -> float:
        return float(np.mean([_ndcg(f @ weights, lab, 10) for f, lab in rows]))

    assert quality(w) >= quality(np.eye(3)[1]) - 1e-12
    assert w[1] > 0


def test_the_sequential_network_is_trained_once_and_kept_as_the_world_goes_on(
        shop: Dataset, tmp_path: Path) -> None:
    """Where PyTorch imports and the settings name ``sequential``, the world trains SASRec
    on its log and the source scores with it; the final world keeps that network (the
    combiner learnt its weight from it), while ALS and EASE are retrained."""
    pytest.importorskip("torch")
    from infra.served import _remainder
    from offline.evaluation.validation import validation_split

    log = shop.interactions
    fit_part, _, _ = validation_split(log, "leave-one-out")
    world = ServedWorld.build(Settings(state_dir=tmp_path), fit_part,
                              catalog=catalog_of(log, shop.items), protocol="leave-one-out",
                              sequential_budget_s=20.0)
    network = world.models.sequential()
    assert network is not None and "sasrec_fit_s" in world.timings
    version = world.models.version
    world.extend(log, _remainder(log, fit_part))
    assert world.models.version != version
    kept = world.models.sequential()
    assert kept is not None
    np.testing.assert_array_equal(kept.arrays["item_embeddings"],
                                  network.arrays["item_embeddings"])
    _ctx, scored = world.recommender.candidates(RecRequest(str(log.users[0]), 10))
    assert scored.known[:, scored.names.index("sequential")].any()


def test_without_the_sequential_source_no_network_is_trained(shop: Dataset,
                                                             tmp_path: Path) -> None:
    settings = Settings(state_dir=tmp_path, sources=["covisit", "ease", "popularity"],
                        blend_weights={"covisit": 1.0})
    world = ServedWorld.build(settings, shop.interactions,
                              catalog=catalog_of(shop.interactions, shop.items))
    assert world.models.sequential() is None and "sasrec_fit_s" not in world.timings
