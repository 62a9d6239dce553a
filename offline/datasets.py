"""Data set loaders returning one common :class:`Dataset`.

* ``online-retail``: the shipped Online Retail extract (``data/``), purchases as
  implicit feedback (one event per invoice line, weight 1).
* ``amazon-scientific``: RecBole atomic files (``Scientific.{train,valid,test}.inter``,
  ``Scientific.text``, ``Scientific.item2index``); each user's full sequence is
  rebuilt from the test file, its position serving as the timestamp, so a
  leave-last-one-out split reproduces the published split.
* ``ml-100k``: MovieLens ``u.data`` (ratings) and ``u.item`` (titles, genres).
* ``csv``: any shop's export, ``user_id,item_id,timestamp[,rating]`` plus an
  optional items file ``item_id,text``.

A missing file raises :class:`core.errors.DataNotFound` naming the path.

>>> import tempfile, pathlib
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> _ = (d / "log.csv").write_text("user_id,item_id,timestamp\\nu1,a,1\\nu1,b,2\\n")
>>> ds = load_dataset("csv", d / "log.csv")
>>> len(ds.interactions), [i.item_id for i in ds.items]
(2, ['a', 'b'])
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core.errors import ConfigurationError, DataNotFound, InvalidRequest
from core.scoring import Interactions
from core.types import Item

__all__ = ["DATASETS", "Dataset", "load_dataset"]


@dataclass(frozen=True)
class Dataset:
    """An interaction log with the items it refers to (and their text)."""

    name: str
    interactions: Interactions
    items: list[Item]

    @property
    def item_text(self) -> dict[str, str]:
        return {item.item_id: item.text for item in self.items}


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise DataNotFound(f"{what} not found at {path}", details={"path": str(path)})
    return path


def _items_for(log: Interactions, known: list[Item]) -> list[Item]:
    """The known items plus a bare Item for every logged id without content."""
    have = {i.item_id for i in known}
    extra = sorted(set(np.unique(log.items).tolist()) - have)
    return [*known, *(Item(item_id=i, name="") for i in extra)]


def load_online_retail(path: Path | None) -> Dataset:
    """The shipped Online Retail extract (``path`` is its data folder)."""
    from offline.catalog import load_catalog, load_purchases

    data_dir = path if path is not None else Path(__file__).resolve().parent.parent / "data"
    _need(data_dir / "purchases.csv.gz", "Online Retail purchases")
    purchases = load_purchases(data_dir)
    catalog = load_catalog(data_dir)
    log = Interactions(
        users=purchases["user_id"].astype(str).to_numpy(dtype=np.str_),
        items=purchases["item_id"].astype(str).to_numpy(dtype=np.str_),
        values=np.ones(len(purchases)),
        timestamps=purchases["timestamp"].to_numpy(dtype=np.float64),
    )
    return Dataset("online-retail", log, _items_for(log, list(catalog)))


def load_amazon_scientific(path: Path | None) -> Dataset:
    """Amazon Industrial & Scientific in RecBole atomic format."""
    root = path if path is not None else Path("../shared/data/amazon-scientific")
    test = pd.read_csv(_need(root / "Scientific.test.inter", "Amazon test file"), sep="\t",
                       dtype=str)
    test.columns = ["user", "history", "next"]
    index2asin = pd.read_csv(_need(root / "Scientific.item2index", "Amazon item index"),
                             sep="\t", header=None, names=["asin", "idx"], dtype=str)
    asin = dict(zip(index2asin["idx"], index2asin["asin"], strict=True))
    users: list[str] = []
    items: list[str] = []
    stamps: list[float] = []
    for user, history, nxt in test.itertuples(index=False):
        seq = [*history.split(), nxt]
        users.extend([user] * len(seq))
        items.extend(seq)
        stamps.extend(range(len(seq)))
    log = Interactions(np.array(users, dtype=np.str_), np.array(items, dtype=np.str_),
                       np.ones(len(users)), np.array(stamps, dtype=np.float64))
    text = pd.read_csv(_need(root / "Scientific.text", "Amazon item text"), sep="\t",
                       dtype=str, quoting=3, keep_default_na=False)
    text.columns = ["asin", "text"]
    by_asin = dict(zip(text["asin"], text["text"], strict=True))
    known = [Item(item_id=idx, name=by_asin.get(a, "").strip()) for idx, a in asin.items()]
    return Dataset("amazon-scientific", log, _items_for(log, known))


def load_ml100k(path: Path | None) -> Dataset:
    """MovieLens 100K ratings with movie titles and genres as item text."""
    root = path if path is not None else Path("../shared/data/ml-100k")
    data = pd.read_csv(_need(root / "u.data", "MovieLens ratings"), sep="\t", header=None,
                       names=["user", "item", "rating", "ts"], dtype={"user": str, "item": str})
    genres = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
              "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
              "Romance", "Sci-Fi", "Thriller", "War", "Western"]
    info = pd.read_csv(_need(root / "u.item", "MovieLens items"), sep="|", header=None,
                       encoding="latin-1", dtype={0: str})
    known = []
    for row in info.itertuples(index=False):
        flags = [g for g, f in zip(genres, row[5:24], strict=True) if f == 1]
        known.append(Item(item_id=str(row[0]), name=str(row[1]), category=" ".join(flags)))
    log = Interactions(
        data["user"].to_numpy(dtype=np.str_), data["item"].to_numpy(dtype=np.str_),
        data["rating"].to_numpy(dtype=np.float64), data["ts"].to_numpy(dtype=np.float64),
        is_rating=True,
    )
    return Dataset("ml-100k", log, _items_for(log, known))


def load_csv(path: Path | None, items_path: Path | None = None) -> Dataset:
    """A generic export: ``user_id,item_id,timestamp[,rating]`` (+ ``item_id,text``)."""
    if path is None:
        raise InvalidRequest("the csv data set needs --data PATH")
    frame = pd.read_csv(_need(path, "interactions file"), dtype={"user_id": str, "item_id": str})
    missing = {"user_id", "item_id", "timestamp"} - set(frame.columns)
    if missing:
        raise InvalidRequest(f"{path} lacks columns {sorted(missing)}")
    rated = "rating" in frame.columns
    values = frame["rating"].to_numpy(dtype=np.float64) if rated else np.ones(len(frame))
    log = Interactions(frame["user_id"].to_numpy(dtype=np.str_),
                       frame["item_id"].to_numpy(dtype=np.str_), values,
                       frame["timestamp"].to_numpy(dtype=np.float64), is_rating=rated)
    known: list[Item] = []
    if items_path is not None:
        items = pd.read_csv(_need(items_path, "items file"), dtype=str, keep_default_na=False)
        if not {"item_id", "text"} <= set(items.columns):
            raise InvalidRequest(f"{items_path} needs columns item_id,text")
        known = [Item(item_id=i, name=t) for i, t in zip(items["item_id"], items["text"],
                                                         strict=True)]
    return Dataset(path.stem, log, _items_for(log, known))


DATASETS: dict[str, Callable[[Path | None], Dataset]] = {
    "online-retail": load_online_retail,
    "amazon-scientific": load_amazon_scientific,
    "ml-100k": load_ml100k,
    "csv": load_csv,
}


def load_dataset(name: str, path: str | Path | None = None,
                 items_path: str | Path | None = None) -> Dataset:
    """Load a data set by name; ``path`` overrides its default location."""
    p = Path(path) if path is not None else None
    if name == "csv":
        return load_csv(p, Path(items_path) if items_path is not None else None)
    if name not in DATASETS:
        raise ConfigurationError(f"unknown data set {name!r}; choose one of {sorted(DATASETS)}")
    return DATASETS[name](p)
