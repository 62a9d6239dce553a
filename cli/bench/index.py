"""``streamrec bench index``: recall@10 and queries/s of the item indexes at scale.

Random unit vectors (a hard case for graph indexes and worse for inverted
files: no cluster structure) at each size; exact search
(:class:`index.faiss_index.FaissIndex`, a flat scan) is both the baseline and
the ground truth for the recall of :class:`index.ann.IvfIndex` (``nlist`` as the
factory picks it for the size) at the ``nprobe`` it calibrates for a target
recall, and of :class:`index.ann.HnswIndex` at the ``efSearch`` it calibrates
(both on their own Gaussian queries, not the bench's) and at each ``efSearch``
asked for. The bench's queries are 1,000 other random unit vectors, so the
calibrated row shows whether calibration predicts recall on unseen queries.
Queries go through the streamrec classes, as the API calls them: ``qps`` is one
query per call on one thread (the API's case), ``qps_batch`` one
``search_many`` over every query (FAISS then uses every core).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from core.ports import VectorIndex
from index.ann import HnswIndex, IvfIndex
from index.faiss_index import FaissIndex
from index.recall import recall_at_k

__all__ = ["run_index_bench"]


def _unit(rng: np.random.Generator, n: int, dim: int) -> npt.NDArray[np.float32]:
    # In chunks: 1M x 64 float64 intermediates would double the peak memory.
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):
        x = rng.standard_normal((min(100_000, n - start), dim)).astype(np.float32)
        out[start:start + len(x)] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


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
) -> list[dict[str, Any]]:
    """Rows of build time, recall@k against exact search and queries/s, per size.

    Each size gives a ``flat`` row (exact search, the ground truth), then with
    ``target_recall`` above 0 (and ``ivf``) the ``ivf`` row at the ``nprobe``
    the index calibrated for itself, and the ``hnsw`` row at its calibrated
    ``efSearch`` (``calibrated: true``; ``build_s`` leaves out ``calibrate_s``,
    and for IVF includes the k-means training), then one ``hnsw`` row per
    value in ``ef_search``.
    """
    rows: list[dict[str, Any]] = []
    for n in sizes:
        rng = np.random.default_rng(seed + n)
        vectors = _unit(rng, n, dim)
        probe = _unit(rng, queries, dim)
        ids = [f"i{j}" for j in range(n)]

        start = time.perf_counter()
        exact = FaissIndex(dim)
        exact.upsert(ids, vectors)
        rows.append({"index": "flat", "n_items": n, "dim": dim,
                     "build_s": time.perf_counter() - start, "recall_at_10": 1.0,
                     **_speeds(exact, probe, k, single_budget_s)})
        _say(log, rows[-1])

        if ivf and target_recall:
            rows.append(_ivf_row(ids, vectors, exact, probe, k, target_recall, single_budget_s))
            _say(log, rows[-1])

        start = time.perf_counter()
        ann = HnswIndex(dim, m=m, ef_construction=ef_construction, target_recall=target_recall)
        ann.upsert(ids, vectors)  # calibrates efSearch at the end when target_recall > 0
        calibration = ann.calibration
        calibrate_s = calibration.seconds if calibration is not None else 0.0
        hnsw = {"index": "hnsw", "n_items": n, "dim": dim, "m": m,
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
        del exact, ann, vectors, ids
        gc.collect()
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
