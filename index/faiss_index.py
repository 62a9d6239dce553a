"""Item-embedding indexes behind :class:`core.ports.VectorIndex`.

:class:`FaissIndex` is the serving index: exact inner-product search in FAISS
(``IndexIDMap2`` over ``IndexFlatIP``) with string ids. :class:`ExactIndex` does
the same in plain NumPy; it is the reference for recall checks and the second
implementation of the shared contract suite (``tests/contracts/vector_index.py``).

Both store unit vectors, so inner product is cosine similarity. Zero vectors
have no direction: :meth:`upsert` and :meth:`search` reject them with
:class:`core.errors.InvalidRequest` rather than store or search nonsense.

Both are thread-safe: a lock serialises writers and readers, since the API
searches from request threads while a consumer may upsert.

``save(path)`` writes a directory (created if needed) holding the vectors and the
id map; ``load(path)`` reads it back and raises :class:`core.errors.DataNotFound`
when nothing is there.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt

from core.errors import DataNotFound, InvalidRequest
from core.ports import Vector
from core.types import ScoredItems

__all__ = ["ExactIndex", "FaissIndex"]

_FAISS_FORMAT = "streamrec.faiss-index/1"
_EXACT_FORMAT = "streamrec.exact-index/1"
_META_FILE = "ids.json"
_FAISS_FILE = "index.faiss"
_VECTORS_FILE = "vectors.npy"


class _VectorChecks:
    """Validation and normalisation shared by both indexes."""

    _dim: int

    @property
    def dim(self) -> int:
        """Width of the stored vectors."""
        return self._dim

    def search(self, query: npt.ArrayLike, k: int, exclude: Sequence[str] = ()) -> ScoredItems:
        """The ``k`` items most similar to ``query`` (cosine), best first, minus ``exclude``.

        Raises
        ------
        core.errors.InvalidRequest
            On a query of the wrong width, a zero query or ``k < 0``.
        """
        q = self._query(query)
        self._check_k(k)
        return self._search(q, k, exclude)[0]

    def search_many(self, queries: npt.ArrayLike, k: int) -> list[ScoredItems]:
        """:meth:`search` for each row of ``queries`` (shape ``(n, dim)``), in one call."""
        q = self._query_rows(queries)
        self._check_k(k)
        return self._search(q, k, ())

    def _search(self, queries: npt.NDArray[np.float32], k: int,
                exclude: Sequence[str]) -> list[ScoredItems]:
        raise NotImplementedError

    # An index overrides at least one of get and vectors_of: each is written with the other.
    def get(self, ids: Sequence[str]) -> dict[str, Vector]:
        """The stored (unit) vectors of the known ids among ``ids``."""
        known = list(dict.fromkeys(ids))
        at, rows = self.vectors_of(known)
        return {known[j]: row for j, row in zip(at, rows, strict=True)}

    def vectors_of(self, ids: Sequence[str]) -> tuple[list[int], npt.NDArray[np.float32]]:
        """The stored vectors of the known ids among ``ids`` (distinct) as the rows of one
        matrix, and each row's position in ``ids``: :meth:`get` without a dict of rows
        to stack again."""
        found = self.get(ids)
        at = [j for j, item_id in enumerate(ids) if item_id in found]
        if not at:
            return [], np.zeros((0, self._dim), dtype=np.float32)
        return at, np.stack([found[ids[j]] for j in at])

    def _unit_rows(self, vectors: npt.ArrayLike, n: int, what: str) -> npt.NDArray[np.float32]:
        """``vectors`` as ``(n, dim)`` float32 unit rows; InvalidRequest when they cannot be."""
        array = np.asarray(vectors, dtype=np.float32)
        if array.ndim == 1 and n == 1:
            array = array.reshape(1, -1)
        if array.ndim != 2 or array.shape[1] != self._dim:
            raise InvalidRequest(
                f"{what} must have shape (n, {self._dim}), got {array.shape}",
                details={"expected_dim": self._dim, "shape": list(array.shape)},
            )
        if array.shape[0] != n:
            raise InvalidRequest(f"{n} ids but {array.shape[0]} {what}")
        if not np.isfinite(array).all():
            raise InvalidRequest(f"{what} contain NaN or infinite values")
        norms = np.linalg.norm(array, axis=1, keepdims=True)
        if (norms == 0).any():
            raise InvalidRequest(f"{what} contain a zero vector, which has no direction")
        return np.ascontiguousarray(array / norms, dtype=np.float32)

    def _query_rows(self, queries: npt.ArrayLike) -> npt.NDArray[np.float32]:
        array = np.asarray(queries, dtype=np.float32)
        if array.ndim != 2:
            raise InvalidRequest(f"queries must be a 2-D array, got shape {array.shape}")
        return self._unit_rows(array, array.shape[0], "queries")

    def _query(self, query: npt.ArrayLike) -> npt.NDArray[np.float32]:
        array = np.asarray(query, dtype=np.float32)
        if array.ndim != 1:
            raise InvalidRequest(f"query must be a 1-D vector, got shape {array.shape}")
        return self._unit_rows(array, 1, "query")

    @staticmethod
    def _check_k(k: int) -> None:
        if k < 0:
            raise InvalidRequest(f"k must be >= 0, got {k}")


def _last_wins(ids: Sequence[str], vectors: npt.NDArray[np.float32]
               ) -> tuple[list[str], npt.NDArray[np.float32]]:
    """Drop all but the last occurrence of each id (one upsert, one vector per id)."""
    last = {item_id: row for row, item_id in enumerate(ids)}
    if len(last) == len(ids):
        return list(ids), vectors
    rows = sorted(last.values())
    return [ids[r] for r in rows], vectors[rows]


def _reconstructed(index: Any, numbers: Mapping[str, int], ids: Sequence[str], dim: int
                   ) -> tuple[list[int], npt.NDArray[np.float32]]:
    """``vectors_of`` for a FAISS ``index`` whose vector of id ``i`` has number ``numbers[i]``."""
    at = [j for j, item_id in enumerate(ids) if item_id in numbers]
    if not at:
        return [], np.zeros((0, dim), dtype=np.float32)
    # One batch call: a reconstruct per id costs more than the search itself.
    rows = index.reconstruct_batch(np.array([numbers[ids[j]] for j in at], dtype=np.int64))
    return at, np.asarray(rows, dtype=np.float32)


def _check_ids(ids: Sequence[str]) -> None:
    if isinstance(ids, str):
        raise InvalidRequest("ids must be a sequence of strings, not one string")
    for item_id in ids:
        if not isinstance(item_id, str) or not item_id:
            raise InvalidRequest(f"ids must be non-empty strings, got {item_id!r}")


def _read_meta(path: Path, expected_format: str) -> dict[str, Any]:
    meta_path = Path(path) / _META_FILE
    if not meta_path.is_file():
        raise DataNotFound(f"no saved index at {path} (missing {_META_FILE})",
                           details={"path": str(path)})
    try:
        meta: dict[str, Any] = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataNotFound(f"{meta_path} is not a saved index id map: {exc}",
                           details={"path": str(path)}) from exc
    if meta.get("format") != expected_format:
        raise DataNotFound(f"{path} holds {meta.get('format')!r}, not {expected_format!r}",
                           details={"path": str(path)})
    return meta


def _write_dir(path: Path, write: Any) -> None:
    """Write a snapshot directory next to ``path``, then swap it in.

    A reader never sees half a snapshot: the new directory is complete before
    it takes the old one's name.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    old = path.with_name(f".{path.name}.old-{os.getpid()}-{threading.get_ident()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    write(tmp)
    if path.exists():
        path.rename(old)
    tmp.rename(path)
    shutil.rmtree(old, ignore_errors=True)


#: Below this many queries FAISS searches on the calling thread only. OpenMP's
#: team start-up and spinning cost far more than a flat scan of a catalog: on a
#: busy 2-core machine one query over 3.6k x 64 took ~10 ms with 2 threads and
#: ~40 us with one.
_PARALLEL_FROM = 256


def _search_threads(index: Any, queries: npt.NDArray[np.float32], k: int
                    ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
    if len(queries) >= _PARALLEL_FROM:
        return index.search(queries, k)
    # omp_set_num_threads sets the *calling* thread's team size only (an OpenMP
    # per-thread setting), so other threads' searches are not affected.
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        return index.search(queries, k)
    finally:
        faiss.omp_set_num_threads(previous)


class FaissIndex(_VectorChecks):
    """Exact cosine search over item vectors in FAISS, with string ids.

    String ids map to int64 FAISS ids. An id keeps its number while it is in the
    index; a removed id that comes back gets a fresh number. :meth:`upsert` of a
    present id replaces its vector.

    Parameters
    ----------
    dim
        Width of the vectors.

    Examples
    --------
    >>> index = FaissIndex(dim=3)
    >>> index.upsert(["mug", "cup", "scarf"], [[1, 0.1, 0], [1, 0.3, 0], [0, 0, 1]])
    >>> index.search([1, 0, 0], k=2).ids
    ['mug', 'cup']
    >>> index.search([1, 0, 0], k=2, exclude=["mug"]).ids
    ['cup', 'scarf']
    >>> index.remove(["cup", "tea"]), len(index), "cup" in index
    (1, 2, False)
    """

    def __init__(self, dim: int) -> None:
        if dim < 1:
            raise InvalidRequest(f"dim must be at least 1, got {dim}")
        self._dim = dim
        self._lock = threading.RLock()
        # Any: faiss's SWIG stubs miss the NumPy overloads its Python wrapper adds.
        self._index: Any = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self._to_int: dict[str, int] = {}
        self._to_str: dict[int, str] = {}
        self._next_id = 0

    def __repr__(self) -> str:
        return f"FaissIndex(dim={self._dim})  # {len(self)} items"

    def __len__(self) -> int:
        with self._lock:
            return len(self._to_int)

    def __contains__(self, item_id: object) -> bool:
        with self._lock:
            return item_id in self._to_int

    def ids(self) -> list[str]:
        """The ids in the index, in the order they were first added."""
        with self._lock:
            return list(self._to_int)

    def upsert(self, ids: Sequence[str], vectors: npt.ArrayLike) -> None:
        """Add or replace the vectors of ``ids`` (normalised to unit length).

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
            present = [self._to_int[i] for i in unique if i in self._to_int]
            if present:
                self._index.remove_ids(np.asarray(present, dtype=np.int64))
            numbers = np.empty(len(unique), dtype=np.int64)
            for pos, item_id in enumerate(unique):
                number = self._to_int.get(item_id)
                if number is None:
                    number = self._next_id
                    self._next_id += 1
                    self._to_int[item_id] = number
                    self._to_str[number] = item_id
                numbers[pos] = number
            self._index.add_with_ids(rows, numbers)

    def remove(self, ids: Sequence[str]) -> int:
        """Remove ``ids``; return how many were present (unknown ids are ignored)."""
        _check_ids(ids)
        with self._lock:
            numbers = [self._to_int.pop(i) for i in dict.fromkeys(ids) if i in self._to_int]
            for number in numbers:
                del self._to_str[number]
            if numbers:
                self._index.remove_ids(np.asarray(numbers, dtype=np.int64))
            return len(numbers)

    def vectors_of(self, ids: Sequence[str]) -> tuple[list[int], npt.NDArray[np.float32]]:
        """The stored vectors of the known ids among ``ids`` (distinct) as the rows of one
        matrix, and each row's position in ``ids``."""
        with self._lock:
            return _reconstructed(self._index, self._to_int, ids, self._dim)

    def _search(self, queries: npt.NDArray[np.float32], k: int,
                exclude: Sequence[str]) -> list[ScoredItems]:
        with self._lock:
            skip = {i for i in exclude if i in self._to_int}
            fetch = min(k + len(skip), len(self._to_int))
            if fetch == 0 or k == 0:
                return [ScoredItems.empty() for _ in range(len(queries))]
            scores, numbers = _search_threads(self._index, queries, fetch)
            names = self._to_str
            results = []
            # Python ints and floats (tolist) map to names several times faster than
            # NumPy scalars one by one.
            for row_scores, row_numbers in zip(scores.tolist(), numbers.tolist(), strict=True):
                ids: list[str] = []
                kept: list[float] = []
                for s, n in zip(row_scores, row_numbers, strict=True):
                    if n >= 0 and (name := names[n]) not in skip:
                        ids.append(name)
                        kept.append(s)
                        if len(ids) == k:
                            break
                results.append(ScoredItems(ids, np.array(kept, dtype=np.float64)))
            return results

    def save(self, path: Path) -> None:
        """Write the index to the directory ``path`` (``index.faiss`` + ``ids.json``)."""
        with self._lock:  # a consistent copy; the slow disk write runs unlocked
            meta = {"format": _FAISS_FORMAT, "dim": self._dim, "next_id": self._next_id,
                    "ids": dict(self._to_int)}
            blob = faiss.serialize_index(self._index).tobytes()

        def write(directory: Path) -> None:
            (directory / _FAISS_FILE).write_bytes(blob)
            (directory / _META_FILE).write_text(json.dumps(meta))

        _write_dir(path, write)

    @classmethod
    def load(cls, path: Path) -> FaissIndex:
        """Read an index written by :meth:`save`.

        Raises
        ------
        core.errors.DataNotFound
            When ``path`` holds no saved FAISS index.
        """
        meta = _read_meta(path, _FAISS_FORMAT)
        faiss_path = Path(path) / _FAISS_FILE
        if not faiss_path.is_file():
            raise DataNotFound(f"no saved index at {path} (missing {_FAISS_FILE})",
                               details={"path": str(path)})
        index = cls(int(meta["dim"]))
        loaded = faiss.read_index(str(faiss_path))
        if loaded.d != index.dim or loaded.ntotal != len(meta["ids"]):
            raise DataNotFound(f"{path}: {_FAISS_FILE} and {_META_FILE} do not match")
        index._index = loaded
        index._to_int = {str(k): int(v) for k, v in meta["ids"].items()}
        index._to_str = {v: k for k, v in index._to_int.items()}
        index._next_id = int(meta["next_id"])
        return index


class ExactIndex(_VectorChecks):
    """Brute-force cosine search in NumPy; the reference :class:`FaissIndex` is checked against.

    Same interface and semantics as :class:`FaissIndex`. Equal scores rank in
    the order the ids were first added.

    Parameters
    ----------
    dim
        Width of the vectors.

    Examples
    --------
    >>> index = ExactIndex(dim=2)
    >>> index.upsert(["a", "b"], [[1, 0], [3, 4]])
    >>> index.get(["b"])["b"].tolist()
    [0.6000000238418579, 0.800000011920929]
    >>> result = index.search([0, 1], k=5)
    >>> result.ids, result.scores.round(2).tolist()
    (['b', 'a'], [0.8, 0.0])
    """

    def __init__(self, dim: int) -> None:
        if dim < 1:
            raise InvalidRequest(f"dim must be at least 1, got {dim}")
        self._dim = dim
        self._lock = threading.RLock()
        self._rows: dict[str, int] = {}
        self._matrix = np.zeros((0, dim), dtype=np.float32)

    def __repr__(self) -> str:
        return f"ExactIndex(dim={self._dim})  # {len(self)} items"

    def __len__(self) -> int:
        with self._lock:
            return len(self._rows)

    def __contains__(self, item_id: object) -> bool:
        with self._lock:
            return item_id in self._rows

    def ids(self) -> list[str]:
        """The ids in the index, in the order they were first added."""
        with self._lock:
            return list(self._rows)

    def upsert(self, ids: Sequence[str], vectors: npt.ArrayLike) -> None:
        """Add or replace the vectors of ``ids`` (normalised to unit length)."""
        _check_ids(ids)
        if not ids and np.size(vectors) == 0:
            return
        rows = self._unit_rows(vectors, len(ids), "vectors")
        unique, rows = _last_wins(ids, rows)
        with self._lock:
            fresh = [i for i in unique if i not in self._rows]
            matrix = np.vstack([self._matrix, np.zeros((len(fresh), self._dim), np.float32)])
            for item_id in fresh:
                self._rows[item_id] = len(self._rows)
            matrix[[self._rows[i] for i in unique]] = rows
            self._matrix = matrix

    def remove(self, ids: Sequence[str]) -> int:
        """Remove ``ids``; return how many were present (unknown ids are ignored)."""
        _check_ids(ids)
        with self._lock:
            gone = {i for i in ids if i in self._rows}
            if gone:
                keep = [i for i in self._rows if i not in gone]
                self._matrix = self._matrix[[self._rows[i] for i in keep]]
                self._rows = {item_id: row for row, item_id in enumerate(keep)}
            return len(gone)

    def get(self, ids: Sequence[str]) -> dict[str, Vector]:
        """The stored (unit) vectors of the known ids among ``ids``."""
        with self._lock:
            return {i: self._matrix[self._rows[i]].copy() for i in ids if i in self._rows}

    def _search(self, queries: npt.NDArray[np.float32], k: int,
                exclude: Sequence[str]) -> list[ScoredItems]:
        with self._lock:
            ids = list(self._rows)
            scores = queries @ self._matrix.T
            skip = [self._rows[i] for i in exclude if i in self._rows]
        scores[:, skip] = -np.inf
        results = []
        for row in scores:
            order = np.argsort(-row, kind="stable")[:k]
            order = order[np.isfinite(row[order])]
            results.append(ScoredItems([ids[j] for j in order], row[order].astype(np.float64)))
        return results

    def save(self, path: Path) -> None:
        """Write the index to the directory ``path`` (``vectors.npy`` + ``ids.json``)."""
        with self._lock:
            meta = {"format": _EXACT_FORMAT, "dim": self._dim, "ids": list(self._rows)}
            matrix = self._matrix.copy()

        def write(directory: Path) -> None:
            np.save(directory / _VECTORS_FILE, matrix, allow_pickle=False)
            (directory / _META_FILE).write_text(json.dumps(meta))

        _write_dir(path, write)

    @classmethod
    def load(cls, path: Path) -> ExactIndex:
        """Read an index written by :meth:`save`; DataNotFound when there is none."""
        meta = _read_meta(path, _EXACT_FORMAT)
        vectors_path = Path(path) / _VECTORS_FILE
        if not vectors_path.is_file():
            raise DataNotFound(f"no saved index at {path} (missing {_VECTORS_FILE})",
                               details={"path": str(path)})
        matrix = np.load(vectors_path, allow_pickle=False)
        index = cls(int(meta["dim"]))
        if matrix.shape != (len(meta["ids"]), index.dim):
            raise DataNotFound(f"{path}: {_VECTORS_FILE} and {_META_FILE} do not match")
        index._matrix = matrix.astype(np.float32)
        index._rows = {str(item_id): row for row, item_id in enumerate(meta["ids"])}
        return index
