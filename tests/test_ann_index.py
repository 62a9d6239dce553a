"""HnswIndex, IvfIndex (and the GPU index's row logic) pass the VectorIndex contract;
IVF training, calibration, factory and recall."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt
import pytest

from core.errors import DataNotFound, InvalidRequest
from index.ann import GpuFlatIndex, HnswIndex, IvfIndex
from index.factory import build_vector_index, gpu_unavailable_reason, load_vector_index
from index.faiss_index import ExactIndex, FaissIndex
from index.recall import RecallEstimate, recall_at_k, smallest_passing
from tests.contracts.vector_index import VectorIndexContract


class TestHnswIndexContract(VectorIndexContract):
    def make_index(self, dim: int) -> HnswIndex:
        return HnswIndex(dim, m=8)

    def load_index(self, path: Path) -> HnswIndex:
        return HnswIndex.load(path)


class TestIvfIndexContract(VectorIndexContract):
    """Small contract indexes stay below ``train_from``: the flat phase."""

    def make_index(self, dim: int) -> IvfIndex:
        return IvfIndex(dim, nlist=4)

    def load_index(self, path: Path) -> IvfIndex:
        return IvfIndex.load(path)


class _TrainedEarly(IvfIndex):
    """An IvfIndex that trains from 8 vectors, so the contract runs on its lists too."""

    TRAIN_PER_LIST = 4


class TestTrainedIvfIndexContract(VectorIndexContract):
    """Its lists, probed exhaustively: the contract compares searches with each other."""

    def make_index(self, dim: int) -> IvfIndex:
        return _TrainedEarly(dim, nlist=2, nprobe=2)

    def load_index(self, path: Path) -> IvfIndex:
        return _TrainedEarly.load(path)


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
    ann = build_vector_index(16, 101, flat_max=100, kind="hnsw", hnsw_m=12, ef_search=40,
                             target_recall=0.9)
    assert isinstance(ann, HnswIndex) and ann.m == 12 and ann.ef_search == 40
    assert ann.target_recall == 0.9


def test_factory_picks_flat_then_ivf_then_hnsw_by_size() -> None:
    assert type(build_vector_index(16, 10_000)) is FaissIndex
    ivf = build_vector_index(16, 20_000, target_recall=0.9, rebuild_fraction=0.3)
    assert isinstance(ivf, IvfIndex) and ivf.nlist == IvfIndex.nlist_for(20_000) == 283
    assert ivf.target_recall == 0.9 and ivf.rebuild_fraction == 0.3
    assert isinstance(build_vector_index(16, 20_000, ivf_nlist=50), IvfIndex)
    assert build_vector_index(16, 20_000, ivf_nlist=50).nlist == 50  # type: ignore[attr-defined]
    assert isinstance(build_vector_index(16, 20_001, ivf_max=20_000), HnswIndex)
    assert isinstance(build_vector_index(16, 20_000, kind="hnsw"), HnswIndex)


def test_factory_rejects_an_unknown_kind() -> None:
    with pytest.raises(InvalidRequest):
        build_vector_index(16, 10, kind="lsh")  # type: ignore[arg-type]


@pytest.mark.skipif(gpu_unavailable_reason() is None, reason="this faiss has a GPU")
def test_gpu_request_without_faiss_gpu_warns_once_and_returns_a_working_cpu_index(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="index.factory"):
        index = build_vector_index(8, 1000, flat_max=10, kind="hnsw", device="gpu", hnsw_m=8)
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
    for index in (FaissIndex(4), HnswIndex(4, m=8), IvfIndex(4, nlist=2)):
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
    assert ann.ef_search == calibration.value < ann.max_ef_search
    # Half the 500 queries item-like, half profile-like: the worse half is reported.
    assert calibration.recall.lower_bound >= 0.95 and calibration.recall.queries == 250
    [line] = [r.getMessage() for r in caplog.records]
    assert f"efSearch {ann.ef_search}: recall@10 " in line and "target 0.950 met" in line

    exact = ExactIndex(32)
    exact.upsert(ann.ids(), np.stack(list(ann.get(ann.ids()).values())))
    unseen = _unit(np.random.default_rng(99), 500, 32)  # random queries, as in the bench
    assert recall_at_k(ann, exact, unseen, k=10) >= 0.945
    ann.ef_search = calibration.value // 2  # doubling passed this value: it fell short
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


# --- IVF training and nprobe calibration ---------------------------------------------------


def _clustered(n: int, dim: int = 16, seed: int = 0) -> npt.NDArray[np.float32]:
    """Unit vectors around the same 40 centres (any ``seed``): what an inverted file is for."""
    centres = np.random.default_rng(0).standard_normal((40, dim))
    rng = np.random.default_rng(seed + 1)
    return _unit_rows(centres[rng.integers(40, size=n)] + 0.4 * rng.standard_normal((n, dim)))


def _unit_rows(x: npt.NDArray[np.float64]) -> npt.NDArray[np.float32]:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _ivf(n: int, nlist: int = 32, **kwargs: Any) -> tuple[IvfIndex, ExactIndex]:
    ids, vectors = [f"i{j}" for j in range(n)], _clustered(n)
    ivf, exact = IvfIndex(16, nlist=nlist, **kwargs), ExactIndex(16)
    ivf.upsert(ids, vectors)
    exact.upsert(ids, vectors)
    return ivf, exact


def test_ivf_trains_on_the_first_bulk_load_that_is_large_enough() -> None:
    ivf, _ = _ivf(2_000)  # 2,000 >= 39 * 32
    assert ivf.trained and ivf.train_from == 1_248 and ivf.rebuilds == 1
    assert isinstance(ivf._index, faiss.IndexIVFFlat) and ivf._index.ntotal == 2_000


def test_small_first_writes_search_exactly_and_train_once_enough_arrive() -> None:
    vectors, exact = _clustered(1_300), ExactIndex(16)
    ivf = IvfIndex(16, nlist=32, nprobe=1)
    for start in range(0, 1_200, 100):  # 1,200 < train_from 1,248: a flat scan meanwhile
        ids = [f"i{j}" for j in range(start, start + 100)]
        ivf.upsert(ids, vectors[start:start + 100])
        exact.upsert(ids, vectors[start:start + 100])
    assert not ivf.trained
    queries = _clustered(50, seed=1)
    assert recall_at_k(ivf, exact, queries, k=10) == 1.0  # exact until trained
    with pytest.raises(InvalidRequest):
        IvfIndex(16, nlist=32, target_recall=0.9).calibrate()
    ivf.upsert([f"i{j}" for j in range(1_200, 1_300)], vectors[1_200:])
    assert ivf.trained and len(ivf) == 1_300
    assert ivf.get(["i5"])["i5"] == pytest.approx(vectors[5], abs=1e-6)
    at, rows = ivf.vectors_of(["nope", "i7", "i1299"])
    assert at == [1, 2] and np.allclose(rows, vectors[[7, 1299]], atol=1e-6)


def test_ivf_calibration_meets_the_target_with_an_nprobe_below_nlist(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="index.ann"):
        ivf, exact = _ivf(6_000, nlist=64, target_recall=0.95, calibration_queries=500)
    calibration = ivf.calibration
    assert calibration is not None and calibration.met and calibration.knob == "nprobe"
    assert ivf.nprobe == calibration.value < ivf.nlist and calibration.n_items == 6_000
    assert any(f"IVF (nlist=64) nprobe {ivf.nprobe}: recall@10 " in r.getMessage()
               and "target 0.950 met" in r.getMessage() for r in caplog.records)
    assert recall_at_k(ivf, exact, _clustered(300, seed=9), k=10) >= 0.94


def test_ivf_fills_k_past_exclusions_and_tombstones_by_probing_wider() -> None:
    ivf, _ = _ivf(2_000, nprobe=1, rebuild_fraction=0.9)
    removed = [f"i{j}" for j in range(0, 2_000, 3)]
    ivf.remove(removed)
    assert ivf.tombstones == len(removed)
    got = ivf.search(_clustered(1, seed=5)[0], k=500, exclude=["i1", "i2"]).ids
    assert len(got) == len(set(got)) == 500  # far more than one list holds
    assert not set(got) & set(removed) | {"i1", "i2"} & set(got)


def test_ivf_rebuild_after_removals_retrains_on_the_live_vectors() -> None:
    ivf, exact = _ivf(3_000, rebuild_fraction=0.3, target_recall=0.95, calibration_queries=300)
    first = ivf.calibration
    gone = [f"i{j}" for j in range(1_000)]
    ivf.remove(gone)
    exact.remove(gone)
    assert ivf.rebuilds == 2 and ivf.tombstones == 0 and ivf.trained
    assert ivf._index.ntotal == 2_000 and ivf.ids() == [f"i{j}" for j in range(1_000, 3_000)]
    assert ivf.calibration is not first and ivf.calibration is not None
    assert ivf.calibration.n_items == 2_000
    assert recall_at_k(ivf, exact, _clustered(200, seed=3), k=10) >= 0.93
    ivf.remove([f"i{j}" for j in range(1_000, 2_000)])  # 1,000 live < 1,248: flat again
    assert not ivf.trained and len(ivf) == 1_000


def test_ivf_save_and_load_keep_training_nprobe_and_ids(tmp_path: Path) -> None:
    ivf, _ = _ivf(2_000, target_recall=0.95, calibration_queries=300)
    ivf.remove(["i3"])
    ivf.save(tmp_path / "ivf")
    loaded = load_vector_index(tmp_path / "ivf")
    assert isinstance(loaded, IvfIndex) and loaded.trained
    assert (loaded.nlist, loaded.nprobe, loaded.target_recall) == (32, ivf.nprobe, 0.95)
    assert loaded.tombstones == 1 and "i3" not in loaded and len(loaded) == 1_999
    queries = _clustered(20, seed=4)
    assert [r.ids for r in loaded.search_many(queries, 10)] == [
        r.ids for r in ivf.search_many(queries, 10)]
    assert loaded.get(["i9"])["i9"] == pytest.approx(ivf.get(["i9"])["i9"])
    loaded.upsert(["extra"], _clustered(1, seed=6))
    assert loaded.calibration is None  # calibrated before it was saved: no rerun for one item


def test_ivf_rejects_bad_hyperparameters() -> None:
    with pytest.raises(InvalidRequest):
        IvfIndex(8, nlist=0)
    with pytest.raises(InvalidRequest):
        IvfIndex(8, nprobe=0)
    with pytest.raises(InvalidRequest):
        IvfIndex(8, target_recall=2)
