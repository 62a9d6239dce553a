"""5-fold cross-validated RMSE/MAE of the rating models on MovieLens-100K.

Uses the standard u1..u5 base/test splits when they sit beside ``u.data``,
otherwise a seeded 5-fold split of ``u.data``. Hyperparameters are the models'
defaults, chosen beforehand with ``--tune`` on an inner validation split of
fold 1's *training* part: the test folds are never used to pick anything. SVD
keeps Surprise's defaults: it is the published baseline.

    .venv/bin/python scripts/check_ml100k.py [--data DIR] [--models a,b] [--tune]
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from core.scoring import Interactions
from offline.models.rating import (
    BiasedALS,
    ItemKNNBaseline,
    RatingBlend,
    RatingModel,
    RiverBiasedMF,
    SVDRegressor,
)

Split = tuple[Interactions, Interactions]
MODELS: dict[str, Callable[[], RatingModel]] = {
    "river_biased_mf": RiverBiasedMF,
    "svd": SVDRegressor,
    "biased_als": BiasedALS,
    "item_knn_baseline": ItemKNNBaseline,
    "rating_blend": RatingBlend,
}


def read_ratings(path: Path) -> Interactions:
    raw = np.loadtxt(path, dtype=np.int64, ndmin=2)
    return Interactions(
        raw[:, 0].astype(str),
        raw[:, 1].astype(str),
        raw[:, 2].astype(np.float64),
        raw[:, 3].astype(np.float64),
        is_rating=True,
    )


def subset(data: Interactions, rows: np.ndarray) -> Interactions:
    return Interactions(
        data.users[rows],
        data.items[rows],
        data.values[rows],
        data.timestamps[rows],
        is_rating=True,
    )


def folds(data_dir: Path, seed: int) -> tuple[str, list[Split]]:
    standard = [(data_dir / f"u{k}.base", data_dir / f"u{k}.test") for k in range(1, 6)]
    if all(b.exists() and t.exists() for b, t in standard):
        return "standard u1..u5", [(read_ratings(b), read_ratings(t)) for b, t in standard]
    data = read_ratings(data_dir / "u.data")
    parts = np.array_split(np.random.default_rng(seed).permutation(len(data)), 5)
    splits = [
        (subset(data, np.sort(np.concatenate(parts[:k] + parts[k + 1 :]))), subset(data, parts[k]))
        for k in range(5)
    ]
    return f"seeded 5-fold (seed={seed}) of u.data", splits


def evaluate(
    model: RatingModel, train: Interactions, test: Interactions
) -> tuple[float, float, float]:
    start = time.perf_counter()
    model.fit(train)
    seconds = time.perf_counter() - start
    err = model.predict(test.users, test.items) - test.values
    return float(np.sqrt(np.mean(err**2))), float(np.mean(np.abs(err))), seconds


def global_mean(train: Interactions, test: Interactions) -> tuple[float, float, float]:
    err = float(train.values.mean()) - test.values
    return float(np.sqrt(np.mean(err**2))), float(np.mean(np.abs(err))), 0.0


def inner_split(train: Interactions, seed: int) -> Split:
    held = np.random.default_rng(seed + 1).random(len(train)) < 0.1
    return subset(train, np.flatnonzero(~held)), subset(train, np.flatnonzero(held))


def grid(**axes: list[object]) -> Iterator[dict[str, object]]:
    for values in itertools.product(*axes.values()):
        yield dict(zip(axes, values, strict=True))


# The grids searched to pick the defaults (each model: a list of grids).
TUNING: dict[str, tuple[Callable[..., RatingModel], list[dict[str, list[object]]]]] = {
    "river_biased_mf": (
        RiverBiasedMF,
        [
            {"n_factors": [10, 20], "learning_rate": [0.005, 0.01], "l2_latent": [0.02, 0.05, 0.1]},
            {"n_factors": [20], "learning_rate": [0.005], "l2_latent": [0.15, 0.2]},
        ],
    ),
    "biased_als": (
        BiasedALS,
        [
            {
                "n_factors": [10, 20, 50],
                "regularization": [0.05, 0.1, 0.2],
                "bias_regularization": [0.01, 0.1],
            },
            {"n_factors": [50, 100], "regularization": [0.08, 0.15], "bias_regularization": [0.01]},
        ],
    ),
    "item_knn_baseline": (ItemKNNBaseline, [{"k": [20, 40, 80], "shrinkage": [50.0, 100.0]}]),
}


def tune(splits: list[Split], names: list[str], seed: int) -> None:
    fit_part, valid = inner_split(splits[0][0], seed)
    print(f"tuning on fold 1 train: {len(fit_part)} fit / {len(valid)} validation ratings")
    for name in names:
        if name not in TUNING:
            continue
        factory, grids = TUNING[name]
        results = []
        for params in itertools.chain.from_iterable(grid(**axes) for axes in grids):
            rmse, mae, seconds = evaluate(factory(**params), fit_part, valid)
            results.append((rmse, params))
            print(f"  {name:18s} {params} rmse={rmse:.4f} mae={mae:.4f} fit={seconds:.1f}s")
        best = min(results, key=lambda r: r[0])
        print(f"best {name}: {best[1]} rmse={best[0]:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("/work/shared/data/ml-100k"))
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tune", action="store_true", help="grid search on fold 1's train only")
    args = parser.parse_args()
    names = [n for n in args.models.split(",") if n]
    unknown = set(names) - set(MODELS)
    if unknown:
        parser.error(f"unknown models {sorted(unknown)}; choose from {sorted(MODELS)}")
    how, splits = folds(args.data, args.seed)
    print(f"MovieLens-100K, {how}")
    if args.tune:
        tune(splits, names, args.seed)
        return
    print(f"{'model':18s} {'RMSE':>15s} {'MAE':>15s} {'fit s':>7s}  per-fold RMSE")
    for name in ["global_mean", *names]:
        scores = np.array(
            [
                global_mean(train, test)
                if name == "global_mean"
                else evaluate(MODELS[name](), train, test)
                for train, test in splits
            ]
        )
        rmse, mae, fit = scores[:, 0], scores[:, 1], scores[:, 2]
        print(
            f"{name:18s} {rmse.mean():.4f} ± {rmse.std():.4f} {mae.mean():.4f} ± {mae.std():.4f}"
            f" {fit.mean():7.1f}  " + " ".join(f"{x:.4f}" for x in rmse),
            flush=True,
        )


if __name__ == "__main__":
    main()
