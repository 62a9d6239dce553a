"""Read-only view of the model registry: the versioned artifact folders of ``train``.

Layout (written by :mod:`offline.train`)::

    <artifacts_dir>/<version>/manifest.json   data hash, params, metrics, created_at
    <artifacts_dir>/latest                    name of the version in use

Everything is read defensively: a missing folder means "no model trained yet", a
half-written or unreadable manifest is listed with its ``error`` instead of failing
the dashboard or the metrics scrape.

>>> import tempfile, pathlib
>>> ModelRegistry(pathlib.Path(tempfile.mkdtemp()) / "none").status()["latest"] is None
True
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

__all__ = ["LATEST", "ModelRegistry", "ModelVersion"]

LATEST = "latest"


@dataclass(frozen=True)
class ModelVersion:
    """One trained version as its manifest describes it."""

    version: str
    created_at: str | None = None
    data_sha256: str | None = None
    dataset: str | None = None
    events: int | None = None
    models: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # why the manifest could not be read

    @property
    def created_ts(self) -> float | None:
        """``created_at`` as Unix seconds (None when absent or not ISO 8601)."""
        if not self.created_at:
            return None
        try:
            return datetime.fromisoformat(self.created_at).timestamp()
        except ValueError:
            return None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "created_ts": self.created_ts}


class ModelRegistry:
    """The artifact folders under ``artifacts_dir`` (``settings.artifacts_dir``)."""

    def __init__(self, artifacts_dir: Path) -> None:
        self.artifacts_dir = Path(artifacts_dir)

    def __repr__(self) -> str:
        return f"ModelRegistry({str(self.artifacts_dir)!r})"

    def latest_version(self) -> str | None:
        """Name in the ``latest`` pointer, or None when nothing was trained yet."""
        try:
            name = (self.artifacts_dir / LATEST).read_text().strip()
        except OSError:
            return None
        return name or None

    def read(self, version: str) -> ModelVersion:
        """The manifest of ``version``; unreadable ones come back with ``error`` set."""
        path = self.artifacts_dir / version / "manifest.json"
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            return ModelVersion(version, error=f"{type(exc).__name__}: {exc}")
        if not isinstance(raw, dict):
            return ModelVersion(version, error="manifest is not a JSON object")

        def pick(key: str, kind: type) -> Any:
            value = raw.get(key)
            return value if isinstance(value, kind) else None

        return ModelVersion(
            version=version,
            created_at=pick("created_at", str),
            data_sha256=pick("data_sha256", str),
            dataset=pick("dataset", str),
            events=pick("events", int),
            models=pick("models", dict) or {},
            metrics=pick("metrics", dict) or {},
        )

    def versions(self) -> list[ModelVersion]:
        """Every version folder (staging folders ``.x.partial`` excluded), newest first."""
        try:
            folders = [p.name for p in self.artifacts_dir.iterdir()
                       if p.is_dir() and not p.name.startswith(".")]
        except OSError:
            return []
        found = [self.read(name) for name in folders]
        return sorted(found, key=lambda v: (v.created_ts or 0.0, v.version), reverse=True)

    def latest(self) -> ModelVersion | None:
        name = self.latest_version()
        return None if name is None else self.read(name)

    def status(self) -> dict[str, Any]:
        """JSON for the dashboard: the version in use and every version's manifest."""
        versions = self.versions()
        return {
            "latest": self.latest_version(),
            "versions": [v.to_dict() for v in versions],
            "message": None if versions else "no model trained yet",
        }
