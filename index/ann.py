"""Approximate item indexes for large catalogs, behind :class:`core.ports.VectorIndex`.

:class:`HnswIndex` is the index used past ``Settings.index_flat_max`` items: a
FAISS HNSW graph (``IndexHNSWFlat``, inner product on unit vectors, so cosine)
with string ids. :class:`GpuFlatIndex` is exact search on a GPU, used when
``STREAMREC_INDEX_DEVICE=gpu`` and faiss has GPU support (FAISS has no HNSW on
GPU, and a GPU scans a million 64-d vectors in well under a millisecond).

Neither FAISS index can remove vectors or take caller-chosen ids, so both keep
the same layout: FAISS row ``r`` holds the vector of ``rows[r]``, a string id,
or ``None`` for a **tombstone** (a removed id, or the old vector of an id that
was upserted again). Tombstoned rows never come back from a search:

- the HNSW index passes an ``IDSelector`` to FAISS, so the graph walk skips
  them (and the caller's ``exclude`` ids) and still fills ``k``;
- the GPU index asks FAISS for ``k`` plus the number of tombstones and
  excluded rows, and drops those rows afterwards.

When tombstones pass ``rebuild_fraction`` of the stored rows, the next write
rebuilds the FAISS index from the live vectors, in the writer's call and under
the lock: searches wait for it (an HNSW rebuild of 1M x 64 takes minutes on
2 cores; of 100k, seconds). Catalog churn is small, so this is rare with the
default 0.2.

Like :class:`index.faiss_index.FaissIndex` the indexes are thread-safe (one
lock around reads and writes) and ``save(path)`` writes a directory
(``index.faiss`` + ``ids.json``) that ``load(path)`` reads back.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import faiss
import numpy as np
import numpy.typing as npt

from core.errors import DataNotFound, InvalidRequest
from core.ports import Vector
from core.types import ScoredItems
from index.faiss_index import _check_ids, _last_wins, _read_meta, _VectorChecks, _write_dir

__all__ = ["GpuFlatIndex", "HnswIndex"]

_META_FILE = "ids.json"
_FAISS_FILE = "index.faiss"

#: Below this many queries FAISS searches on the calling thread only (see
#: ``index.faiss_index``: OpenMP's team start-up costs more than one query).
_PARALLEL_FROM = 256


class _RowIndex(_VectorChecks):
    """String ids over a FAISS index that only appends rows; removal by tombstones."""

    _FORMAT: ClassVar[str]
    #: True when the FAISS index filters rows during search (``IDSelector``).
    _FILTERS_IN_SEARCH: ClassVar[bool]

    def __init__(self, dim: int, *, rebuild_fraction: float = 0.2) -> None:
        if dim < 1:
            raise InvalidRequest(f"dim must be at least 1, got {dim}")
        if not 0 < rebuild_fraction <= 1:
            raise InvalidRequest(f"rebuild_fraction must be in (0, 1], got {rebuild_fraction}")
        self._dim = dim
        self.rebuild_fraction = rebuild_fraction
        self._lock = threading.RLock()
        self._index: Any = self._new_faiss()
        self._rows: list[str | None] = []
        self._to_row: dict[str, int] = {}
        self._dead: set[int] = set()
        self._dead_selector: Any = None  # IDSelectorBatch of self._dead, built on demand
        self.rebuilds = 0  # how often tombstones were compacted away

    # --- what a subclass provides ---------------------------------------------------

    def _new_faiss(self) -> Any:
        raise NotImplementedError

    def _to_cpu(self, index: Any) -> Any:
        return index

    def _from_cpu(self, index: Any) -> Any:
        return index

    def _params(self, selector: Any) -> Any:
        """FAISS search parameters (with ``selector`` where rows are filtered), or None."""
        return None

    def _hyperparameters(self) -> dict[str, Any]:
        return {"rebuild_fraction": self.rebuild_fraction}

    # --- the VectorIndex port -------------------------------------------------------

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self._hyperparameters().items())
        return f"{type(self).__name__}(dim={self._dim}, {args})  # {len(self)} items"

    def __len__(self) -> int:
        with self._lock:
            return len(self._to_row)

    def __contains__(self, item_id: object) -> bool:
        with self._lock:
            return item_id in self._to_row

    @property
    def tombstones(self) -> int:
        """Stored rows that no search returns (removed or replaced vectors)."""
        with self._lock:
            return len(self._dead)

    def ids(self) -> list[str]:
        """The ids in the index, in the order they were first added."""
        with self._lock:
            return list(self._to_row)

    def upsert(self, ids: Sequence[str], vectors: npt.ArrayLike) -> None:
        """Add or replace the vectors of ``ids`` (normalised to unit length).

        A replaced vector stays in FAISS as a tombstone until the next rebuild.

        Raises
        ------
        core.errors.InvalidRequest
            On a shape that does not match ``(len(ids), dim)``, a zero vector,
            NaN or infinity. Nothing is changed then.
        """
        _check_ids(ids)
        if not ids and np.size(vectors) == 0:
            return
        rows = self._unit_rows(vectors, len(ids), "vectors")
        unique, rows = _last_wins(ids, rows)
        with self._lock:
            self._bury([self._to_row[i] for i in unique if i in self._to_row])
            start = len(self._rows)
            self._index.add(rows)
            for pos, item_id in enumerate(unique):
                self._to_row[item_id] = start + pos
            self._rows.extend(unique)
            self._maybe_rebuild()

    def remove(self, ids: Sequence[str]) -> int:
        """Remove ``ids``; return how many were present (unknown ids are ignored)."""
        _check_ids(ids)
        with self._lock:
            rows = [self._to_row.pop(i) for i in dict.fromkeys(ids) if i in self._to_row]
            self._bury(rows)
            self._maybe_rebuild()
            return len(rows)

    def get(self, ids: Sequence[str]) -> dict[str, Vector]:
        """The stored (unit) vectors of the known ids among ``ids``."""
        with self._lock:
            return {i: np.asarray(self._index.reconstruct(self._to_row[i]), dtype=np.float32)
                    for i in ids if i in self._to_row}

    def save(self, path: Path) -> None:
        """Write the index to the directory ``path`` (``index.faiss`` + ``ids.json``)."""
        with self._lock:  # a consistent copy; the slow disk write runs unlocked
            meta = {"format": self._FORMAT, "dim": self._dim, "rows": list(self._rows),
                    "params": self._hyperparameters()}
            blob = faiss.serialize_index(self._to_cpu(self._index)).tobytes()

        def write(directory: Path) -> None:
            (directory / _FAISS_FILE).write_bytes(blob)
            (directory / _META_FILE).write_text(json.dumps(meta))

        _write_dir(path, write)

    # --- internals ----------------------------------------------------------------------

    def _bury(self, rows: Sequence[int]) -> None:
        for row in rows:
            self._rows[row] = None
            self._dead.add(row)
        if rows:
            self._dead_selector = None

    def _maybe_rebuild(self) -> None:
        if self._dead and len(self._dead) > self.rebuild_fraction * len(self._rows):
            self._rebuild()

    def _rebuild(self) -> None:
        """A fresh FAISS index from the live vectors, in first-added order."""
        live: list[tuple[str, int]] = list(self._to_row.items())
        fresh = self._new_faiss()
        if live:
            old_rows = np.fromiter((row for _, row in live), dtype=np.int64, count=len(live))
            vectors = self._index.reconstruct_n(0, self._index.ntotal)[old_rows]
            fresh.add(np.ascontiguousarray(vectors, dtype=np.float32))
        self._index = fresh
        self._rows = [item_id for item_id, _ in live]
        self._to_row = {item_id: row for row, (item_id, _) in enumerate(live)}
        self._dead = set()
        self._dead_selector = None
        self.rebuilds += 1

    def _selector(self, skip: list[int]) -> tuple[Any, list[Any]]:
        """An IDSelector that rejects tombstones and ``skip`` (plus objects to keep alive)."""
        if self._dead and self._dead_selector is None:
            self._dead_selector = faiss.IDSelectorBatch(
                np.fromiter(self._dead, dtype=np.int64, count=len(self._dead)))
        keep: list[Any] = []
        reject: Any = self._dead_selector
        if skip:
            skipped = faiss.IDSelectorBatch(np.asarray(skip, dtype=np.int64))
            keep.append(skipped)
            if reject is not None:
                keep.append(reject)
                reject = faiss.IDSelectorOr(reject, skipped)
            else:
                reject = skipped
        keep.append(reject)
        # SWIG does not tie a selector's lifetime to the selectors it wraps: `keep` does.
        return faiss.IDSelectorNot(reject), keep

    def _search(self, queries: npt.NDArray[np.float32], k: int,
                exclude: Sequence[str]) -> list[ScoredItems]:
        with self._lock:
            skip = sorted({self._to_row[i] for i in exclude if i in self._to_row})
            wanted = min(k, len(self._to_row) - len(skip))
            if wanted <= 0:
                return [ScoredItems.empty() for _ in range(len(queries))]
            params: Any = None
            keep: list[Any] = []
            if self._FILTERS_IN_SEARCH:
                fetch = wanted
                if self._dead or skip:
                    selector, keep = self._selector(skip)
                    params = self._params(selector)
                    keep.append(selector)
                else:
                    params = self._params(None)
            else:
                fetch = min(wanted + len(self._dead) + len(skip), len(self._rows))
            scores, rows = _search(self._index, queries, fetch, params)
            del keep  # the search is done with the selectors
            names, skipped = self._rows, set(skip)
            results = []
            for row_scores, row_numbers in zip(scores, rows, strict=True):
                pairs: list[tuple[str, float]] = []
                for score, number in zip(row_scores, row_numbers, strict=True):
                    name = names[number] if number >= 0 else None
                    if name is not None and number not in skipped:
                        pairs.append((name, float(score)))
                results.append(ScoredItems.from_pairs(pairs[:k]))
            return results

    @classmethod
    def _load(cls, path: Path, **kwargs: Any) -> Any:
        meta = _read_meta(path, cls._FORMAT)
        faiss_path = Path(path) / _FAISS_FILE
        if not faiss_path.is_file():
            raise DataNotFound(f"no saved index at {path} (missing {_FAISS_FILE})",
                               details={"path": str(path)})
        index = cls(int(meta["dim"]), **{**meta.get("params", {}), **kwargs})
        loaded = faiss.read_index(str(faiss_path))
        rows: list[str | None] = list(meta["rows"])
        if loaded.d != index.dim or loaded.ntotal != len(rows):
            raise DataNotFound(f"{path}: {_FAISS_FILE} and {_META_FILE} do not match")
        index._index = index._from_cpu(loaded)
        index._rows = rows
        index._to_row = {item_id: row for row, item_id in enumerate(rows) if item_id is not None}
        index._dead = {row for row, item_id in enumerate(rows) if item_id is None}
        return index


def _search(index: Any, queries: npt.NDArray[np.float32], k: int, params: Any
            ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    if len(queries) >= _PARALLEL_FROM:
        return index.search(queries, k, params=params)
    # omp_set_num_threads sets the calling thread's team size only.
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        return index.search(queries, k, params=params)
    finally:
        faiss.omp_set_num_threads(previous)


class HnswIndex(_RowIndex):
    """Approximate cosine search over item vectors in a FAISS HNSW graph, with string ids.

    Removal and replacement leave tombstones that searches skip; past
    ``rebuild_fraction`` of the stored rows the graph is rebuilt (see the
    module docstring).

    Parameters
    ----------
    dim
        Width of the vectors.
    m
        Links per node of the graph: more is better recall and more memory.
    ef_construction
        Candidate list size while building: more is a better graph, built slower.
    ef_search
        Candidate list size while searching (at least ``k`` is used): more is
        better recall, slower queries.
    rebuild_fraction
        Share of tombstoned rows that triggers a rebuild.

    Examples
    --------
    >>> index = HnswIndex(dim=3, m=8)
    >>> index.upsert(["mug", "cup", "scarf"], [[1, 0.1, 0], [1, 0.3, 0], [0, 0, 1]])
    >>> index.search([1, 0, 0], k=2).ids
    ['mug', 'cup']
    >>> index.search([1, 0, 0], k=2, exclude=["mug"]).ids
    ['cup', 'scarf']
    >>> index.remove(["cup", "tea"]), len(index), "cup" in index
    (1, 2, False)
    """

    _FORMAT = "streamrec.hnsw-index/1"
    _FILTERS_IN_SEARCH = True

    def __init__(self, dim: int, *, m: int = 32, ef_construction: int = 128,
                 ef_search: int = 256, rebuild_fraction: float = 0.2) -> None:
        if m < 2 or ef_construction < 1 or ef_search < 1:
            raise InvalidRequest(
                f"need m >= 2, ef_construction >= 1, ef_search >= 1; got {m}, "
                f"{ef_construction}, {ef_search}")
        self.m = m
        self.ef_construction = ef_construction
        self.ef_search = ef_search
        super().__init__(dim, rebuild_fraction=rebuild_fraction)

    def _new_faiss(self) -> Any:
        index = faiss.IndexHNSWFlat(self._dim, self.m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = self.ef_construction
        index.hnsw.efSearch = self.ef_search
        return index

    def _params(self, selector: Any) -> Any:
        params: Any = faiss.SearchParametersHNSW  # type: ignore[attr-defined]  # not in stubs
        if selector is None:
            return params(efSearch=self.ef_search)
        return params(sel=selector, efSearch=self.ef_search)

    def _hyperparameters(self) -> dict[str, Any]:
        return {"m": self.m, "ef_construction": self.ef_construction,
                "ef_search": self.ef_search, "rebuild_fraction": self.rebuild_fraction}

    @classmethod
    def load(cls, path: Path) -> HnswIndex:
        """Read an index written by :meth:`save`.

        Raises
        ------
        core.errors.DataNotFound
            When ``path`` holds no saved HNSW index.
        """
        index: HnswIndex = cls._load(path)
        return index


class GpuFlatIndex(_RowIndex):
    """Exact cosine search on a GPU (``faiss.GpuIndexFlatIP``), with string ids.

    Needs faiss built with GPU support; :func:`index.factory.build_vector_index`
    picks it for ``device="gpu"`` and falls back to CPU indexes otherwise. FAISS
    GPU searches return at most 2048 neighbours, so searches rebuild first when
    tombstones and exclusions would ask for more.

    Parameters
    ----------
    dim
        Width of the vectors.
    resources
        A ``faiss.StandardGpuResources`` (one per process is enough); None makes one.
    device
        GPU number.
    rebuild_fraction
        Share of tombstoned rows that triggers a rebuild.
    """

    _FORMAT = "streamrec.flat-rows-index/1"
    _FILTERS_IN_SEARCH = False
    #: FAISS GPU's largest k.
    _MAX_FETCH = 2048

    def __init__(self, dim: int, *, resources: Any = None, device: int = 0,
                 rebuild_fraction: float = 0.2) -> None:
        self._resources = resources
        self.device = device
        super().__init__(dim, rebuild_fraction=rebuild_fraction)

    def _gpu(self) -> Any:
        if self._resources is None:
            self._resources = faiss.StandardGpuResources()
        return self._resources

    def _new_faiss(self) -> Any:
        return self._from_cpu(faiss.IndexFlatIP(self._dim))

    def _to_cpu(self, index: Any) -> Any:
        return faiss.index_gpu_to_cpu(index)

    def _from_cpu(self, index: Any) -> Any:
        return faiss.index_cpu_to_gpu(self._gpu(), self.device, index)

    def _hyperparameters(self) -> dict[str, Any]:
        return {"device": self.device, "rebuild_fraction": self.rebuild_fraction}

    def _search(self, queries: npt.NDArray[np.float32], k: int,
                exclude: Sequence[str]) -> list[ScoredItems]:
        with self._lock:
            if min(k, len(self._to_row)) + len(self._dead) + len(exclude) > self._MAX_FETCH:
                if self._dead:
                    self._rebuild()
                if min(k, len(self._to_row)) + len(exclude) > self._MAX_FETCH:
                    raise InvalidRequest(
                        f"k plus excluded ids must stay within {self._MAX_FETCH} on GPU")
            return super()._search(queries, k, exclude)

    @classmethod
    def load(cls, path: Path, *, resources: Any = None) -> GpuFlatIndex:
        """Read an index written by :meth:`save` onto the GPU.

        Raises
        ------
        core.errors.DataNotFound
            When ``path`` holds no saved GPU flat index.
        """
        index: GpuFlatIndex = cls._load(path, resources=resources)
        return index
