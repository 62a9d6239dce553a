"""Choose the item index for a catalog size and device.

Up to ``flat_max`` items the index is exact (:class:`index.faiss_index.FaissIndex`,
``IndexIDMap2`` over ``IndexFlatIP``): a flat scan of 10k x 64 floats takes about
100 us and is always right. Beyond it an approximate index keeps queries fast,
calibrated to reach ``target_recall`` (recall@10 against exact search):

- ``kind="ivf"`` (the default): :class:`index.ann.IvfIndex` up to ``ivf_max``
  items, with ``nlist`` = :meth:`~index.ann.IvfIndex.nlist_for` ``(n_items)``
  unless given, and ``nprobe`` calibrated; :class:`index.ann.HnswIndex` beyond
  ``ivf_max`` (see ``IVF_MAX``);
- ``kind="hnsw"``: :class:`index.ann.HnswIndex` past ``flat_max``, with
  ``efSearch`` calibrated.

``docs/benchmarks.md`` records the measured recall@10 and speeds behind the defaults.

``device="gpu"`` asks for FAISS on a GPU (the optional ``gpu`` extra, a faiss
build with CUDA). FAISS has no HNSW on GPU, and a GPU scans millions of vectors
exactly in well under a millisecond, so on a GPU the index is
:class:`index.ann.GpuFlatIndex` at any size. Where faiss has no GPU support or
sees no GPU, one WARNING line says so and the CPU choice above is returned.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

import faiss

from core.errors import DataNotFound, InvalidRequest
from core.ports import VectorIndex
from index.ann import GpuFlatIndex, HnswIndex, IvfIndex
from index.faiss_index import FaissIndex, _read_meta

__all__ = ["build_vector_index", "gpu_unavailable_reason", "load_vector_index"]

log = logging.getLogger(__name__)

IndexKind = Literal["ivf", "hnsw"]
Device = Literal["cpu", "gpu"]

#: Default most items an IVF index is built for (``kind="ivf"``); HNSW beyond. On the
#: content embeddings a calibrated IVF beat a calibrated HNSW at every measured size up
#: to 1M (an inverted file suits clustered, near-duplicate vectors; HNSW needed efSearch
#: ~1,000 on them at 100k); past 1M nothing was measured, and HNSW wins on vectors
#: without structure (docs/benchmarks.md).
IVF_MAX = 1_000_000


def gpu_unavailable_reason() -> str | None:
    """Why FAISS cannot use a GPU here, or None when it can."""
    if not hasattr(faiss, "StandardGpuResources"):
        return f"faiss {faiss.__version__} was built without GPU support"
    count = faiss.get_num_gpus()
    if count < 1:
        return "faiss sees no GPU"
    return None


def build_vector_index(
    dim: int, n_items: int, *, flat_max: int = 10_000, kind: IndexKind = "ivf",
    ivf_max: int = IVF_MAX, ivf_nlist: int = 0, device: Device = "cpu", hnsw_m: int = 48,
    ef_construction: int = 128, ef_search: int = 256, target_recall: float = 0.95,
    rebuild_fraction: float = 0.2,
) -> VectorIndex:
    """An empty index for about ``n_items`` vectors of width ``dim``.

    Parameters
    ----------
    dim
        Width of the vectors.
    n_items
        Expected number of items (the catalog size).
    flat_max
        Up to this many items the index is exact; beyond it, ``kind``.
    kind
        The approximate index past ``flat_max``: ``"ivf"`` (HNSW past ``ivf_max``)
        or ``"hnsw"``.
    ivf_max
        With ``kind="ivf"``, the most items an IVF index is built for; HNSW beyond.
    ivf_nlist
        :class:`index.ann.IvfIndex` lists; 0 picks ``IvfIndex.nlist_for(n_items)``.
    device
        ``"gpu"`` for FAISS on a GPU where available (else CPU with a warning).
    hnsw_m, ef_construction, ef_search
        :class:`index.ann.HnswIndex` hyperparameters.
    target_recall
        The recall@10 that calibration sets ``nprobe`` or ``efSearch`` for; 0
        keeps the index's starting value.
    rebuild_fraction
        Share of tombstoned rows that makes an approximate index rebuild itself.

    Examples
    --------
    >>> build_vector_index(64, 3_600)
    FaissIndex(dim=64)  # 0 items
    >>> build_vector_index(64, 20_000)  # doctest: +NORMALIZE_WHITESPACE
    IvfIndex(dim=64, nlist=283, nprobe=16, target_recall=0.95, calibration_queries=1000,
             rebuild_fraction=0.2)  # 0 items
    >>> build_vector_index(64, 2_000_000, target_recall=0.9)
    ... # doctest: +NORMALIZE_WHITESPACE
    HnswIndex(dim=64, m=48, ef_construction=128, ef_search=256, target_recall=0.9,
              calibration_queries=1000, max_ef_search=4096, rebuild_fraction=0.2)  # 0 items
    """
    if min(n_items, flat_max, ivf_max, ivf_nlist) < 0:
        raise InvalidRequest(f"n_items, flat_max, ivf_max and ivf_nlist must be >= 0, got "
                             f"{n_items}, {flat_max}, {ivf_max}, {ivf_nlist}")
    if kind not in ("ivf", "hnsw"):
        raise InvalidRequest(f"unknown index kind {kind!r}; known: 'ivf', 'hnsw'")
    if device not in ("cpu", "gpu"):
        raise InvalidRequest(f"unknown index device {device!r}; known: 'cpu', 'gpu'")
    if device == "gpu":
        reason = gpu_unavailable_reason()
        if reason is None:
            log.info("item index on GPU: exact search over %d items", n_items)
            return GpuFlatIndex(dim, rebuild_fraction=rebuild_fraction)
        log.warning("FAISS GPU not available (%s); using CPU", reason)
    if n_items <= flat_max:
        return FaissIndex(dim)
    if kind == "ivf" and n_items <= ivf_max:
        return IvfIndex(dim, nlist=ivf_nlist or IvfIndex.nlist_for(n_items),
                        target_recall=target_recall, rebuild_fraction=rebuild_fraction)
    return HnswIndex(dim, m=hnsw_m, ef_construction=ef_construction, ef_search=ef_search,
                     target_recall=target_recall, rebuild_fraction=rebuild_fraction)


_LOADERS: dict[str, Any] = {
    "streamrec.faiss-index/1": FaissIndex.load,
    HnswIndex._FORMAT: HnswIndex.load,
    IvfIndex._FORMAT: IvfIndex.load,
    GpuFlatIndex._FORMAT: GpuFlatIndex.load,
}


def load_vector_index(path: Path) -> VectorIndex:
    """Read any index saved by this package; the saved format picks the class.

    Raises
    ------
    core.errors.DataNotFound
        When ``path`` holds no saved index.
    """
    meta_path = Path(path) / "ids.json"
    if not meta_path.is_file():
        raise DataNotFound(f"no saved index at {path}", details={"path": str(path)})
    for fmt, loader in _LOADERS.items():
        try:
            _read_meta(path, fmt)
        except DataNotFound:
            continue
        index: VectorIndex = loader(path)
        return index
    raise DataNotFound(f"{path} holds no known index format", details={"path": str(path)})
