"""Approximate item indexes for large catalogs, behind :class:`core.ports.VectorIndex`.

Past ``Settings.index_flat_max`` items the index is approximate:
:class:`IvfIndex`, a FAISS inverted file (``IndexIVFFlat``) for mid-size
catalogs, up to ``Settings.index_ivf_max``, and :class:`HnswIndex`, a FAISS HNSW
graph (``IndexHNSWFlat``) beyond, both inner product on unit vectors (so
cosine) with string ids. :class:`GpuFlatIndex` is exact search on a GPU, used
when ``STREAMREC_INDEX_DEVICE=gpu`` and faiss has GPU support (FAISS has no HNSW
on GPU, and a GPU scans a million 64-d vectors in well under a millisecond).

None of these FAISS indexes can remove vectors cheaply or take caller-chosen
ids, so all keep the same layout: FAISS row ``r`` holds the vector of
``rows[r]``, a string id, or ``None`` for a **tombstone** (a removed id, or the
old vector of an id that was upserted again). Tombstoned rows never come back
from a search:

- the HNSW and IVF indexes pass an ``IDSelector`` to FAISS, so the search skips
  them (and the caller's ``exclude`` ids) and still fills ``k``;
- the GPU index asks FAISS for ``k`` plus the number of tombstones and
  excluded rows, and drops those rows afterwards.

When tombstones pass ``rebuild_fraction`` of the stored rows, the next write
rebuilds the FAISS index from the live vectors (an IVF index retrains), in the
writer's call and under the lock: searches wait for it (an HNSW rebuild of
1M x 64 takes minutes on 2 cores; of 100k, seconds; an IVF rebuild of 100k
well under a second). Catalog churn is small, so this is rare with the
default 0.2.

The recall of an approximate search depends on the data and on the index's
size, so a fixed ``efSearch`` (HNSW) or ``nprobe`` (IVF) is right for one
catalog only. Given a ``target_recall``, the index measures instead: after a
bulk load, a rebuild or growth by a quarter it compares its answers with exact
search over its own vectors on queries drawn like the items, and takes the
smallest ``efSearch`` or ``nprobe`` that reaches the target
(:meth:`HnswIndex.calibrate`, :meth:`IvfIndex.calibrate`).

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
from typing import Any, ClassVar, Self

import faiss
import numpy as np
import numpy.typing as npt

from core.errors import DataNotFound, InvalidRequest
from core.types import ScoredItems
from index.faiss_index import (
    _check_ids,
    _last_wins,
    _read_meta,
    _reconstructed,
    _VectorChecks,
    _write_dir,
)
from index.recall import (
    RecallEstimate,
    estimate_recall,
    gaussian_queries,
    profile_queries,
    smallest_passing,
    worst,
)

__all__ = ["Calibration", "GpuFlatIndex", "HnswIndex", "IvfIndex"]

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
        #: How often the FAISS index was rebuilt from the live vectors (tombstones
        #: compacted away; an IvfIndex also counts its training).
        self.rebuilds = 0

    # --- what a subclass provides ---------------------------------------------------

    def _new_faiss(self) -> Any:
        raise NotImplementedError

    def _fresh(self, vectors: npt.NDArray[np.float32]) -> Any:
        """A new FAISS index holding ``vectors`` as rows 0, 1, ... (for a rebuild)."""
        fresh = self._new_faiss()
        if len(vectors):
            fresh.add(vectors)
        return fresh

    def _to_cpu(self, index: Any) -> Any:
        return index

    def _from_cpu(self, index: Any) -> Any:
        return index

    def _params(self, selector: Any) -> Any:
        """FAISS search parameters (with ``selector`` where rows are filtered), or None."""
        return None

    def _hyperparameters(self) -> dict[str, Any]:
        return {"rebuild_fraction": self.rebuild_fraction}

    def _search_rows(self, queries: npt.NDArray[np.float32], k: int, selector: Any
                     ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        """Scores and FAISS rows of the top ``k`` per query (``selector``: rows to keep)."""
        return _search(self._index, queries, k, self._params(selector))

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

    def vectors_of(self, ids: Sequence[str]) -> tuple[list[int], npt.NDArray[np.float32]]:
        """The stored vectors of the known ids among ``ids`` (distinct) as the rows of one
        matrix, and each row's position in ``ids``."""
        with self._lock:
            return _reconstructed(self._index, self._to_row, ids, self._dim)

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

    @classmethod
    def load(cls, path: Path) -> Self:
        """Read an index of this class written by :meth:`save` (an ANN index with its
        search setting as calibrated then; a trained IVF index stays trained).

        Raises
        ------
        core.errors.DataNotFound
            When ``path`` holds no saved index of this class.
        """
        return cls._load(path)

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
        old_rows = np.fromiter((row for _, row in live), dtype=np.int64, count=len(live))
        vectors = self._index.reconstruct_batch(old_rows) if live else np.zeros(
            (0, self._dim), dtype=np.float32)
        self._index = self._fresh(np.ascontiguousarray(vectors, dtype=np.float32))
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
            skip = sorted({row for row in map(self._to_row.get, exclude) if row is not None})
            wanted = min(k, len(self._to_row) - len(skip))
            if wanted <= 0:
                return [ScoredItems.empty() for _ in range(len(queries))]
            selector: Any = None
            keep: list[Any] = []
            if self._FILTERS_IN_SEARCH:
                fetch = wanted
                if self._dead or skip:
                    selector, keep = self._selector(skip)
                    keep.append(selector)
            else:
                fetch = min(wanted + len(self._dead) + len(skip), len(self._rows))
            scores, rows = self._search_rows(queries, fetch, selector)
            del keep  # the search is done with the selectors
            names, skipped = self._rows, set(skip)
            results = []
            # Python ints and floats (tolist) map to names several times faster than
            # NumPy scalars one by one.
            for row_scores, row_numbers in zip(scores.tolist(), rows.tolist(), strict=True):
                ids: list[str] = []
                kept: list[float] = []
                for score, number in zip(row_scores, row_numbers, strict=True):
                    if (number >= 0 and (name := names[number]) is not None
                            and number not in skipped):
                        ids.append(name)
                        kept.append(score)
                        if len(ids) == k:
                            break
                results.append(ScoredItems(ids, np.array(kept, dtype=np.float64)))
            return results

    @classmethod
    def _load(cls, path: Path, **kwargs: Any) -> Self:
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
    """The outcome of :meth:`HnswIndex.calibrate` or :meth:`IvfIndex.calibrate`.

    Attributes
    ----------
    knob
        The search-time setting calibrated: ``"efSearch"`` (HNSW) or ``"nprobe"`` (IVF).
    value
        The value chosen (and set on the index).
    recall
        Recall@k measured at ``value`` on the calibration queries.
    target
        The recall asked for; ``met`` says whether the estimate's lower bound reached it.
    n_items
        Live items in the index when measured.
    seconds
        Time the calibration took (exact answers plus the searches).
    """

    knob: str
    value: int
    recall: RecallEstimate
    target: float
    n_items: int
    seconds: float

    @property
    def met(self) -> bool:
        """Whether the recall's lower bound reached ``target``."""
        return self.recall.lower_bound >= self.target


class _Calibrated(_RowIndex):
    """A :class:`_RowIndex` with one search-time knob that is calibrated by measurement.

    With a ``target_recall``, :meth:`calibrate` runs after each rebuild and
    whenever the live items have grown by a quarter since the last one, so a bulk
    load calibrates once, at its end.
    """

    #: FAISS's name of the calibrated knob (``efSearch``, ``nprobe``), for logs.
    _KNOB: ClassVar[str]
    #: Calibration reruns once the live items grew by this share since the last one.
    _RECALIBRATE_GROWTH = 0.25
    #: Stored vectors that the calibration queries' Gaussian is fitted on.
    _FIT_SAMPLE = 10_000
    #: Neighbours that calibration measures recall of (the bench's and the goal's k).
    _K = 10
    #: Smaller indexes are not calibrated: a search sees about all of their items,
    #: and a Gaussian fit needs a sample.
    _MIN_CALIBRATED = 100

    def __init__(self, dim: int, *, target_recall: float, calibration_queries: int,
                 rebuild_fraction: float) -> None:
        if not 0 <= target_recall <= 1 or calibration_queries < 2:
            raise InvalidRequest(
                f"need 0 <= target_recall <= 1 and calibration_queries >= 2; got "
                f"{target_recall}, {calibration_queries}")
        self.target_recall = target_recall
        self.calibration_queries = calibration_queries
        #: The last :meth:`calibrate` outcome (None before the first).
        self.calibration: Calibration | None = None
        self._calibrated_at: tuple[int, int] | None = None  # (rebuilds, live items) then
        super().__init__(dim, rebuild_fraction=rebuild_fraction)

    # --- what a subclass provides ---------------------------------------------------

    def _params(self, selector: Any, value: int | None = None) -> Any:
        """Search parameters with the knob at ``value`` (None: its current setting)."""
        raise NotImplementedError

    def _knob_range(self) -> tuple[int, int]:
        """The smallest value calibration tries first, and the largest it may choose."""
        raise NotImplementedError

    def _set_knob(self, value: int) -> None:
        raise NotImplementedError

    def _exact_rows(self, queries: npt.NDArray[np.float32], selector: Any
                    ) -> npt.NDArray[np.int64]:
        """The exact top ``_K`` FAISS rows per query (``selector``: rows to keep)."""
        raise NotImplementedError

    def _label(self) -> str:
        """How the log names the index, e.g. ``HNSW (M=48)``."""
        raise NotImplementedError

    def _approximate(self) -> bool:
        """Whether searches can miss neighbours now (only then is there anything to tune)."""
        return True

    # --- calibration ----------------------------------------------------------------

    def _after_write(self) -> None:
        if (not self.target_recall or len(self._to_row) < self._MIN_CALIBRATED
                or not self._approximate()):
            return
        if self._calibrated_at is not None:
            rebuilds, size = self._calibrated_at
            if rebuilds == self.rebuilds and len(self._to_row) <= size * (
                    1 + self._RECALIBRATE_GROWTH):
                return
        self.calibrate()

    def calibrate(self, queries: npt.ArrayLike | None = None) -> Calibration:
        """Set the search knob to the smallest value whose recall@10 reaches ``target_recall``.

        Recall is measured against exact answers (of the index's own stored
        vectors, tombstones skipped) on ``queries``, or by default on
        ``calibration_queries`` new vectors, half drawn like the stored ones
        (:func:`index.recall.gaussian_queries`) and half shaped like shoppers'
        profiles (:func:`index.recall.profile_queries`), each half having to reach
        the target; pass real queries (user vectors) where there are some. The
        knob doubles from its smallest value and is then bisected
        (:func:`index.recall.smallest_passing`), up to its cap; a value passes when
        its recall minus two standard errors reaches the target. Searches wait
        while it runs (at 1M items, tens of seconds).

        Raises
        ------
        core.errors.InvalidRequest
            Without a ``target_recall``, with fewer than 2 items, on queries of
            the wrong shape, or while searches are exact (an untrained IVF index).
        """
        if not self.target_recall:
            raise InvalidRequest("calibration needs a target_recall above 0")
        started = time.perf_counter()
        with self._lock:
            if not self._approximate():
                raise InvalidRequest(f"{type(self).__name__} searches exactly for now: "
                                     "nothing to calibrate")
            live = np.fromiter(self._to_row.values(), dtype=np.int64, count=len(self._to_row))
            if len(live) < 2:
                raise InvalidRequest(f"calibration needs 2 items or more, got {len(live)}")
            rng = np.random.default_rng(len(live))  # the same index calibrates the same way
            if queries is None:
                fit_rows = np.sort(rng.choice(live, size=min(len(live), self._FIT_SAMPLE),
                                              replace=False))
                sample = self._index.reconstruct_batch(fit_rows)
                half = max(1, self.calibration_queries // 2)
                rows = np.vstack([gaussian_queries(sample, half, rng),
                                  profile_queries(sample, half, rng)])
                kinds = [slice(0, half), slice(half, None)]  # each kind must pass
            else:
                rows, kinds = self._query_rows(queries), [slice(None)]
            selector, keep = self._selector([]) if self._dead else (None, [])
            truth = self._exact_rows(rows, selector)

            def measure(value: int) -> RecallEstimate:
                found = _search(self._index, rows, self._K, self._params(selector, value))[1]
                return worst(*(estimate_recall(truth[kind], found[kind]) for kind in kinds))

            start, cap = self._knob_range()
            value, recall = smallest_passing(measure, self.target_recall, start=start, cap=cap)
            del keep  # the searches are done with the selector
            self._set_knob(value)
            done = Calibration(self._KNOB, value, recall, self.target_recall, len(live),
                               time.perf_counter() - started)
            self.calibration = done
            self._calibrated_at = (self.rebuilds, len(live))
        log.log(logging.INFO if done.met else logging.WARNING,
                "%s %s %d: recall@%d %.3f +- %.3f on %d queries over %d items, "
                "target %.3f %s, %.1f s", self._label(), self._KNOB, value, self._K,
                recall.mean, recall.stderr, recall.queries, done.n_items, done.target,
                "met" if done.met else f"NOT met at the {self._KNOB} cap {cap}", done.seconds)
        return done

    @classmethod
    def _load(cls, path: Path, **kwargs: Any) -> Self:
        index = super()._load(path, **kwargs)
        if index.target_recall:  # it was calibrated on these items before it was saved
            index._calibrated_at = (index.rebuilds, len(index))
        return index


class HnswIndex(_Calibrated):
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
    >>> tuned.calibration.met, tuned.ef_search == tuned.calibration.value
    (True, True)
    """

    _FORMAT = "streamrec.hnsw-index/1"
    _FILTERS_IN_SEARCH = True
    _KNOB = "efSearch"

    def __init__(self, dim: int, *, m: int = 48, ef_construction: int = 128,
                 ef_search: int = 256, target_recall: float = 0.0,
                 calibration_queries: int = 1000, max_ef_search: int = 4096,
                 rebuild_fraction: float = 0.2) -> None:
        if m < 2 or ef_construction < 1 or ef_search < 1:
            raise InvalidRequest(
                f"need m >= 2, ef_construction >= 1, ef_search >= 1; got {m}, "
                f"{ef_construction}, {ef_search}")
        if max_ef_search < self._K:
            raise InvalidRequest(f"max_ef_search must be >= {self._K}, got {max_ef_search}")
        self.m = m
        self.ef_construction = ef_construction
        self.ef_search = ef_search
        self.max_ef_search = max_ef_search
        super().__init__(dim, target_recall=target_recall,
                         calibration_queries=calibration_queries,
                         rebuild_fraction=rebuild_fraction)

    def _new_faiss(self) -> Any:
        index = faiss.IndexHNSWFlat(self._dim, self.m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = self.ef_construction
        index.hnsw.efSearch = self.ef_search
        return index

    def _params(self, selector: Any, value: int | None = None) -> Any:
        params: Any = faiss.SearchParametersHNSW  # type: ignore[attr-defined]  # not in stubs
        ef = self.ef_search if value is None else value
        if selector is None:
            return params(efSearch=ef)
        return params(sel=selector, efSearch=ef)

    def _hyperparameters(self) -> dict[str, Any]:
        return {"m": self.m, "ef_construction": self.ef_construction,
                "ef_search": self.ef_search, "target_recall": self.target_recall,
                "calibration_queries": self.calibration_queries,
                "max_ef_search": self.max_ef_search, "rebuild_fraction": self.rebuild_fraction}

    def _knob_range(self) -> tuple[int, int]:
        return min(16, self.max_ef_search), self.max_ef_search

    def _set_knob(self, value: int) -> None:
        self.ef_search = value

    def _exact_rows(self, queries: npt.NDArray[np.float32], selector: Any
                    ) -> npt.NDArray[np.int64]:
        flat_params: Any = None  # a flat scan of the graph's own storage
        if selector is not None:
            flat_params = faiss.SearchParameters()
            flat_params.sel = selector
        return _search(faiss.downcast_index(self._index.storage), queries, self._K,
                       flat_params)[1]

    def _label(self) -> str:
        return f"HNSW (M={self.m})"


class IvfIndex(_Calibrated):
    """Approximate cosine search over item vectors in a FAISS inverted file, with string ids.

    An ``IndexIVFFlat`` (inner product on unit vectors, so cosine): k-means
    splits the vectors into ``nlist`` lists around centroids, and a search
    scans the ``nprobe`` lists whose centroids are nearest the query. On
    clustered embeddings (real item texts) a few lists hold nearly all of a
    query's neighbours, so it beats both a flat scan and HNSW there; on vectors
    with no structure it needs most of the lists (``docs/benchmarks.md``).

    **Training.** k-means needs data: FAISS wants at least 39 vectors per
    centroid. Until the index holds ``39 * nlist`` live vectors (``train_from``)
    it is a plain flat scan (``IndexFlatIP``: exact, nothing to calibrate); the
    first write that reaches that many trains the lists on all live vectors
    (a bulk load trains once, at its end). Every rebuild retrains on the live
    vectors, and a rebuild that leaves fewer than ``train_from`` goes back to
    the flat scan. Training counts as a rebuild (``rebuilds``), so calibration
    follows it. ``nlist`` stays as built: pick it for the expected catalog
    (:meth:`nlist_for`); a catalog that outgrows it calibrates a larger ``nprobe``.

    Removal and replacement leave tombstones that an ``IDSelector`` skips, as in
    :class:`HnswIndex`; a search whose ``nprobe`` lists hold fewer than ``k``
    eligible items doubles ``nprobe`` for that query until ``k`` is filled.
    Stored vectors come back through the index's direct map (``get``,
    ``vectors_of``), with no second copy.

    Parameters
    ----------
    dim
        Width of the vectors.
    nlist
        Number of lists (k-means centroids); :meth:`nlist_for` picks it from the
        catalog size.
    nprobe
        Lists a search scans (at most ``nlist``): more is better recall, slower
        queries. Calibration replaces it.
    target_recall
        Recall@10 against exact search that calibration aims for; 0 keeps
        ``nprobe`` as given.
    calibration_queries
        Queries calibration measures recall on.
    rebuild_fraction
        Share of tombstoned rows that triggers a rebuild.

    Examples
    --------
    >>> index = IvfIndex(dim=3, nlist=16)
    >>> index.upsert(["mug", "cup", "scarf"], [[1, 0.1, 0], [1, 0.3, 0], [0, 0, 1]])
    >>> index.trained, index.train_from  # a flat scan until 39 * 16 vectors
    (False, 624)
    >>> index.search([1, 0, 0], k=2, exclude=["mug"]).ids
    ['cup', 'scarf']

    With enough vectors it trains, and with a target it measures its own recall:

    >>> rng = np.random.default_rng(0)
    >>> centres = rng.standard_normal((20, 16))
    >>> vectors = centres[rng.integers(20, size=2000)] + 0.3 * rng.standard_normal((2000, 16))
    >>> tuned = IvfIndex(dim=16, nlist=32, target_recall=0.95, calibration_queries=200)
    >>> tuned.upsert([f"i{j}" for j in range(2000)], vectors)
    >>> tuned.trained, tuned.calibration.met, tuned.nprobe == tuned.calibration.value
    (True, True, True)
    >>> tuned.nprobe < tuned.nlist
    True
    """

    _FORMAT = "streamrec.ivf-index/1"
    _FILTERS_IN_SEARCH = True
    _KNOB = "nprobe"
    #: Training vectors FAISS's k-means wants per centroid.
    TRAIN_PER_LIST = 39
    #: k-means trains on a sample of at most this many vectors per centroid (FAISS's
    #: default is 256): 4x less training time for a recall@10 within noise.
    _SAMPLE_PER_LIST = 64
    #: Bounds of :meth:`nlist_for`.
    _NLIST_RANGE = (16, 65_536)

    def __init__(self, dim: int, *, nlist: int = 256, nprobe: int = 16,
                 target_recall: float = 0.0, calibration_queries: int = 1000,
                 rebuild_fraction: float = 0.2) -> None:
        if nlist < 1 or nprobe < 1:
            raise InvalidRequest(f"need nlist >= 1 and nprobe >= 1; got {nlist}, {nprobe}")
        self.nlist = nlist
        self.nprobe = min(nprobe, nlist)
        super().__init__(dim, target_recall=target_recall,
                         calibration_queries=calibration_queries,
                         rebuild_fraction=rebuild_fraction)

    @classmethod
    def nlist_for(cls, n_items: int) -> int:
        """The default ``nlist`` for a catalog of about ``n_items``: ``2 * sqrt(n_items)``,
        fewer where that many items could not train it (below 6,084 items), within
        [16, 65536].

        >>> IvfIndex.nlist_for(20_000), IvfIndex.nlist_for(2_000), IvfIndex.nlist_for(10)
        (283, 51, 16)
        """
        low, high = cls._NLIST_RANGE
        wanted = min(round(2 * n_items ** 0.5), n_items // cls.TRAIN_PER_LIST)
        return int(min(high, max(low, wanted)))

    @property
    def train_from(self) -> int:
        """Live vectors the index needs before it trains its lists (a flat scan below)."""
        return self.TRAIN_PER_LIST * self.nlist

    @property
    def trained(self) -> bool:
        """Whether searches go through the trained lists (else: an exact flat scan)."""
        with self._lock:
            return isinstance(self._index, faiss.IndexIVF)

    def _new_faiss(self) -> Any:
        return faiss.IndexFlatIP(self._dim)

    def _fresh(self, vectors: npt.NDArray[np.float32]) -> Any:
        if len(vectors) < self.train_from:
            return super()._fresh(vectors)
        quantizer = faiss.IndexFlatIP(self._dim)
        index = faiss.IndexIVFFlat(quantizer, self._dim, self.nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.spherical = True  # unit centroids for unit vectors
        index.cp.max_points_per_centroid = self._SAMPLE_PER_LIST
        started = time.perf_counter()
        index.train(vectors)
        index.make_direct_map(True)  # reconstruct(row) for get() and rebuilds
        index.add(vectors)
        index.nprobe = self.nprobe
        log.info("IVF (nlist=%d) trained on %d vectors in %.1f s", self.nlist, len(vectors),
                 time.perf_counter() - started)
        return index

    def _after_write(self) -> None:
        if not self._approximate() and len(self._to_row) >= self.train_from:
            self._rebuild()  # trains
        super()._after_write()

    def _approximate(self) -> bool:
        return isinstance(self._index, faiss.IndexIVF)

    def _params(self, selector: Any, value: int | None = None) -> Any:
        if not self._approximate():  # the flat scan before training
            if selector is None:
                return None
            flat: Any = faiss.SearchParameters()
            flat.sel = selector
            return flat
        nprobe = self.nprobe if value is None else value
        params: Any = faiss.SearchParametersIVF  # the stubs miss the keyword constructor
        if selector is None:
            return params(nprobe=nprobe)
        return params(sel=selector, nprobe=nprobe)

    def _search_rows(self, queries: npt.NDArray[np.float32], k: int, selector: Any
                     ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        scores, rows = super()._search_rows(queries, k, selector)
        # FAISS pads with -1 at the end when the probed lists held fewer than k
        # eligible rows; the index holds k (the caller asked for no more), so probe wider.
        short, nprobe = np.flatnonzero(rows[:, -1] < 0), self.nprobe
        while len(short) and nprobe < self.nlist and self._approximate():
            nprobe = min(2 * nprobe, self.nlist)
            more_scores, more_rows = _search(self._index, queries[short], k,
                                             self._params(selector, nprobe))
            scores[short], rows[short] = more_scores, more_rows
            short = short[more_rows[:, -1] < 0]
        return scores, rows

    def _hyperparameters(self) -> dict[str, Any]:
        return {"nlist": self.nlist, "nprobe": self.nprobe, "target_recall": self.target_recall,
                "calibration_queries": self.calibration_queries,
                "rebuild_fraction": self.rebuild_fraction}

    def _knob_range(self) -> tuple[int, int]:
        return 1, self.nlist

    def _set_knob(self, value: int) -> None:
        self.nprobe = value

    def _exact_rows(self, queries: npt.NDArray[np.float32], selector: Any
                    ) -> npt.NDArray[np.int64]:
        # Probing every list is an exhaustive scan: exact.
        return _search(self._index, queries, self._K, self._params(selector, self.nlist))[1]

    def _label(self) -> str:
        return f"IVF (nlist={self.nlist})"


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
    def load(cls, path: Path, *, resources: Any = None) -> Self:
        """Read an index written by :meth:`save` onto the GPU.

        Raises
        ------
        core.errors.DataNotFound
            When ``path`` holds no saved GPU flat index.
        """
        return cls._load(path, resources=resources)
