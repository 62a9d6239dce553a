"""Data-only model artifacts: ``<base>.npz`` (NumPy arrays) beside ``<base>.json`` (a header).

What the API loads from a model version must never execute code when read: arrays are
read with ``allow_pickle=False`` and the header is plain JSON naming its format, so a file
of another kind (or an older layout) is refused instead of being misread.

>>> import tempfile
>>> base = Path(tempfile.mkdtemp()) / "counts"
>>> write_arrays(base, {"format": "demo/1", "n": 2}, counts=np.array([3.0, 1.0]))
>>> header, arrays = read_arrays(base, "demo/1", "demo counts")
>>> header["n"], arrays["counts"].tolist()
(2, [3.0, 1.0])
>>> read_arrays(base, "demo/2", "demo counts")
Traceback (most recent call last):
...
core.errors.DataNotFound: ...counts.json: unknown demo counts format 'demo/1'
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from core.errors import DataNotFound

__all__ = ["artifact_files", "read_arrays", "write_arrays"]


def artifact_files(base: Path) -> tuple[Path, Path]:
    """The arrays file and the header file of the artifact ``base``."""
    return base.parent / f"{base.name}.npz", base.parent / f"{base.name}.json"


def write_arrays(base: Path, header: dict[str, Any], **arrays: npt.ArrayLike) -> None:
    """Write ``arrays`` (compressed) and ``header`` (JSON, which names the format)."""
    base.parent.mkdir(parents=True, exist_ok=True)
    npz, info = artifact_files(base)
    np.savez_compressed(npz, **arrays)  # type: ignore[arg-type]
    info.write_text(json.dumps(header, indent=2, sort_keys=True))


def read_arrays(base: Path, fmt: object, what: str
                ) -> tuple[dict[str, Any], dict[str, npt.NDArray[Any]]]:
    """The header and arrays :func:`write_arrays` wrote, if its header names ``fmt``.

    Raises
    ------
    core.errors.DataNotFound
        When either file is missing or the header names another format.
    """
    npz, info = artifact_files(base)
    if not npz.exists() or not info.exists():
        raise DataNotFound(f"no {what} at {base} (.npz and .json)")
    header = json.loads(info.read_text())
    if not isinstance(header, dict) or header.get("format") != fmt:
        found = header.get("format") if isinstance(header, dict) else None
        raise DataNotFound(f"{info}: unknown {what} format {found!r}")
    with np.load(npz, allow_pickle=False) as data:
        return header, {name: data[name] for name in data.files}
