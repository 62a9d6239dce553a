"""Batch training: fit models on a data set and write a versioned artifact folder.

Layout under ``<state_dir>/artifacts/``::

    <version>/manifest.json    data sha256, parameters, metrics, model files
    <version>/<model>.pkl      the fitted batch models (pickle)
    <version>/sasrec.npz|json  the sequential network: NumPy arrays + JSON config, no
                               pickle (models that implement ``export``)
    latest                     the current version's name (replaced atomically)

Readers (API, consumers) poll :func:`read_latest` and load a new version when
the name changes, so a retrain needs no restart.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from core.errors import DataNotFound
from core.scoring import Interactions, Scorer
from offline.datasets import Dataset
from offline.models.registry import make_model
from online_models.sequential import SequentialModel

__all__ = ["ExportsArrays", "TrainResult", "data_sha256", "load_model", "load_sequential",
           "read_latest", "read_manifest", "train"]

LATEST = "latest"


@runtime_checkable
class ExportsArrays(Protocol):
    """A model stored as data only (arrays + JSON) instead of a pickle."""

    def export(self, folder: Path) -> list[str]:
        """Write the model's files into ``folder``; their names."""
        ...


@dataclass(frozen=True)
class TrainResult:
    version: str
    path: Path
    manifest: dict[str, Any]


def data_sha256(log: Interactions) -> str:
    """Content hash of a log (order-sensitive), recorded in the manifest.

    >>> a = Interactions.from_records([("u", "a", 1, 0)])
    >>> data_sha256(a) == data_sha256(Interactions.from_records([("u", "a", 1, 0)]))
    True
    """
    h = hashlib.sha256()
    for arr in (log.users, log.items):
        h.update("\x1f".join(arr.tolist()).encode())
        h.update(b"\x1e")
    for num in (log.values, log.timestamps):
        h.update(np.ascontiguousarray(num, dtype=np.float64).tobytes())
    h.update(b"rating" if log.is_rating else b"implicit")
    return h.hexdigest()


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def train(dataset: Dataset, artifacts_dir: Path, models: Sequence[str], *,
          metrics: dict[str, dict[str, float]] | None = None, protocol: str = "temporal",
          random_state: int = 0, version: str | None = None) -> TrainResult:
    """Fit ``models`` on the whole data set and publish them as a new version.

    ``metrics`` (from an evaluation run on the same data) go into the manifest.
    The ``latest`` pointer moves only after every file of the version is written.
    """
    digest = data_sha256(dataset.interactions)
    version = version or f"{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}-{digest[:8]}"
    target = artifacts_dir / version
    staging = artifacts_dir / f".{version}.partial"
    staging.mkdir(parents=True, exist_ok=False)
    entries: dict[str, Any] = {}
    for name in models:
        model = make_model(name, protocol=protocol, random_state=random_state)
        t0 = time.perf_counter()
        model.fit(dataset.interactions, dataset.items)
        fit_s = time.perf_counter() - t0
        if isinstance(model, ExportsArrays):
            files = model.export(staging)
            entries[name] = {"files": files, "format": "arrays", "params": repr(model),
                             "fit_s": fit_s}
        else:
            with open(staging / f"{name}.pkl", "wb") as f:
                pickle.dump(model, f, protocol=pickle.HIGHEST_PROTOCOL)
            entries[name] = {"file": f"{name}.pkl", "params": repr(model), "fit_s": fit_s}
    manifest = {
        "version": version,
        "created_at": datetime.now(UTC).isoformat(),
        "dataset": dataset.name,
        "data_sha256": digest,
        "events": len(dataset.interactions),
        "items": len(dataset.items),
        "protocol": protocol,
        "random_state": random_state,
        "models": entries,
        "metrics": metrics or {},
    }
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    os.replace(staging, target)
    _write_atomic(artifacts_dir / LATEST, version + "\n")
    return TrainResult(version, target, manifest)


def read_latest(artifacts_dir: Path) -> str | None:
    """The current version's name, or None when nothing was trained yet."""
    path = artifacts_dir / LATEST
    if not path.exists():
        return None
    return path.read_text().strip() or None


def read_manifest(artifacts_dir: Path, version: str) -> dict[str, Any]:
    path = artifacts_dir / version / "manifest.json"
    if not path.exists():
        raise DataNotFound(f"no manifest at {path}")
    manifest: dict[str, Any] = json.loads(path.read_text())
    return manifest


def load_model(artifacts_dir: Path, version: str, name: str) -> Scorer:
    """A fitted model of a version (trusted local artifacts only: this unpickles)."""
    path = artifacts_dir / version / f"{name}.pkl"
    if not path.exists():
        raise DataNotFound(f"model {name!r} not in version {version}", details={"path": str(path)})
    with open(path, "rb") as f:
        model: Scorer = pickle.load(f)
    return model


def load_sequential(artifacts_dir: Path, version: str, name: str = "sasrec") -> SequentialModel:
    """The sequential network of a version, for NumPy inference (no pickle, no PyTorch)."""
    return SequentialModel.load(artifacts_dir / version, name)
