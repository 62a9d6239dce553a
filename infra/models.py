"""Trained models for the online path, picked up from the artifacts without a restart."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from core.errors import DataNotFound
from index.faiss_index import FaissIndex
from offline.models.als import ALSScorer
from offline.train import load_model, read_latest
from online_models.als_foldin import ALSFoldIn

__all__ = ["ModelProvider"]

log = logging.getLogger(__name__)


class ModelProvider:
    """Serves the ALS fold-in of the latest trained version; reloads when it changes.

    The ``latest`` pointer of the artifacts folder is read at most every
    ``min_interval_s``; a new version is loaded on the calling thread (a few
    hundred milliseconds for the shipped catalog) and swapped in atomically.
    """

    def __init__(
        self,
        artifacts_dir: Path,
        *,
        min_interval_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.artifacts_dir = artifacts_dir
        self.min_interval_s = min_interval_s
        self.clock = clock
        self._checked_at = -float("inf")
        self._version: str | None = None
        self._foldin: ALSFoldIn | None = None
        self._item_index: FaissIndex | None = None
        self._lock = threading.Lock()

    @property
    def version(self) -> str | None:
        return self._version

    def foldin(self) -> ALSFoldIn | None:
        """The current model's fold-in, or None when no ALS model was trained."""
        return self.current()[0]

    def current(self) -> tuple[ALSFoldIn | None, FaissIndex | None]:
        """The fold-in and a search index over its item factors, of one version."""
        now = self.clock()
        if now - self._checked_at >= self.min_interval_s:
            with self._lock:
                if now - self._checked_at >= self.min_interval_s:
                    self._checked_at = now
                    self._reload_if_new()
        return self._foldin, self._item_index

    def _reload_if_new(self) -> None:
        latest = read_latest(self.artifacts_dir)
        if latest is None or latest == self._version:
            return
        try:
            model = load_model(self.artifacts_dir, latest, "als")
        except DataNotFound:
            log.info("model version %s has no ALS model; collaborative scores off", latest)
            self._version, self._foldin, self._item_index = latest, None, None
            return
        if not isinstance(model, ALSScorer):
            raise DataNotFound(f"als.pkl of version {latest} is not an ALS model")
        foldin = ALSFoldIn(
            model.item_ids_, model.item_factors_, regularization=model.regularization,
            alpha=model.alpha, version=latest,
        )
        # Candidates by cosine in factor space (zero rows: items never seen in training).
        norms = np.linalg.norm(foldin.item_factors, axis=1)
        keep = norms > 0
        item_index = FaissIndex(foldin.n_factors)
        item_index.upsert([i for i, k in zip(foldin.item_ids, keep, strict=True) if k],
                          foldin.item_factors[keep].astype(np.float32))
        self._foldin, self._item_index, self._version = foldin, item_index, latest
        log.info("loaded ALS model %s (%d items, %d factors)", latest,
                 len(model.item_ids_), foldin.n_factors)
