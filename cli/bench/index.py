"""``streamrec bench index``: recall@10 and queries/s of the item indexes at scale.

Random unit vectors (a hard case for graph indexes and worse for inverted
files: no cluster structure) at each size, or with ``vectors="content"`` the
content embeddings of a catalog of that size (the shipped products plus
generated variants of them, as ``bench api`` builds it, embedded by
:class:`offline.content.ContentEmbedder`) with shoppers' profiles as queries
(the mean of 5 random items' vectors): the case the index defaults are chosen
for. Exact search
(:class:`index.faiss_index.FaissIndex`, a flat scan) is both the baseline and
the ground truth for the recall of :class:`index.ann.IvfIndex` (``nlist`` as the
factory picks it for the size) at the ``nprobe`` it calibrates for a target
recall, and of :class:`index.ann.HnswIndex` at the ``efSearch`` it calibrates
(both on their own queries, Gaussian and profile-like, not the bench's) and at each ``efSearch``
asked for. The bench's queries are 1,000 other vectors (random ones, or profiles), so
the calibrated row shows whether calibration predicts recall on unseen queries.
Queries go through the streamrec classes, as the API calls them: ``qps`` is one
query per call on one thread (the API's case), ``qps_batch`` one
``search_many`` over every query (FAISS then uses every core).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from core.ports import VectorIndex
from index.ann import HnswIndex, IvfIndex
from index.faiss_index import FaissIndex
from index.recall import recall_at_k

__all__ = ["CONTENT_MAX", "run_index_bench"]

VectorKind = Literal["random", "content"]
#: Largest catalog ``vectors="content"`` embeds (TF-IDF and an SVD of every item's text).
CONTENT_MAX = 200_000
#: Items whose vectors make one query profile in ``vectors="content"``.
PROFILE_ITEMS = 5


def _unit(rng: np.random.Generator, n: int, dim: int) -> npt.NDArray[np.float32]:
    # In chunks: 1M x 64 float64 intermediates would double the peak memory.
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):
        x = rng.standard_normal((min(100_000, n - start), dim)).astype(np.float32)
        out[start:start + len(x)] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def _content(rng: np.random.Generator, n: int, dim: int, queries: int, data_dir: Path
             ) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Content vectors of an ``n``-item catalog (items no term of which is known are left
    out, as the item index leaves them) and ``queries`` profile-like queries."""
    from cli.bench.api import generated_items
    from offline.catalog import load_catalog
    from offline.content import ContentEmbedder

    base = load_catalog(data_dir)
    items = (base + generated_items(base, max(0, n - len(base)), seed=n))[:n]
    embedded = ContentEmbedder(dim=dim).fit_transform(items)
    vectors = np.ascontiguousarray(embedded[np.linalg.norm(embedded, axis=1) > 0])
    profiles = vectors[rng.integers(len(vectors), size=(queries, PROFILE_ITEMS))].mean(axis=1)
    return vectors, (profiles / np.linalg.norm(profiles, axis=1, keepdims=True)).astype(
        np.float32)


def _single_qps(index: VectorIndex, queries: npt.NDArray[np.float32], k: int,
                budget_s: float) -> float:
    """Queries/s of one-at-a-time searches on this thread (at least 20, at most ``budget_s``)."""
    done, start = 0, time.perf_counter()
    while done < len(queries):
        index.search(queries[done], k)
        done += 1
        if done >= 20 and time.perf_counter() - start > budget_s:
            break
    return done / (time.perf_counter() - start)


def _batch_qps(index: Any, queries: npt.NDArray[np.float32], k: int) -> float:
    start = time.perf_counter()
    index.search_many(queries, k)
    return len(queries) / (time.perf_counter() - start)


def run_index_bench(
    sizes: Sequence[int], *, dim: int = 64, queries: int = 1000, k: int = 10, m: int = 48,
    ef_construction: int = 128, target_recall: float = 0.95, ef_search: Sequence[int] = (),
    seed: int = 0, single_budget_s: float = 5.0, log: Any = None, ivf: bool = True,
    vectors: VectorKind = "random", data_dir: Path | None = None,
) -> list[dict[str, Any]]:
    """Rows of build time, recall@k against exact search and queries/s, per size.

    Each size gives a ``flat`` row (exact search, the ground truth), then with
    ``target_recall`` above 0 (and ``ivf``) the ``ivf`` row at the ``nprobe``
    the index calibrated for itself, and the ``hnsw`` row at its calibrated
    ``efSearch`` (``calibrated: true``; ``build_s`` leaves out ``calibrate_s``,
    and for IVF includes the k-means training), then one ``hnsw`` row per
    value in ``ef_search``. ``vectors="content"`` embeds a catalog per size (at most
    :data:`CONTENT_MAX` items; the shipped catalog read from ``data_dir``); its rows'
    ``n_items`` and ``dim`` are those of the embedded vectors.
    """
    if vectors == "content" and (data_dir is None or max(sizes, default=0) > CONTENT_MAX):
        raise ValueError(f"content vectors need a data_dir and sizes of at most {CONTENT_MAX}")
    rows: list[dict[str, Any]] = []
    for size in sizes:
        rng = np.random.default_rng(seed + size)
        if vectors == "content":
            assert data_dir is not None
            stored, probe = _content(rng, size, dim, queries, data_dir)
        else:
            stored, probe = _unit(rng, size, dim), _unit(rng, queries, dim)
        rows.extend(_size_rows(stored, probe, vectors, k=k, m=m,
                               ef_construction=ef_construction, target_recall=target_recall,
                               ef_search=ef_search, single_budget_s=single_budget_s, log=log,
                               ivf=ivf))
        del stored
        gc.collect()
    return rows


def _size_rows(vectors: npt.NDArray[np.float32], probe: npt.NDArray[np.float32],
               kind: VectorKind, *, k: int, m: int, ef_construction: int,
               target_recall: float, ef_search: Sequence[int], single_budget_s: float,
               log: Any, ivf: bool) -> list[dict[str, Any]]:
    """The rows of one catalog: flat, then IVF and HNSW (calibrated), then the HNSW sweep."""
    rows: list[dict[str, Any]] = []
    n, dim = vectors.shape
    ids = [f"i{j}" for j in range(n)]
    start = time.perf_counter()
    exact = FaissIndex(dim)
    exact.upsert(ids, vectors)
    rows.append({"index": "flat", "vectors": kind, "n_items": n, "dim": dim,
                 "build_s": time.perf_counter() - start, "recall_at_10": 1.0,
                 **_speeds(exact, probe, k, single_budget_s)})
    _say(log, rows[-1])

    if ivf and target_recall:
        rows.append(_ivf_row(ids, vectors, exact, probe, k, target_recall, single_budget_s)
                    | {"vectors": kind})
        _say(log, rows[-1])

    start = time.perf_counter()
    ann = HnswIndex(dim, m=m, ef_construction=ef_construction, target_recall=target_recall)
    ann.upsert(ids, vectors)  # calibrates efSearch at the end when target_recall > 0
    calibration = ann.calibration
    calibrate_s = calibration.seconds if calibration is not None else 0.0
    hnsw = {"index": "hnsw", "vectors": kind, "n_items": n, "dim": dim, "m": m,
            "ef_construction": ef_construction,
            "build_s": time.perf_counter() - start - calibrate_s}
    if calibration is not None:
        rows.append(_hnsw_row(ann, exact, probe, k, single_budget_s, {
            **hnsw, "calibrated": True, "target_recall": target_recall,
            "calibrated_recall": calibration.recall.mean, "calibration_met": calibration.met,
            "calibrate_s": calibrate_s}))
        _say(log, rows[-1])
    for ef in ef_search:
        ann.ef_search = ef
        rows.append(_hnsw_row(ann, exact, probe, k, single_budget_s,
                              {**hnsw, "calibrated": False}))
        _say(log, rows[-1])
    return rows


def _ivf_row(ids: list[str], vectors: npt.NDArray[np.float32], exact: FaissIndex,
             probe: npt.NDArray[np.float32], k: int, target_recall: float,
             single_budget_s: float) -> dict[str, Any]:
    n, dim = vectors.shape
    start = time.perf_counter()
    ivf = IvfIndex(dim, nlist=IvfIndex.nlist_for(n), target_recall=target_recall)
    ivf.upsert(ids, vectors)  # trains, then calibrates nprobe
    calibration = ivf.calibration
    calibrate_s = calibration.seconds if calibration is not None else 0.0
    row: dict[str, Any] = {
        "index": "ivf", "n_items": n, "dim": dim, "nlist": ivf.nlist, "trained": ivf.trained,
        "build_s": time.perf_counter() - start - calibrate_s, "calibrated": calibration is not None,
        "target_recall": target_recall, "nprobe": ivf.nprobe}
    if calibration is not None:
        row.update(calibrated_recall=calibration.recall.mean, calibration_met=calibration.met,
                   calibrate_s=calibrate_s)
    return {**row, "recall_at_10": recall_at_k(ivf, exact, probe, k),
            **_speeds(ivf, probe, k, single_budget_s)}


def _hnsw_row(ann: HnswIndex, exact: FaissIndex, probe: npt.NDArray[np.float32], k: int,
              single_budget_s: float, fields: dict[str, Any]) -> dict[str, Any]:
    return {**fields, "ef_search": ann.ef_search,
            "recall_at_10": recall_at_k(ann, exact, probe, k),
            **_speeds(ann, probe, k, single_budget_s)}


def _speeds(index: VectorIndex, probe: npt.NDArray[np.float32], k: int,
            single_budget_s: float) -> dict[str, float]:
    return {"qps": _single_qps(index, probe, k, single_budget_s),
            "qps_batch": _batch_qps(index, probe, k)}


def _say(log: Any, row: dict[str, Any]) -> None:
    if log is not None:
        print("  " + "  ".join(f"{k}={_short(v)}" for k, v in row.items()), file=log, flush=True)


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
