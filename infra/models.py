"""Trained models for the online path, picked up from the artifacts without a restart."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from core.errors import ArtifactIntegrityError, DataNotFound
from core.events import Purchased
from core.ports import Vector
from index.faiss_index import FaissIndex
from index.mips import InnerProductIndex
from offline.models.als import ALSScorer
from offline.models.ease import NEIGHBOURS_FILE
from offline.train import load_model, load_sequential, read_latest
from online_models.als_foldin import ALSFoldIn
from online_models.neighbours import ItemNeighbours
from online_models.sequential import SequentialModel
from online_models.serving.ranker import FILE as RANKER_FILE
from online_models.serving.ranker import BlendRanker, GbdtRanker, load_ranker

__all__ = ["ModelProvider"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Batch models are trained on purchase counts: one purchase = one unit of history.
PURCHASE_WEIGHT = Purchased.weight


class ModelProvider:
    """Serves the ALS fold-in and the sequential network of the latest trained version.

    Either is None when the version has no such model (the sequential one is only
    trained where the ``neural`` extra is installed); a new version replaces both.

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
        new_item_factors: Callable[[str], dict[str, Vector]] | None = None,
    ) -> None:
        self.artifacts_dir = artifacts_dir
        #: Reads the factors consumers folded in for new items (state store).
        self.new_item_factors = new_item_factors
        self.min_interval_s = min_interval_s
        self.clock = clock
        self._checked_at = -float("inf")
        self._version: str | None = None
        self._refused: str | None = None  # a version whose files failed their sha256
        self._foldin: ALSFoldIn | None = None
        self._sequential: SequentialModel | None = None
        self._item_index: InnerProductIndex | None = None
        self._ranker: GbdtRanker | BlendRanker | None = None
        self._neighbours: ItemNeighbours | None = None
        #: Data-only artifacts of ``_version`` asked for by name (None: the version has none).
        self._artifacts: dict[tuple[str, str], Any] = {}
        #: New items' factors as last put into ``_item_index`` (of ``_version``).
        self._added: dict[str, Vector] = {}
        self._lock = threading.Lock()

    @property
    def version(self) -> str | None:
        return self._version

    def current_version(self) -> str | None:
        """The version being served, after looking for a newer one (at most every
        ``min_interval_s``): what a response's ETag names, so a new version changes the
        tags of unchanged users too, not only once some list is computed."""
        self._poll()
        return self._version

    def foldin(self) -> ALSFoldIn | None:
        """The current model's fold-in, or None when no ALS model was trained."""
        return self.current()[0]

    def current(self) -> tuple[ALSFoldIn | None, InnerProductIndex | None]:
        """The fold-in and a search index over its item factors, of one version."""
        self._poll()
        return self._foldin, self._item_index

    def sequential(self) -> SequentialModel | None:
        """The current version's sequential network (NumPy), or None when it has none."""
        self._poll()
        return self._sequential

    def _poll(self) -> None:
        now = self.clock()
        if now - self._checked_at >= self.min_interval_s:
            with self._lock:
                if now - self._checked_at >= self.min_interval_s:
                    self._checked_at = now
                    self._reload_if_new()
                    self._add_new_items()

    def refresh(self) -> None:
        """Look for a new version now (not only every ``min_interval_s``)."""
        self._checked_at = -math.inf
        self._poll()

    def ranker(self) -> GbdtRanker | BlendRanker | None:
        """The learned ranker of the current version, or None when none was trained."""
        self._poll()
        return self._ranker

    def _add_new_items(self) -> None:
        """New products, folded in by the consumers, join the collaborative candidates."""
        if self.new_item_factors is None or self._item_index is None or self._version is None:
            return
        # Only what changed since the last poll: re-upserting every folded-in item each
        # poll grew with the number of new items and ran on a request's thread.
        added = {item: vector for item, vector in self.new_item_factors(self._version).items()
                 if item not in self._added or not np.array_equal(self._added[item], vector)}
        if added:
            ids = list(added)
            self._item_index.upsert(ids, np.stack([added[i] for i in ids]))
            self._added.update(added)

    def neighbours(self) -> ItemNeighbours | None:
        """EASE's item neighbours of the current version, or None when none were trained."""
        self._poll()
        return self._neighbours

    def artifact(self, name: str, load: Callable[[Path], T]) -> T | None:
        """The current version's data-only artifact ``name`` (``load`` reads it from
        ``<version folder>/<name>``), read once per version; None when the version has
        none or it cannot be read (logged once). A source needing a new kind of trained
        data asks for it here: nothing else in the wiring changes."""
        self._poll()
        version = self._version
        if version is None:
            return None
        key = (version, name)  # never one version's artifact beside another's models
        if key not in self._artifacts:
            with self._lock:
                if key not in self._artifacts:
                    # An older version's artifacts go with it (no growth per version).
                    self._artifacts = {k: v for k, v in self._artifacts.items()
                                       if k[0] == version}
                    self._artifacts[key] = self._load_artifact(version, name, load)
        found: T | None = self._artifacts.get(key)
        return found

    def _load_artifact(self, version: str, name: str, load: Callable[[Path], T]) -> T | None:
        try:
            found = load(self.artifacts_dir / version / name)
        except DataNotFound:
            log.info("model version %s has no %s", version, name)
            return None
        except (ValueError, OSError, KeyError) as exc:
            log.warning("model version %s: %s not loaded (%s)", version, name, exc)
            return None
        log.info("loaded %s of %s", name, version)
        return found

    def _load_neighbours(self, version: str) -> ItemNeighbours | None:
        base = self.artifacts_dir / version / NEIGHBOURS_FILE
        if not base.with_suffix(".json").exists():
            return None
        try:
            found = ItemNeighbours.load(base)
        except (DataNotFound, ValueError, OSError) as exc:
            log.warning("model version %s: EASE neighbours not loaded (%s)", version, exc)
            return None
        log.info("loaded EASE neighbours of %s (%d items, k=%d)", version, len(found.item_ids),
                 found.k)
        return found

    def _load_ranker(self, version: str) -> GbdtRanker | BlendRanker | None:
        path = self.artifacts_dir / version / RANKER_FILE
        if not path.exists():
            return None
        try:
            ranker = load_ranker(path)
        except DataNotFound as exc:
            log.warning("model version %s: ranker not loaded (%s)", version, exc)
            return None
        log.info("loaded the learned ranker of %s (sources %s)", version, list(ranker.sources))
        return ranker

    def _reload_if_new(self) -> None:
        latest = read_latest(self.artifacts_dir)
        if latest is None or latest in (self._version, self._refused):
            return
        try:
            model = load_model(self.artifacts_dir, latest, "als")
        except ArtifactIntegrityError as exc:  # keep serving the version already loaded
            log.error("model version %s refused: %s", latest, exc)
            self._refused = latest
            return
        except DataNotFound:
            model = None
        # The version is taken: its other artifacts come with it (never one version's ALS
        # beside another's ranker, neighbours or sequential network).
        self._ranker = self._load_ranker(latest)
        self._artifacts = {}  # read again from the new version when asked
        self._neighbours = self._load_neighbours(latest)
        self._sequential = self._load_sequential(latest)
        if model is None:
            log.info("model version %s has no ALS model; collaborative scores off", latest)
            self._version, self._foldin, self._item_index = latest, None, None
            self._added = {}
            return
        if not isinstance(model, ALSScorer):
            raise DataNotFound(f"als.pkl of version {latest} is not an ALS model")
        foldin = ALSFoldIn(
            model.item_ids_, model.item_factors_, regularization=model.regularization,
            alpha=model.alpha, version=latest, weight_unit=PURCHASE_WEIGHT,
            user_gram=model.user_factors_.T @ model.user_factors_,
        )
        # Candidates ranked by inner product, as ALS scores them.
        item_index = InnerProductIndex(FaissIndex(foldin.n_factors + 1), foldin.item_ids,
                                       foldin.item_factors)
        self._foldin, self._item_index, self._version = foldin, item_index, latest
        self._added = {}  # a new index: every new item goes in again
        log.info("loaded ALS model %s (%d items, %d factors)", latest,
                 len(model.item_ids_), foldin.n_factors)

    def _load_sequential(self, version: str) -> SequentialModel | None:
        try:
            model = load_sequential(self.artifacts_dir, version)
        except DataNotFound:
            log.info("model version %s has no sequential model; sequential source off", version)
            return None
        log.info("loaded sequential model %s (%d items, %d blocks, length %d)", version,
                 len(model.item_ids), model.config.n_blocks, model.config.max_len)
        return model
