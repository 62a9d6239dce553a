"""Model names -> factories (adding a scorer = one class and one line here).

Factories take keyword context from the harness: ``protocol`` (how self-tuning
models carve their validation slice) and ``random_state``.

>>> sorted(MODELS)[:3]
['als', 'biased_als', 'content']
>>> make_model("ease").name
'ease'
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from core.errors import ConfigurationError
from core.scoring import BatchScorer, Scorer
from offline.models.als import ALSScorer
from offline.models.content import ContentScorer
from offline.models.covisit import CovisitScorer
from offline.models.ease import EASEKNNScorer, EASEScorer
from offline.models.hybrid import HybridScorer
from offline.models.item_knn import ItemKNNScorer
from offline.models.neural import make_sasrec
from offline.models.popularity import PopularityScorer
from offline.models.ranker import LearnedRanker
from offline.models.spark_als import SparkALSScorer

__all__ = ["BASELINES", "MODELS", "make_model"]

#: The collaborative baselines the hybrid and the ranker must beat.
BASELINES = ("popularity", "item_knn", "als", "ease")
#: Half-life of the trending scorer (a week, in the units of the log's timestamps).
TRENDING_HALF_LIFE_S = 7 * 24 * 3600.0
#: Neighbours kept per item by ``ease_knn`` (and exported for serving).
EASE_NEIGHBOURS = 50


def _trending() -> PopularityScorer:
    return PopularityScorer(half_life_s=TRENDING_HALF_LIFE_S)


def _ease(protocol: str = "leave-one-out", random_state: int = 0, **_: Any) -> EASEScorer:
    """EASE with lambda tuned on the shared validation split of the training part."""
    return EASEScorer(l2=None, protocol=protocol, random_state=random_state)


def _ease_knn(protocol: str = "leave-one-out", random_state: int = 0,
              **_: Any) -> EASEKNNScorer:
    return EASEKNNScorer(k=EASE_NEIGHBOURS, protocol=protocol, random_state=random_state)


def _hybrid(protocol: str = "leave-one-out", random_state: int = 0) -> HybridScorer:
    return HybridScorer(
        {"ease": partial(_ease, protocol, random_state), "item_knn": ItemKNNScorer,
         "content": ContentScorer, "trending": _trending, "covisit": CovisitScorer},
        protocol=protocol, random_state=random_state,
    )


def _ranker(protocol: str = "leave-one-out", random_state: int = 0) -> LearnedRanker:
    return LearnedRanker(
        {
            "popularity": PopularityScorer,
            "item_knn": ItemKNNScorer,
            "als": partial(ALSScorer, random_state=random_state),
            "ease": partial(_ease, protocol, random_state),
            "content": ContentScorer,
            "trending": _trending,
            "covisit": CovisitScorer,
        },
        protocol=protocol, random_state=random_state,
    )


def _rating(cls_name: str) -> Callable[..., Scorer]:
    def factory(protocol: str = "", random_state: int = 0) -> Scorer:
        from offline.models import rating

        cls = getattr(rating, cls_name)
        model: Scorer = cls(seed=random_state) if "seed" in _params(cls) else cls()
        return model

    return factory


def _params(cls: type) -> set[str]:
    import inspect

    return set(inspect.signature(cls).parameters)


MODELS: dict[str, Callable[..., Scorer | BatchScorer]] = {
    "popularity": lambda **_: PopularityScorer(),
    "trending": lambda **_: _trending(),
    "item_knn": lambda **_: ItemKNNScorer(),
    "als": lambda random_state=0, **_: ALSScorer(random_state=random_state),
    "spark_als": lambda random_state=0, **_: SparkALSScorer(random_state=random_state),
    "ease": _ease,
    "ease_knn": _ease_knn,
    "covisit": lambda **_: CovisitScorer(),
    "content": lambda **_: ContentScorer(),
    "hybrid": _hybrid,
    "ranker": _ranker,
    "rating_mf": _rating("RiverBiasedMF"),
    "svd": _rating("SVDRegressor"),
    "biased_als": _rating("BiasedALS"),
    "item_knn_baseline": _rating("ItemKNNBaseline"),
    "rating_blend": _rating("RatingBlend"),
    "sasrec": make_sasrec,
}


def make_model(name: str, **context: Any) -> Scorer:
    """A fresh, unfitted model by registry name."""
    if name not in MODELS:
        raise ConfigurationError(f"unknown model {name!r}; choose from {sorted(MODELS)}")
    return MODELS[name](**context)
