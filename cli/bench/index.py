"""``streamrec bench index``: recall@10 and queries/s of the item indexes at scale.

Random unit vectors (a hard case for graph indexes: no cluster structure) at
each size; exact search (:class:`index.faiss_index.FaissIndex`, a flat scan) is
both the baseline and the ground truth for the recall of
:class:`index.ann.HnswIndex` at each ``efSearch``. Queries go through the
streamrec classes, as the API calls them: ``qps`` is one query per call on one
thread (the API's case), ``qps_batch`` one ``search_many`` over every query
(FAISS then uses every core).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from core.ports import VectorIndex
from index.ann import HnswIndex
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
    sizes: Sequence[int], *, dim: int = 64, queries: int = 1000, k: int = 10, m: int = 32,
    ef_construction: int = 128, ef_search: Sequence[int] = (128, 256), seed: int = 0,
    single_budget_s: float = 5.0, log: Any = None,
) -> list[dict[str, Any]]:
    """One row per (index, size[, efSearch]): build time, recall@k and queries/s."""
    rows: list[dict[str, Any]] = []
    for n in sizes:
        rng = np.random.default_rng(seed + n)
        vectors = _unit(rng, n, dim)
        probe = _unit(rng, queries, dim)
        ids = [f"i{j}" for j in range(n)]

        start = time.perf_counter()
        exact = FaissIndex(dim)
        exact.upsert(ids, vectors)
        flat_build = time.perf_counter() - start
        rows.append({
            "index": "flat", "n_items": n, "dim": dim, "build_s": flat_build,
            "recall_at_10": 1.0, "qps": _single_qps(exact, probe, k, single_budget_s),
            "qps_batch": _batch_qps(exact, probe, k),
        })
        _say(log, rows[-1])

        start = time.perf_counter()
        ann = HnswIndex(dim, m=m, ef_construction=ef_construction, ef_search=ef_search[0])
        ann.upsert(ids, vectors)
        hnsw_build = time.perf_counter() - start
        for ef in ef_search:
            ann.ef_search = ef
            rows.append({
                "index": "hnsw", "n_items": n, "dim": dim, "m": m,
                "ef_construction": ef_construction, "ef_search": ef, "build_s": hnsw_build,
                "recall_at_10": recall_at_k(ann, exact, probe, k),
                "qps": _single_qps(ann, probe, k, single_budget_s),
                "qps_batch": _batch_qps(ann, probe, k),
            })
            _say(log, rows[-1])
        del exact, ann, vectors, ids
        gc.collect()
    return rows


def _say(log: Any, row: dict[str, Any]) -> None:
    if log is not None:
        print("  " + "  ".join(f"{k}={_short(v)}" for k, v in row.items()), file=log, flush=True)


def _short(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
