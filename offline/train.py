"""Batch training: fit models on a data set and write a versioned artifact folder.

Layout under ``<state_dir>/artifacts/``::

    <version>/manifest.json    data sha256, parameters, metrics, model files (each
                               with the sha256 of its bytes)
    <version>/<model>.pkl      the fitted models (pickle)
    <version>/sasrec.npz|json  the sequential network: NumPy arrays + JSON config, no
                               pickle (models that implement ``export``)
    latest                     the current version's name (replaced atomically)

Readers (API, consumers) poll :func:`read_latest` and load a new version when
the name changes, so a retrain needs no restart. A model file is unpickled only
after its bytes match the sha256 its manifest records (:func:`load_model`): a file
changed or swapped after training is refused, never run.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from core.errors import ArtifactIntegrityError, DataNotFound
from core.scoring import Interactions, Scorer
from offline.datasets import Dataset
from offline.models.registry import make_model
from online_models.sequential import SequentialModel

__all__ = ["ExportsArrays", "Fitted", "TrainResult", "data_sha256", "file_sha256", "load_model",
           "load_sequential", "publish", "read_latest", "read_manifest", "train",
           "verify_model"]

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


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, as the manifest records it for each model file."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


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
          random_state: int = 0, version: str | None = None,
          make: Callable[..., Scorer] = make_model,
          extra: Mapping[str, Any] | None = None,
          extras: Mapping[str, Callable[[Path], dict[str, Any]]] | None = None) -> TrainResult:
    """Fit ``models`` on the whole data set and publish them as a new version.

    ``metrics`` (from an evaluation run on the same data) go into the manifest.
    ``make`` builds a model from its name (another engine's models, e.g. Spark's);
    ``extra`` adds manifest fields; ``extras`` write more files into the version folder
    before it is published (the learned ranker), each returning its manifest entry.
    """
    fitted: dict[str, Fitted] = {}
    for name in models:
        model = make(name, protocol=protocol, random_state=random_state)
        t0 = time.perf_counter()
        model.fit(dataset.interactions, dataset.items)
        fitted[name] = Fitted(model, time.perf_counter() - t0)
    return publish(artifacts_dir, fitted, dataset=dataset.name,
                   digest=data_sha256(dataset.interactions),
                   events=len(dataset.interactions), items=len(dataset.items),
                   metrics=metrics, protocol=protocol, random_state=random_state,
                   version=version, extra=extra, extras=extras)


@dataclass(frozen=True)
class Fitted:
    """A fitted model and the seconds its fit took."""

    model: Scorer
    fit_s: float


def publish(artifacts_dir: Path, fitted: Mapping[str, Fitted], *, dataset: str,
            digest: str, events: int, items: int,
            metrics: dict[str, dict[str, float]] | None = None, protocol: str = "temporal",
            random_state: int = 0, version: str | None = None,
            extra: Mapping[str, Any] | None = None,
            extras: Mapping[str, Callable[[Path], dict[str, Any]]] | None = None,
            ) -> TrainResult:
    """Write fitted models as a new version of data ``digest`` (sha256 hex).

    ``extra`` adds manifest fields; ``extras`` write more files into the version (see
    :func:`train`). A model with a ``serving_artifacts(folder)`` method also writes the
    data-only files the live pipeline reads (EASE's neighbours).

    The ``latest`` pointer moves only after every file of the version is written.
    """
    version = version or f"{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}-{digest[:8]}"
    target = artifacts_dir / version
    staging = artifacts_dir / f".{version}.partial"
    staging.mkdir(parents=True, exist_ok=False)
    entries: dict[str, Any] = {}
    for name, fit in fitted.items():
        if isinstance(fit.model, ExportsArrays):  # data only: arrays + JSON, no pickle
            files = fit.model.export(staging)
            entries[name] = {"files": files, "format": "arrays", "params": repr(fit.model),
                             "fit_s": fit.fit_s,
                             "sha256": {f: file_sha256(staging / f) for f in files}}
            continue
        with open(staging / f"{name}.pkl", "wb") as f:
            pickle.dump(fit.model, f, protocol=pickle.HIGHEST_PROTOCOL)
        entries[name] = {"file": f"{name}.pkl", "params": repr(fit.model), "fit_s": fit.fit_s,
                         "sha256": file_sha256(staging / f"{name}.pkl")}
        export = getattr(fit.model, "serving_artifacts", None)
        if callable(export):  # data-only files the live pipeline reads (no pickle)
            entries[name]["serving"] = export(staging)
    for name, write in (extras or {}).items():
        entries[name] = write(staging)
    manifest = {
        "version": version,
        "created_at": datetime.now(UTC).isoformat(),
        "dataset": dataset,
        "data_sha256": digest,
        "events": events,
        "items": items,
        "protocol": protocol,
        "random_state": random_state,
        "models": entries,
        "metrics": metrics or {},
        **(extra or {}),
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


def verify_model(artifacts_dir: Path, version: str, name: str) -> bytes:
    """The bytes of a version's model file, after checking them against the manifest.

    Raises :class:`DataNotFound` when the version has no such model and
    :class:`ArtifactIntegrityError` when the manifest records no sha256 for it (a
    version written before hashes, or a forged manifest) or the bytes differ.
    """
    path = artifacts_dir / version / f"{name}.pkl"
    if not path.exists():
        raise DataNotFound(f"model {name!r} not in version {version}", details={"path": str(path)})
    entry = read_manifest(artifacts_dir, version).get("models", {}).get(name)
    expected = entry.get("sha256") if isinstance(entry, dict) else None
    if not isinstance(expected, str):
        raise ArtifactIntegrityError(
            f"version {version} records no sha256 for {name!r}: retrain it (`streamrec train`)")
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != expected:
        raise ArtifactIntegrityError(
            f"{path} does not match the sha256 in its manifest: refused (changed after training)")
    return data


def load_model(artifacts_dir: Path, version: str, name: str) -> Scorer:
    """A fitted model of a version, unpickled only once its sha256 matches the manifest."""
    model: Scorer = pickle.loads(verify_model(artifacts_dir, version, name))
    return model


def load_sequential(artifacts_dir: Path, version: str, name: str = "sasrec") -> SequentialModel:
    """The sequential network of a version, for NumPy inference (no pickle, no PyTorch)."""
    return SequentialModel.load(artifacts_dir / version, name)
