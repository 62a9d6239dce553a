"""What the combining models (hybrid, ranker) share: fitting their components, dropping
those that can score nothing on the data set, and refitting them on the validation split
with the hyperparameters already tuned on the whole training part.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from core.scoring import BatchScorer, Interactions
from core.types import Item
from offline.models.base import skip_reason

__all__ = ["Factory", "combined_report", "fit_components", "fit_validation_copies"]

log = logging.getLogger(__name__)

Factory = Callable[[], BatchScorer]


def fit_components(owner: str, factories: dict[str, Factory], train: Interactions,
                   items: Sequence[Item]) -> tuple[dict[str, BatchScorer], dict[str, str]]:
    """Fitted components that can score, and name -> reason for those dropped (each
    logged as a warning: a source that scores nothing would only add noise)."""
    kept: dict[str, BatchScorer] = {}
    dropped: dict[str, str] = {}
    for name, factory in factories.items():
        model = factory()
        model.fit(train, items)
        reason = skip_reason(model)
        if reason is None:
            kept[name] = model
        else:
            dropped[name] = reason
            log.warning("%s: dropping %s (%s)", owner, name, reason)
    return kept, dropped


def fit_validation_copies(fitted: dict[str, BatchScorer], factories: dict[str, Factory],
                          fit_part: Interactions, items: Sequence[Item]
                          ) -> dict[str, BatchScorer]:
    """The same components fitted on the validation split's fit part.

    A component that tuned itself on the whole training part offers ``fixed_copy()``: an
    unfitted copy with the values it chose, so tuning runs once per training part and the
    copy scored on validation is the model that will be served.
    """
    out: dict[str, BatchScorer] = {}
    for name, model in fitted.items():
        fixed = getattr(model, "fixed_copy", None)
        copy: BatchScorer = fixed() if callable(fixed) else factories[name]()
        copy.fit(fit_part, items)
        out[name] = copy
    return out


def combined_report(own: dict[str, Any], fitted: dict[str, BatchScorer],
                    dropped: dict[str, str]) -> dict[str, Any]:
    """A combining model's tuning report: its own choices, its components' (EASE's
    lambda, under ``components``) and the components it dropped (under ``dropped``)."""
    parts: dict[str, Any] = {}
    for name, model in fitted.items():
        report = getattr(model, "tuning_report", None)
        if callable(report) and (value := report()):
            parts[name] = value
    return {**own, **({"components": parts} if parts else {}),
            **({"dropped": dict(dropped)} if dropped else {})}
