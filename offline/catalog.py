"""Loaders for the shipped data set (``data/catalog.csv``, ``data/purchases.csv.gz``).

See ``data/README.md`` for the source (UCI Online Retail), the cleaning and the
columns. Nothing is cached: each call reads the files again.

Ids are strings everywhere: many item ids look numeric ("10002") and must not
turn into integers on the way in.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from core.errors import DataNotFound
from core.types import Item

__all__ = [
    "CATALOG_COLUMNS",
    "CATALOG_FILE",
    "PURCHASES_COLUMNS",
    "PURCHASES_FILE",
    "catalog_frame",
    "load_catalog",
    "load_purchases",
]

CATALOG_FILE = "catalog.csv"
PURCHASES_FILE = "purchases.csv.gz"
CATALOG_COLUMNS = ("item_id", "name", "category", "price")
PURCHASES_COLUMNS = ("invoice", "user_id", "item_id", "quantity", "price", "timestamp")

_CATALOG_DTYPES = {"item_id": str, "name": str, "category": str, "price": "float64"}
_PURCHASES_DTYPES = {
    "invoice": str,
    "user_id": str,
    "item_id": str,
    "quantity": "int64",
    "price": "float64",
    "timestamp": "int64",
}


def _existing(data_dir: Path, name: str) -> Path:
    path = Path(data_dir) / name
    if not path.is_file():
        raise DataNotFound(
            f"data file {name!r} not found in {Path(data_dir)}; the shipped data lives in the "
            "repository's data/ folder (rebuild it with scripts/prepare_data.py)",
            details={"path": str(path)},
        )
    return path


def _read(path: Path, dtypes: dict[str, object], columns: tuple[str, ...]) -> pd.DataFrame:
    frame = pd.read_csv(path, dtype=dtypes, keep_default_na=False)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataNotFound(f"{path} lacks the columns {missing}", details={"path": str(path)})
    return frame.loc[:, list(columns)]


def catalog_frame(data_dir: Path) -> pd.DataFrame:
    """The catalog as a DataFrame with columns ``item_id, name, category, price``.

    Raises
    ------
    core.errors.DataNotFound
        When ``data_dir/catalog.csv`` does not exist or lacks a column.
    """
    return _read(_existing(data_dir, CATALOG_FILE), _CATALOG_DTYPES, CATALOG_COLUMNS)


def load_catalog(data_dir: Path) -> list[Item]:
    """The catalog as :class:`core.types.Item` objects, in file order (sorted by id).

    Raises
    ------
    core.errors.DataNotFound
        When ``data_dir/catalog.csv`` does not exist or lacks a column.
    """
    frame = catalog_frame(data_dir)
    return [
        Item(item_id=item_id, name=name, category=category, price=float(price))
        for item_id, name, category, price in frame.itertuples(index=False, name=None)
    ]


def load_purchases(data_dir: Path) -> pd.DataFrame:
    """Purchase lines sorted by time.

    Columns ``invoice, user_id, item_id`` (str), ``quantity`` (int64), ``price``
    (float64, GBP per unit) and ``timestamp`` (int64 Unix seconds).

    Raises
    ------
    core.errors.DataNotFound
        When ``data_dir/purchases.csv.gz`` does not exist or lacks a column.
    """
    return _read(_existing(data_dir, PURCHASES_FILE), _PURCHASES_DTYPES, PURCHASES_COLUMNS)
