"""The learned ranker of the live pipeline: gradient-boosted trees over the sources' scores.

Trained by ``streamrec train`` (and inside ``streamrec evaluate --models served``) on
the pipeline's own score matrices for a validation slice of the log; served by the
same pipeline on the same features: :func:`ranker_features` is the one function both
call. The model is LightGBM's text format inside a JSON file -- data, never code, when
read (no pickle).

>>> import numpy as np
>>> from core.ports import RecContext, RecRequest, StateRead, UserState
>>> ctx = RecContext(RecRequest("u", 5), 30, StateRead(50),
...                  UserState(["a", "b"], set(), None, None, {}))
>>> ranker_features(np.array([[0.5, np.nan], [1.0, 0.2]]), ctx).round(2).tolist()
[[0.5, nan, 0.5, nan, 2.0, nan, 1.0, 2.0, 0.0], [1.0, 0.2, 1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 0.0]]
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from core.errors import DataNotFound
from core.ports import RecContext
from online_models.serving.pipeline import normalised_blend

__all__ = ["BLEND_FORMAT", "FILE", "BlendRanker", "GbdtRanker", "load_ranker", "ranker_features"]

#: The ranker's file in an artifact version folder.
FILE = "ranker.json"
#: /2: the features gained the purchase count (a /1 file would read shifted columns).
FORMAT = "streamrec.gbdt-ranker/2"
#: A normalised blend (:class:`BlendRanker`) in the same file.
BLEND_FORMAT = "streamrec.normalised-blend/1"


def ranker_features(matrix: npt.NDArray[np.float64], ctx: RecContext) -> npt.NDArray[np.float64]:
    """Features of each candidate row: each source's score (NaN: cannot score), the score
    relative to that source's best in this request, its rank among the request's
    candidates by that source (1 = best; NaN: not scored), how many sources scored the
    item, the user's number of recent items (how much the personal sources know) and
    log1p of the number of items they ever bought (how settled their taste is: a long
    history favours their own neighbourhood over what sells to everyone)."""
    n = matrix.shape[0]
    with warnings.catch_warnings():  # an all-NaN column: its relative scores stay NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        best = np.nanmax(matrix, axis=0) if n else np.zeros(matrix.shape[1])
    relative = matrix / np.where(best > 0, best, np.nan)
    missing = np.isnan(matrix)
    # Rank by descending score, NaN last (argsort of argsort; stable: ties keep row order).
    order = np.argsort(np.where(missing, np.inf, -matrix), axis=0, kind="stable")
    ranks = np.empty_like(matrix)
    np.put_along_axis(ranks, order, np.arange(1, n + 1, dtype=np.float64)[:, None], axis=0)
    ranks[missing] = np.nan
    known = np.sum(~missing, axis=1, dtype=np.float64)
    recent = np.full(n, float(len(ctx.user.recent)))
    bought = np.full(n, math.log1p(len(ctx.user.purchased)))
    return np.column_stack([matrix, relative, ranks, known, recent, bought])


class GbdtRanker:
    """A LightGBM binary model (will this candidate be among the user's next items?)
    over :func:`ranker_features` of the sources ``sources``.

    Parameters
    ----------
    booster
        The trained ``lightgbm.Booster``.
    sources
        The source names of the matrix columns it was trained on, in order.
    info
        What training reported (validation figures, settings), kept in the file.
    """

    def __init__(self, booster: Any, sources: Sequence[str], info: dict[str, Any] | None = None
                 ) -> None:
        self.booster = booster
        self.sources = tuple(sources)
        self.info = dict(info or {})

    def __repr__(self) -> str:
        return f"GbdtRanker(sources={list(self.sources)})"

    def rank(self, matrix: npt.NDArray[np.float64], ctx: RecContext) -> npt.NDArray[np.float64]:
        scores: npt.NDArray[np.float64] = self.booster.predict(
            ranker_features(matrix, ctx), num_threads=1)
        return scores

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({
            "format": FORMAT, "sources": list(self.sources), "info": self.info,
            "model": self.booster.model_to_string(),
        }))

    @classmethod
    def load(cls, path: Path) -> GbdtRanker:
        """Read a saved ranker (plain JSON and LightGBM text: nothing executes)."""
        import lightgbm

        data = _read(path, FORMAT)
        booster = lightgbm.Booster(model_str=str(data["model"]))
        return cls(booster, [str(s) for s in data["sources"]], dict(data.get("info", {})))


class BlendRanker:
    """Blend weights over the request's z-scored source columns
    (:func:`online_models.serving.pipeline.normalised_blend`): the combiner
    ``infra/served.py`` may choose instead of trees, shipped in the same file.

    Parameters
    ----------
    weights
        Weight per source, in the order of ``sources``.
    sources
        The source names of the matrix columns, in order.
    info
        What training reported, kept in the file.

    >>> ranker = BlendRanker([1.0, 0.0], ["ease", "alltime"])
    >>> ranker.rank(np.array([[0.2, 1.0], [0.9, np.nan]]), None).round(3).tolist()
    [-1.0, 1.0]
    """

    def __init__(self, weights: Sequence[float], sources: Sequence[str],
                 info: dict[str, Any] | None = None) -> None:
        self.weights = np.asarray(weights, dtype=np.float64)
        self.sources = tuple(sources)
        if len(self.weights) != len(self.sources):
            raise ValueError(f"{len(self.weights)} weights for {len(self.sources)} sources")
        self.info = dict(info or {})

    def __repr__(self) -> str:
        return f"BlendRanker({dict(zip(self.sources, self.weights.tolist(), strict=True))})"

    def rank(self, matrix: npt.NDArray[np.float64], ctx: RecContext | None
             ) -> npt.NDArray[np.float64]:
        return normalised_blend(matrix, self.weights)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps({
            "format": BLEND_FORMAT, "sources": list(self.sources),
            "weights": self.weights.tolist(), "info": self.info}))

    @classmethod
    def load(cls, path: Path) -> BlendRanker:
        """Read a saved blend (plain JSON)."""
        data = _read(path, BLEND_FORMAT)
        return cls([float(w) for w in data["weights"]], [str(s) for s in data["sources"]],
                   dict(data.get("info", {})))


def _read(path: Path, fmt: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataNotFound(f"no readable ranker at {path}: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != fmt:
        raise DataNotFound(f"{path} is not a {fmt} file")
    return data


def load_ranker(path: Path) -> GbdtRanker | BlendRanker:
    """Read ``ranker.json`` of either kind (trees or a normalised blend), by its format."""
    try:
        fmt = json.loads(path.read_text()).get("format")
    except (OSError, ValueError, AttributeError) as exc:
        raise DataNotFound(f"no readable ranker at {path}: {exc}") from exc
    return BlendRanker.load(path) if fmt == BLEND_FORMAT else GbdtRanker.load(path)
