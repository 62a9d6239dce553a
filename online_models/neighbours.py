"""Item-item neighbour lists computed at train time (EASE's top-k weights), served like
co-visitation: for each anchor item, its strongest linked items with their weights.

The artifact is data only: ``<path>.npz`` (read with ``allow_pickle=False``, so loading
never executes code) holds the item ids, an ``(n_items, k)`` matrix of neighbour rows
(-1 pads a short list) and their float32 weights, strongest first; ``<path>.json`` holds
the format version, ``k`` and where the weights came from (``meta``).

>>> import tempfile, pathlib
>>> w = np.array([[0.0, 0.5, 0.1], [0.4, 0.0, -0.2], [0.3, 0.6, 0.0]])
>>> nb = ItemNeighbours.from_weights(["a", "b", "c"], w, k=2, meta={"l2": 10.0})
>>> nb.neighbours(["a", "b", "zz"], 5)["b"].ids
['a']
>>> path = pathlib.Path(tempfile.mkdtemp()) / "ease_neighbours"
>>> nb.save(path)
>>> again = ItemNeighbours.load(path)
>>> again.neighbours(["c"], 1)["c"].ids, again.meta["l2"]
(['b'], 10.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from core.types import ScoredItems
from online_models.artifacts import read_arrays, write_arrays

__all__ = ["FORMAT_VERSION", "ItemNeighbours"]

FORMAT_VERSION = 1


@dataclass(frozen=True)
class ItemNeighbours:
    """Top-k neighbours per item (see the module docstring for the file format)."""

    item_ids: list[str]
    rows: npt.NDArray[np.int32]
    weights: npt.NDArray[np.float32]
    meta: dict[str, Any] = field(default_factory=dict)
    _index: dict[str, int] = field(init=False, repr=False, compare=False)
    _ids: npt.NDArray[np.str_] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.rows.shape != self.weights.shape or self.rows.shape[0] != len(self.item_ids):
            raise ValueError("rows and weights must be (n_items, k) for the item ids given")
        object.__setattr__(self, "_index", {it: j for j, it in enumerate(self.item_ids)})
        object.__setattr__(self, "_ids", np.array(self.item_ids, dtype=np.str_))

    @property
    def k(self) -> int:
        return int(self.rows.shape[1])

    @classmethod
    def from_weights(cls, item_ids: Sequence[str], weights: npt.NDArray[np.float64], k: int,
                     meta: dict[str, Any] | None = None) -> ItemNeighbours:
        """Each row's ``k`` largest positive entries (the diagonal is skipped)."""
        n = len(item_ids)
        k = max(0, min(k, n - 1))
        w = np.array(weights, dtype=np.float64)
        np.fill_diagonal(w, -np.inf)
        top = np.argpartition(-w, k - 1, axis=1)[:, :k] if k else np.zeros((n, 0), np.int64)
        vals = np.take_along_axis(w, top, axis=1)
        order = np.argsort(-vals, axis=1, kind="stable")
        top, vals = np.take_along_axis(top, order, axis=1), np.take_along_axis(vals, order, 1)
        keep = vals > 0
        rows = np.where(keep, top, -1).astype(np.int32)
        return cls(list(item_ids), rows, np.where(keep, vals, 0.0).astype(np.float32),
                   dict(meta or {}))

    def neighbours(self, item_ids: Sequence[str], n: int) -> dict[str, ScoredItems]:
        """Up to ``n`` neighbours of each known anchor, strongest first (unknown anchors
        are left out)."""
        known = [(a, j) for a in item_ids if (j := self._index.get(a)) is not None]
        if not known:
            return {}
        n = min(n, self.k)
        # one gather for all anchors; -1 pads sit at the end of each row (weights sorted)
        block = np.array([j for _, j in known], dtype=np.int64)
        rows = self.rows[block, :n]
        weights = self.weights[block, :n].astype(np.float64)
        ids = self._ids[np.maximum(rows, 0)]
        lengths = (rows >= 0).sum(axis=1).tolist()
        return {anchor: ScoredItems(ids[r, :m].tolist(), weights[r, :m])
                for r, ((anchor, _), m) in enumerate(zip(known, lengths, strict=True))}

    def linked(self, anchors: Sequence[str]) -> dict[str, float]:
        """Each item some known anchor lists, with the weights it gets summed over their
        lists (items no list names are left out): work in the ~k x anchors entries read,
        never in the catalogue's size.

        >>> nb = ItemNeighbours.from_weights(["a", "b", "c"], np.array(
        ...     [[0.0, 0.5, 0.1], [0.4, 0.0, 0.2], [0.3, 0.6, 0.0]]), k=2)
        >>> {k: round(v, 2) for k, v in sorted(nb.linked(["a", "b", "zz"]).items())}
        {'a': 0.4, 'b': 0.5, 'c': 0.3}
        """
        rows = [j for j in map(self._index.get, anchors) if j is not None]
        if not rows:
            return {}
        linked, weights = self.rows[rows].ravel(), self.weights[rows].ravel()
        keep = linked >= 0
        found, at = np.unique(linked[keep], return_inverse=True)
        sums = np.bincount(at, weights=weights[keep].astype(np.float64))
        ids = self.item_ids
        return {ids[j]: w for j, w in zip(found.tolist(), sums.tolist(), strict=True)}

    def as_matrix(self, item_ids: Sequence[str]) -> sp.csr_matrix:
        """The truncated weights as a sparse (anchor x item) matrix over ``item_ids``
        (ids unknown to either side drop out)."""
        col = {it: c for c, it in enumerate(item_ids)}
        own = np.array([col.get(it, -1) for it in self.item_ids], dtype=np.int64)
        r, slot = np.nonzero(self.rows >= 0)
        src, dst = own[r], own[self.rows[r, slot]]
        keep = (src >= 0) & (dst >= 0)
        return sp.csr_matrix((self.weights[r, slot][keep].astype(np.float64),
                              (src[keep], dst[keep])), shape=(len(item_ids), len(item_ids)))

    def save(self, path: str | Path) -> None:
        """Write ``<path>.npz`` and ``<path>.json`` (data only)."""
        write_arrays(Path(path), {"format": FORMAT_VERSION, "k": self.k,
                                  "items": len(self.item_ids), "meta": self.meta},
                     item_ids=np.array(self.item_ids, dtype=np.str_),
                     rows=self.rows, weights=self.weights)

    @classmethod
    def load(cls, path: str | Path) -> ItemNeighbours:
        """Read what :meth:`save` wrote; no code is executed (``allow_pickle=False``)."""
        header, data = read_arrays(Path(path), FORMAT_VERSION, "item neighbours")
        return cls(data["item_ids"].tolist(), data["rows"].astype(np.int32),
                   data["weights"].astype(np.float32), dict(header.get("meta", {})))
