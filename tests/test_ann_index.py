"""HnswIndex (and the GPU index's row logic) pass the VectorIndex contract; factory and recall."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt
import pytest

from core.errors import DataNotFound, InvalidRequest
from index.ann import GpuFlatIndex, HnswIndex
from index.factory import build_vector_index, gpu_unavailable_reason, load_vector_index
from index.faiss_index import ExactIndex, FaissIndex
from index.recall import RecallEstimate, recall_at_k, smallest_passing
from tests.contracts.vector_index import VectorIndexContract


class TestHnswIndexContract(VectorIndexContract):
    def make_index(self, dim: int) -> HnswIndex:
        return HnswIndex(dim, m=8)

    def load_index(self, path: Path) -> HnswIndex:
        return HnswIndex.load(path)


class _CpuRowsIndex(GpuFlatIndex):
    """GpuFlatIndex's tombstone and over-fetch logic over a CPU flat index."""

    def _new_faiss(self) -> Any:
        return faiss.IndexFlatIP(self._dim)

    def _to_cpu(self, index: Any) -> Any:
        return index

    def _from_cpu(self, index: Any) -> Any:
        return index


class TestGpuFlatRowLogicContract(VectorIndexContract):
    def make_index(self, dim: int) -> GpuFlatIndex:
        return _CpuRowsIndex(dim)

    def load_index(self, path: Path) -> GpuFlatIndex:
        return _CpuRowsIndex.load(path)


def _unit(rng: np.random.Generator, n: int, dim: int) -> npt.NDArray[np.float32]:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def filled() -> tuple[HnswIndex, ExactIndex, np.random.Generator]:
    rng = np.random.default_rng(3)
    ids = [f"i{j}" for j in range(3000)]
    vectors = _unit(rng, 3000, 32)
    ann, exact = HnswIndex(32, m=16, ef_search=64, rebuild_fraction=0.5), ExactIndex(32)
    for index in (ann, exact):
        index.upsert(ids, vectors)
        index.remove(ids[::7])
        index.upsert(ids[:100], _unit(np.random.default_rng(4), 100, 32))
    return ann, exact, rng


def test_hnsw_recall_at_10_against_exact_search_is_at_least_095(
    filled: tuple[HnswIndex, ExactIndex, np.random.Generator],
) -> None:
    ann, exact, rng = filled
    assert ann.tombstones > 0  # the searches below run through the tombstone filter
    assert recall_at_k(ann, exact, _unit(rng, 200, 32), k=10) >= 0.95


def test_hnsw_never_returns_removed_or_replaced_vectors(
    filled: tuple[HnswIndex, ExactIndex, np.random.Generator],
) -> None:
    ann, _, _ = filled
    removed = {f"i{j}" for j in range(0, 3000, 7)} - {f"i{j}" for j in range(100)}
    for q in np.eye(32, dtype=np.float32):
        got = ann.search(q, k=50).ids
        assert len(got) == 50 and len(set(got)) == 50
        assert not removed.intersection(got)


def test_search_many_matches_one_by_one_search(
    filled: tuple[HnswIndex, ExactIndex, np.random.Generator],
) -> None:
    ann, _, rng = filled
    queries = _unit(rng, 20, 32)
    for q, result in zip(queries, ann.search_many(queries, k=7), strict=True):
        assert result.ids == ann.search(q, k=7).ids


def test_tombstones_past_the_fraction_trigger_a_rebuild_that_keeps_answers() -> None:
    rng = np.random.default_rng(5)
    ids = [f"i{j}" for j in range(200)]
    index = HnswIndex(16, m=8, rebuild_fraction=0.25)
    index.upsert(ids, _unit(rng, 200, 16))
    index.remove(ids[:40])  # 40 / 200 = 0.2: no rebuild yet
    assert index.tombstones == 40 and index.rebuilds == 0
    index.remove(ids[40:60])  # 60 / 200 > 0.25
    assert index.tombstones == 0 and index.rebuilds == 1 and len(index) == 140
    assert index.ids() == ids[60:]
    q = index.get(["i150"])["i150"]
    assert index.search(q, k=1).ids == ["i150"]


def test_hnsw_rejects_bad_hyperparameters() -> None:
    with pytest.raises(InvalidRequest):
        HnswIndex(8, m=1)
    with pytest.raises(InvalidRequest):
        HnswIndex(8, rebuild_fraction=0)


def test_factory_returns_flat_up_to_flat_max_and_hnsw_beyond() -> None:
    assert type(build_vector_index(16, 100, flat_max=100)) is FaissIndex
    ann = build_vector_index(16, 101, flat_max=100, hnsw_m=12, ef_search=40, target_recall=0.9)
    assert isinstance(ann, HnswIndex) and ann.m == 12 and ann.ef_search == 40
    assert ann.target_recall == 0.9


def test_factory_rejects_an_unknown_kind() -> None:
    with pytest.raises(InvalidRequest):
        build_vector_index(16, 10, kind="lsh")  # type: ignore[arg-type]


@pytest.mark.skipif(gpu_unavailable_reason() is None, reason="this faiss has a GPU")
def test_gpu_request_without_faiss_gpu_warns_once_and_returns_a_working_cpu_index(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="index.factory"):
        index = build_vector_index(8, 1000, flat_max=10, device="gpu", hnsw_m=8)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert warnings[0].startswith("FAISS GPU not available (") and warnings[0].endswith(
        "); using CPU")
    assert isinstance(index, HnswIndex)
    index.upsert(["a", "b"], np.eye(8, dtype=np.float32)[:2])
    assert index.search(np.eye(8)[1], k=1).ids == ["b"]


@pytest.mark.skipif(gpu_unavailable_reason() is not None, reason="needs faiss with a GPU")
def test_gpu_request_with_faiss_gpu_gives_an_exact_gpu_index() -> None:
    index = build_vector_index(8, 10**6, flat_max=10, device="gpu")
    assert isinstance(index, GpuFlatIndex)
    index.upsert(["a", "b"], np.eye(8, dtype=np.float32)[:2])
    assert index.search(np.eye(8)[1], k=1).ids == ["b"]


def test_load_vector_index_picks_the_class_from_the_snapshot(tmp_path: Path) -> None:
    for index in (FaissIndex(4), HnswIndex(4, m=8)):
        index.upsert(["a"], [[1, 0, 0, 0]])
        index.save(tmp_path / type(index).__name__)
        loaded = load_vector_index(tmp_path / type(index).__name__)
        assert type(loaded) is type(index) and loaded.search([1, 0, 0, 0], k=1).ids == ["a"]
    with pytest.raises(DataNotFound):
        load_vector_index(tmp_path / "missing")


def test_recall_is_below_one_when_the_ann_misses_neighbours() -> None:
    exact, wrong = ExactIndex(2), ExactIndex(2)
    exact.upsert(["a", "b"], [[1, 0], [0, 1]])
    wrong.upsert(["a", "b"], [[0, 1], [1, 0]])  # the same ids, swapped vectors
    assert recall_at_k(wrong, exact, [[1, 0], [0, 1]], k=1) == 0.0
    assert recall_at_k(exact, exact, [[1, 0], [0, 1]], k=1) == 1.0


# --- efSearch calibration ------------------------------------------------------------------


def _calibrated(n: int, dim: int = 32, **kwargs: Any) -> HnswIndex:
    index = HnswIndex(dim, m=16, ef_construction=64, target_recall=0.95,
                      calibration_queries=500, **kwargs)
    index.upsert([f"i{j}" for j in range(n)], _unit(np.random.default_rng(n), n, dim))
    return index


def test_calibration_reaches_the_target_on_unseen_queries_with_the_smallest_ef_search(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="index.ann"):
        ann = _calibrated(10_000)
    calibration = ann.calibration
    assert calibration is not None and calibration.met and calibration.n_items == 10_000
    assert ann.ef_search == calibration.ef_search < ann.max_ef_search
    assert calibration.recall.lower_bound >= 0.95 and calibration.recall.queries == 500
    [line] = [r.getMessage() for r in caplog.records]
    assert f"efSearch {ann.ef_search}: recall@10 " in line and "target 0.950 met" in line

    exact = ExactIndex(32)
    exact.upsert(ann.ids(), np.stack(list(ann.get(ann.ids()).values())))
    unseen = _unit(np.random.default_rng(99), 500, 32)  # random queries, as in the bench
    assert recall_at_k(ann, exact, unseen, k=10) >= 0.945
    ann.ef_search = calibration.ef_search // 2  # doubling passed this value: it fell short
    assert recall_at_k(ann, exact, unseen, k=10) < 0.95


def test_calibration_reruns_after_growth_or_a_rebuild_only() -> None:
    ann = _calibrated(2_000, dim=16, rebuild_fraction=0.3)
    first = ann.calibration
    ann.upsert([f"n{j}" for j in range(400)], _unit(np.random.default_rng(1), 400, 16))
    assert ann.calibration is first  # grew by 20%: below the 25% that recalibrates
    ann.upsert([f"m{j}" for j in range(200)], _unit(np.random.default_rng(2), 200, 16))
    second = ann.calibration
    assert second is not None and second is not first and second.n_items == 2_600
    ann.remove([f"i{j}" for j in range(900)])  # tombstones past 0.3 of the rows: rebuild
    assert ann.rebuilds == 1 and ann.calibration is not second
    assert ann.calibration is not None and ann.calibration.n_items == 1_700


def test_calibration_skips_tombstones_and_takes_given_queries() -> None:
    ann = _calibrated(3_000, dim=16, rebuild_fraction=0.9)
    ann.remove([f"i{j}" for j in range(0, 3_000, 3)])
    calibration = ann.calibrate(_unit(np.random.default_rng(5), 300, 16))
    assert calibration.met and calibration.n_items == 2_000 and calibration.recall.queries == 300


def test_an_unreachable_target_stops_at_the_cap_and_warns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="index.ann"):
        ann = _calibrated(5_000, dim=64, max_ef_search=16)
    assert ann.calibration is not None and not ann.calibration.met and ann.ef_search == 16
    assert "NOT met at the efSearch cap 16" in caplog.records[0].getMessage()


def test_calibration_needs_a_target_and_small_indexes_are_not_calibrated() -> None:
    plain = HnswIndex(8, m=8)
    plain.upsert(["a", "b", "c"], np.eye(8, dtype=np.float32)[:3])
    with pytest.raises(InvalidRequest):
        plain.calibrate()
    small = _calibrated(50, dim=8)
    assert small.calibration is None and small.ef_search == 256
    with pytest.raises(InvalidRequest):
        HnswIndex(8, target_recall=1.5)


def test_a_loaded_index_keeps_its_calibrated_ef_search(tmp_path: Path) -> None:
    ann = _calibrated(2_000, dim=16)
    ann.save(tmp_path / "hnsw")
    loaded = HnswIndex.load(tmp_path / "hnsw")
    assert loaded.ef_search == ann.ef_search and loaded.target_recall == 0.95
    loaded.upsert(["extra"], _unit(np.random.default_rng(7), 1, 16))
    assert loaded.calibration is None  # calibrated before it was saved: no rerun for one item


def test_smallest_passing_returns_the_cap_when_nothing_passes() -> None:
    def measure(ef: int) -> RecallEstimate:
        return RecallEstimate(min(1.0, ef / 100), 0.0, 10)

    assert smallest_passing(measure, 2.0, start=16, cap=100) == (100, measure(100))
    assert smallest_passing(measure, 0.1, start=16, cap=100)[0] == 16
    ef, estimate = smallest_passing(measure, 0.7, start=16, cap=100)
    assert 70 <= ef <= 70 + 70 // 16 and estimate.mean >= 0.7
