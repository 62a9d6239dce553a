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

The recall of an HNSW search depends on the data and grows with the graph, so
a fixed ``efSearch`` is right for one catalog only. Given a ``target_recall``,
:class:`HnswIndex` measures instead: after a bulk load, a rebuild or growth by a
quarter it compares its answers with a flat scan of its own vectors on queries
drawn like the items, and takes the smallest ``efSearch`` that reaches the
target (:meth:`HnswIndex.calibrate`).

Like :class:`index.faiss_index.FaissIndex` the indexes are thread-safe (one
lock around reads and writes) and ``save(path)`` writes a directory
(``index.faiss`` + ``ids.json``) that ``load(path)`` reads back.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import faiss
import numpy as np
import numpy.typing as npt

from core.errors import DataNotFound, InvalidRequest
from core.ports import Vector
from core.types import ScoredItems
from index.faiss_index import _check_ids, _last_wins, _read_meta, _VectorChecks, _write_dir
from index.recall import RecallEstimate, estimate_recall, gaussian_queries, smallest_passing

__all__ = ["Calibration", "GpuFlatIndex", "HnswIndex"]

log = logging.getLogger(__name__)

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

    def _after_write(self) -> None:
        """Runs under the lock at the end of each upsert and remove."""

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
            self._after_write()

    def remove(self, ids: Sequence[str]) -> int:
        """Remove ``ids``; return how many were present (unknown ids are ignored)."""
        _check_ids(ids)
        with self._lock:
            rows = [self._to_row.pop(i) for i in dict.fromkeys(ids) if i in self._to_row]
            self._bury(rows)
            self._maybe_rebuild()
            self._after_write()
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


@dataclass(frozen=True)
class Calibration:
    """The outcome of :meth:`HnswIndex.calibrate`.

    Attributes
    ----------
    ef_search
        The ``efSearch`` chosen (and set on the index).
    recall
        Recall@k measured at ``ef_search`` on the calibration queries.
    target
        The recall asked for; ``met`` says whether the estimate's lower bound reached it.
    n_items
        Live items in the index when measured.
    seconds
        Time the calibration took (exact answers plus the efSearch search).
    """

    ef_search: int
    recall: RecallEstimate
    target: float
    n_items: int
    seconds: float

    @property
    def met(self) -> bool:
        """Whether the recall's lower bound reached ``target``."""
        return self.recall.lower_bound >= self.target


class HnswIndex(_RowIndex):
    """Approximate cosine search over item vectors in a FAISS HNSW graph, with string ids.

    Removal and replacement leave tombstones that searches skip; past
    ``rebuild_fraction`` of the stored rows the graph is rebuilt (see the
    module docstring). With a ``target_recall``, ``efSearch`` is calibrated by
    measurement (:meth:`calibrate`) after each rebuild and whenever the graph
    has grown by a quarter since it was last calibrated, so a bulk load
    calibrates once, at its end.

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
        better recall, slower queries. Calibration replaces it.
    target_recall
        Recall@10 against exact search that calibration aims for; 0 keeps
        ``ef_search`` as given.
    calibration_queries
        Queries calibration measures recall on.
    max_ef_search
        The largest ``efSearch`` calibration may choose: it bounds the time a
        calibration takes and what a query costs when the target is out of reach.
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

    With a target the index measures its own recall:

    >>> rng = np.random.default_rng(0)
    >>> tuned = HnswIndex(dim=16, m=8, target_recall=0.95, calibration_queries=200)
    >>> tuned.upsert([f"i{j}" for j in range(2000)], rng.standard_normal((2000, 16)))
    >>> tuned.calibration.met, tuned.ef_search == tuned.calibration.ef_search
    (True, True)
    """

    _FORMAT = "streamrec.hnsw-index/1"
    _FILTERS_IN_SEARCH = True
    #: Calibration reruns once the live items grew by this share since the last one.
    _RECALIBRATE_GROWTH = 0.25
    #: Stored vectors that the calibration queries' Gaussian is fitted on.
    _FIT_SAMPLE = 10_000
    #: Neighbours that calibration measures recall of (the bench's and the goal's k).
    _K = 10
    #: Smaller indexes are not calibrated: a search with the default efSearch sees
    #: about all of their items, and a Gaussian fit needs a sample.
    _MIN_CALIBRATED = 100

    def __init__(self, dim: int, *, m: int = 48, ef_construction: int = 128,
                 ef_search: int = 256, target_recall: float = 0.0,
                 calibration_queries: int = 1000, max_ef_search: int = 4096,
                 rebuild_fraction: float = 0.2) -> None:
        if m < 2 or ef_construction < 1 or ef_search < 1:
            raise InvalidRequest(
                f"need m >= 2, ef_construction >= 1, ef_search >= 1; got {m}, "
                f"{ef_construction}, {ef_search}")
        if not 0 <= target_recall <= 1 or calibration_queries < 2 or max_ef_search < self._K:
            raise InvalidRequest(
                f"need 0 <= target_recall <= 1, calibration_queries >= 2, max_ef_search >= "
                f"{self._K}; got {target_recall}, {calibration_queries}, {max_ef_search}")
        self.m = m
        self.ef_construction = ef_construction
        self.ef_search = ef_search
        self.target_recall = target_recall
        self.calibration_queries = calibration_queries
        self.max_ef_search = max_ef_search
        #: The last :meth:`calibrate` outcome (None before the first).
        self.calibration: Calibration | None = None
        self._calibrated_at: tuple[int, int] | None = None  # (rebuilds, live items) then
        super().__init__(dim, rebuild_fraction=rebuild_fraction)

    def _new_faiss(self) -> Any:
        index = faiss.IndexHNSWFlat(self._dim, self.m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = self.ef_construction
        index.hnsw.efSearch = self.ef_search
        return index

    def _params(self, selector: Any, ef_search: int | None = None) -> Any:
        params: Any = faiss.SearchParametersHNSW  # type: ignore[attr-defined]  # not in stubs
        ef = self.ef_search if ef_search is None else ef_search
        if selector is None:
            return params(efSearch=ef)
        return params(sel=selector, efSearch=ef)

    def _hyperparameters(self) -> dict[str, Any]:
        return {"m": self.m, "ef_construction": self.ef_construction,
                "ef_search": self.ef_search, "target_recall": self.target_recall,
                "calibration_queries": self.calibration_queries,
                "max_ef_search": self.max_ef_search, "rebuild_fraction": self.rebuild_fraction}

    def _after_write(self) -> None:
        if not self.target_recall or len(self._to_row) < self._MIN_CALIBRATED:
            return
        if self._calibrated_at is not None:
            rebuilds, size = self._calibrated_at
            if rebuilds == self.rebuilds and len(self._to_row) <= size * (
                    1 + self._RECALIBRATE_GROWTH):
                return
        self.calibrate()

    def calibrate(self, queries: npt.ArrayLike | None = None) -> Calibration:
        """Set ``ef_search`` to the smallest value whose recall@10 reaches ``target_recall``.

        Recall is measured against exact answers (a flat scan of the graph's own
        stored vectors, tombstones skipped) on ``queries``, or by default on
        ``calibration_queries`` new vectors drawn like the stored ones (see
        :func:`index.recall.gaussian_queries`); pass real queries (user vectors)
        where there are some. ``efSearch`` doubles from 16 and is then bisected
        (:func:`index.recall.smallest_passing`), at most ``max_ef_search``; a
        value passes when its recall minus two standard errors reaches the
        target. Searches wait while it runs (at 1M items, tens of seconds).

        Raises
        ------
        core.errors.InvalidRequest
            Without a ``target_recall``, with fewer than 2 items, or on queries
            of the wrong shape.
        """
        if not self.target_recall:
            raise InvalidRequest("calibration needs a target_recall above 0")
        started = time.perf_counter()
        with self._lock:
            live = np.fromiter(self._to_row.values(), dtype=np.int64, count=len(self._to_row))
            if len(live) < 2:
                raise InvalidRequest(f"calibration needs 2 items or more, got {len(live)}")
            rng = np.random.default_rng(len(live))  # the same index calibrates the same way
            if queries is None:
                fit_rows = np.sort(rng.choice(live, size=min(len(live), self._FIT_SAMPLE),
                                              replace=False))
                sample = self._index.reconstruct_batch(fit_rows)
                rows = gaussian_queries(sample, self.calibration_queries, rng)
            else:
                rows = self._query_rows(queries)
            selector, keep = self._selector([]) if self._dead else (None, [])
            exact = faiss.downcast_index(self._index.storage)
            flat_params: Any = None
            if selector is not None:
                flat_params = faiss.SearchParameters()
                flat_params.sel = selector
            truth = _search(exact, rows, self._K, flat_params)[1]

            def measure(ef: int) -> RecallEstimate:
                found = _search(self._index, rows, self._K, self._params(selector, ef))[1]
                return estimate_recall(truth, found)

            ef, recall = smallest_passing(measure, self.target_recall,
                                          start=min(16, self.max_ef_search),
                                          cap=self.max_ef_search)
            del keep  # the searches are done with the selector
            self.ef_search = ef
            done = Calibration(ef, recall, self.target_recall, len(live),
                               time.perf_counter() - started)
            self.calibration = done
            self._calibrated_at = (self.rebuilds, len(live))
        log.log(logging.INFO if done.met else logging.WARNING,
                "HNSW (M=%d) efSearch %d: recall@%d %.3f +- %.3f on %d queries over %d items, "
                "target %.3f %s, %.1f s", self.m, ef, self._K, recall.mean, recall.stderr,
                recall.queries, done.n_items, done.target,
                "met" if done.met else f"NOT met at the efSearch cap {self.max_ef_search}",
                done.seconds)
        return done

    @classmethod
    def load(cls, path: Path) -> HnswIndex:
        """Read an index written by :meth:`save` (its ``ef_search`` as calibrated then).

        Raises
        ------
        core.errors.DataNotFound
            When ``path`` holds no saved HNSW index.
        """
        index: HnswIndex = cls._load(path)
        if index.target_recall:  # it was calibrated on these items before it was saved
            index._calibrated_at = (index.rebuilds, len(index))
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
