"""Rating models on generated low-rank ratings (MovieLens is research-only, so not used here)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from core.errors import ConfigurationError, NotFound
from core.scoring import BatchScorer, Interactions, Scorer
from offline.models.rating import (
    BiasedALS,
    ItemKNNBaseline,
    RatingBlend,
    RatingModel,
    RiverBiasedMF,
    SVDRegressor,
)

Factory = Callable[[], RatingModel]

FACTORIES: dict[str, Factory] = {
    "river_biased_mf": lambda: RiverBiasedMF(n_factors=5, epochs=30, learning_rate=0.02, seed=3),
    "svd": lambda: SVDRegressor(n_factors=5, epochs=30, learning_rate=0.02, seed=3),
    "biased_als": lambda: BiasedALS(n_factors=5, iterations=10, seed=3),
    "item_knn_baseline": lambda: ItemKNNBaseline(k=20),
    "rating_blend": lambda: RatingBlend(
        [BiasedALS(n_factors=5, iterations=10), ItemKNNBaseline(k=20)], seed=3
    ),
}
SEEDED = ["river_biased_mf", "svd", "biased_als", "rating_blend"]


def make_ratings(
    n_users: int = 150, n_items: int = 100, rank: int = 3, density: float = 0.35, seed: int = 0
) -> tuple[Interactions, Interactions]:
    """A 1..5 ratings matrix = mean + biases + rank-3 product + noise, split 80/20."""
    rng = np.random.default_rng(seed)
    u_f = rng.normal(0.0, 0.6, (n_users, rank))
    i_f = rng.normal(0.0, 0.6, (n_items, rank))
    truth = 3.4 + rng.normal(0, 0.3, (n_users, 1)) + rng.normal(0, 0.3, (1, n_items)) + u_f @ i_f.T
    users, items = np.nonzero(rng.random((n_users, n_items)) < density)
    ratings = np.clip(truth[users, items] + rng.normal(0.0, 0.25, len(users)), 1.0, 5.0)
    test = rng.random(len(users)) < 0.2

    def part(mask: np.ndarray) -> Interactions:
        return Interactions(
            np.char.add("u", users[mask].astype(str)),
            np.char.add("i", items[mask].astype(str)),
            ratings[mask],
            np.zeros(int(mask.sum())),
            is_rating=True,
        )

    return part(~test), part(test)


@pytest.fixture(scope="module")
def data() -> tuple[Interactions, Interactions]:
    return make_ratings()


@pytest.fixture(scope="module")
def fitted(data: tuple[Interactions, Interactions]) -> dict[str, RatingModel]:
    models: dict[str, RatingModel] = {}
    for name, factory in FACTORIES.items():
        model = factory()
        model.fit(data[0])
        models[name] = model
    return models


def rmse(pred: np.ndarray, truth: np.ndarray) -> float:
    return float(np.sqrt(np.mean((pred - truth) ** 2)))


@pytest.mark.parametrize("name", FACTORIES)
def test_model_beats_global_mean_rmse_on_low_rank_ratings(
    name: str, data: tuple[Interactions, Interactions], fitted: dict[str, RatingModel]
) -> None:
    train, test = data
    baseline = rmse(np.full(len(test), train.values.mean()), test.values)
    model = fitted[name]
    assert rmse(model.predict(test.users, test.items), test.values) < 0.75 * baseline


@pytest.mark.parametrize("name", FACTORIES)
def test_model_implements_the_batch_scorer_protocol(
    name: str, fitted: dict[str, RatingModel]
) -> None:
    assert isinstance(fitted[name], Scorer) and isinstance(fitted[name], BatchScorer)


@pytest.mark.parametrize("name", FACTORIES)
def test_score_many_agrees_with_predict_and_holds_nan_for_unknowns(
    name: str, fitted: dict[str, RatingModel]
) -> None:
    model = fitted[name]
    users, items = ["u2", "nobody", "u9"], ["i4", "i1", "no-such-item", "i30"]
    block = model.score_many(users, items)
    assert block.shape == (3, 4)
    assert np.isnan(block[1]).all() and np.isnan(block[:, 2]).all()
    known = np.array(
        [[model.predict(np.array([u]), np.array([i]))[0] for i in items] for u in users]
    )
    for r in (0, 2):
        np.testing.assert_allclose(block[r, [0, 1, 3]], known[r, [0, 1, 3]])


@pytest.mark.parametrize("name", SEEDED)
def test_fit_with_the_same_seed_gives_the_same_predictions(
    name: str, data: tuple[Interactions, Interactions], fitted: dict[str, RatingModel]
) -> None:
    train, test = data
    again = FACTORIES[name]()
    again.fit(train)
    first = fitted[name].predict(test.users, test.items)
    np.testing.assert_array_equal(again.predict(test.users, test.items), first)


@pytest.mark.parametrize("factory", [RiverBiasedMF, SVDRegressor, BiasedALS])
def test_fit_with_another_seed_gives_other_factors(
    factory: Callable[..., RiverBiasedMF | SVDRegressor | BiasedALS],
    data: tuple[Interactions, Interactions],
) -> None:
    a, b = factory(n_factors=3, seed=1), factory(n_factors=3, seed=2)
    a.fit(data[0])
    b.fit(data[0])
    assert not np.allclose(a.item_factors_, b.item_factors_)


@pytest.mark.parametrize("name", FACTORIES)
def test_score_leaves_out_unknown_items_and_users(
    name: str, fitted: dict[str, RatingModel]
) -> None:
    model = fitted[name]
    scored = model.score("u1", ["i2", "no-such-item", "i0"])
    assert scored.ids == ["i2", "i0"]
    assert len(model.score("no-such-user", ["i2"])) == 0
    assert len(model.score("u1", ["no-such-item"])) == 0


@pytest.mark.parametrize("name", FACTORIES)
def test_score_of_all_items_agrees_with_predict(name: str, fitted: dict[str, RatingModel]) -> None:
    model = fitted[name]
    scored = model.score("u7")
    assert sorted(scored.ids) == sorted(model.item_ids_)
    pred = model.predict(np.full(len(scored), "u7"), np.array(scored.ids))
    np.testing.assert_allclose(scored.scores, pred)


@pytest.mark.parametrize("name", [n for n in FACTORIES if n != "rating_blend"])
def test_predict_falls_back_to_mean_and_known_biases_for_unknowns(
    name: str, fitted: dict[str, RatingModel]
) -> None:
    model = fitted[name]
    assert isinstance(model, RiverBiasedMF | SVDRegressor | BiasedALS | ItemKNNBaseline)
    pred = model.predict(np.array(["new", "new", "u4"]), np.array(["new", "i9", "new"]))
    mu = model.global_mean_
    item_bias = model.item_bias_[model.item_ids_.index("i9")]
    user_bias = model.user_bias_[model.user_ids_.index("u4")]
    np.testing.assert_allclose(pred, [mu, mu + item_bias, mu + user_bias])


def test_blend_predicts_a_rating_in_range_for_unknown_pairs(fitted: dict[str, RatingModel]) -> None:
    pred = fitted["rating_blend"].predict(np.array(["new", "u1"]), np.array(["i1", "new"]))
    assert np.all(np.isfinite(pred)) and np.all((pred >= 1.0) & (pred <= 5.0))


def test_blend_is_no_worse_than_its_best_component(
    data: tuple[Interactions, Interactions], fitted: dict[str, RatingModel]
) -> None:
    test = data[1]
    blend = rmse(fitted["rating_blend"].predict(test.users, test.items), test.values)
    best = min(
        rmse(fitted[n].predict(test.users, test.items), test.values)
        for n in ("biased_als", "item_knn_baseline")
    )
    assert blend <= best + 0.01


@pytest.mark.parametrize("name", FACTORIES)
def test_predictions_are_clipped_to_the_rating_range(
    name: str, data: tuple[Interactions, Interactions], fitted: dict[str, RatingModel]
) -> None:
    train, test = data
    inferred = fitted[name].predict(test.users, test.items)
    assert inferred.min() >= train.values.min() and inferred.max() <= train.values.max()
    narrow = FACTORIES[name]()
    narrow.rating_range = (2.5, 3.5)
    narrow.fit(train)
    pred = narrow.predict(test.users, test.items)
    scores = narrow.score("u3").scores
    assert pred.min() == 2.5 and pred.max() == 3.5
    assert scores.min() >= 2.5 and scores.max() <= 3.5


def test_river_read_out_matches_river_predict_one(fitted: dict[str, RatingModel]) -> None:
    model = fitted["river_biased_mf"]
    assert isinstance(model, RiverBiasedMF)
    u, i = model.user_ids_.index("u5"), model.item_ids_.index("i8")
    expected = model.river_model_.predict_one(u, i)
    assert model.predict(np.array(["u5"]), np.array(["i8"]))[0] == pytest.approx(expected)


@pytest.mark.parametrize("name", FACTORIES)
def test_fit_rejects_implicit_feedback(name: str) -> None:
    implicit = Interactions(
        np.array(["u"]), np.array(["i"]), np.array([1.0]), np.array([0.0]), is_rating=False
    )
    with pytest.raises(ConfigurationError, match="ratings"):
        FACTORIES[name]().fit(implicit)


@pytest.mark.parametrize("name", FACTORIES)
def test_score_before_fit_raises_not_found(name: str) -> None:
    with pytest.raises(NotFound, match="not fitted"):
        FACTORIES[name]().score("u1")
