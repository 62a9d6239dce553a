"""An interaction log as Parquet: the export that Spark (or any engine) trains from.

A folder of ``part-NNNNN.parquet`` files with the columns ``user_id``, ``item_id``,
``weight`` (implicit strength of the event) and ``ts`` (event time, Unix seconds),
one row per event, oldest first. pyarrow comes with the ``spark`` extra.

>>> import tempfile
>>> from pathlib import Path
>>> import pyarrow.parquet as pq
>>> log = Interactions.from_records([("u", "a", 1.0, 10.0), ("v", "a", 4.0, 11.0)])
>>> folder = Path(tempfile.mkdtemp())
>>> [p.name for p in write_parquet(log, folder)]
['part-00000.parquet']
>>> pq.read_table(folder).to_pydict()["weight"]
[1.0, 4.0]
>>> len(folder_sha256(folder))
64
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from core.errors import ConfigurationError
from core.scoring import Interactions

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = ["COLUMNS", "folder_sha256", "interaction_table", "write_parquet"]

COLUMNS = ("user_id", "item_id", "weight", "ts")
#: Rows per file: a few tens of MB, so executors read the files in parallel.
ROWS_PER_FILE = 2_000_000


def interaction_table(users: Sequence[str] | npt.NDArray[np.str_],
                      items: Sequence[str] | npt.NDArray[np.str_],
                      weights: Sequence[float] | npt.NDArray[np.float64],
                      timestamps: Sequence[float] | npt.NDArray[np.float64] | None = None,
                      ) -> pa.Table:
    """Event rows as an Arrow table (Spark reads it without pandas)."""
    import pyarrow as pa

    columns = {"user_id": pa.array(np.asarray(users).tolist(), pa.string()),
               "item_id": pa.array(np.asarray(items).tolist(), pa.string()),
               "weight": pa.array(np.asarray(weights, dtype=np.float64), pa.float64())}
    if timestamps is not None:
        columns["ts"] = pa.array(np.asarray(timestamps, dtype=np.float64), pa.float64())
    return pa.table(columns)


def write_parquet(log: Interactions, folder: Path,
                  rows_per_file: int = ROWS_PER_FILE) -> list[Path]:
    """Write ``log`` into an empty (or new) ``folder``; return the files written."""
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    if any(folder.glob("*.parquet")):
        raise ConfigurationError(f"{folder} already holds Parquet files: export into a new folder")
    paths = []
    for n, start in enumerate(range(0, max(len(log), 1), rows_per_file)):
        part = slice(start, start + rows_per_file)
        path = folder / f"part-{n:05d}.parquet"
        pq.write_table(interaction_table(log.users[part], log.items[part], log.values[part],
                                         log.timestamps[part]), path)
        paths.append(path)
    return paths


def folder_sha256(folder: Path) -> str:
    """Content hash of a Parquet export (its files, by name), for the artifact manifest."""
    h = hashlib.sha256()
    for path in sorted(folder.glob("*.parquet")):
        h.update(path.name.encode() + b"\x1e")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()
