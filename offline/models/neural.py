"""The neural models' door: PyTorch is an optional extra (``pip install -e '.[neural]'``).

Without it the neural models are absent: :func:`torch_missing` says why (logged
once per process) and :func:`make_sasrec` raises a ConfigurationError, which
the harness reports as a skipped model and ``streamrec train`` leaves out of
its default set.
"""

from __future__ import annotations

import logging
from functools import cache

from core.errors import ConfigurationError
from core.scoring import BatchScorer

__all__ = ["NEURAL_MODELS", "make_sasrec", "torch_missing"]

log = logging.getLogger(__name__)

#: Registry names of the models that need PyTorch.
NEURAL_MODELS = ("sasrec",)
INSTALL_HINT = "install the neural extra: pip install -e '.[neural]'"


@cache
def torch_missing() -> str | None:
    """None when PyTorch imports; else the reason, logged the first time it is asked."""
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        reason = f"PyTorch is not installed ({exc}); the sequential source (sasrec) is off: " \
                 f"{INSTALL_HINT}"
        log.warning(reason)
        return reason
    return None


def make_sasrec(random_state: int = 0, **_: object) -> BatchScorer:
    """A fresh SASRec scorer (ConfigurationError when PyTorch is missing)."""
    reason = torch_missing()
    if reason is not None:
        raise ConfigurationError(reason)
    from offline.models.sasrec import SASRecScorer

    return SASRecScorer(random_state=random_state)
