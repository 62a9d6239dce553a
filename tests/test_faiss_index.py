"""FaissIndex and ExactIndex pass the VectorIndex contract and agree with each other."""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np
import numpy.typing as npt
import pytest

from core.errors import DataNotFound, InvalidRequest
from index.faiss_index import ExactIndex, FaissIndex
from tests.contracts.vector_index import VectorIndexContract


class TestFaissIndexContract(VectorIndexContract):
    def make_index(self, dim: int) -> FaissIndex:
        return FaissIndex(dim)

    def load_index(self, path: Path) -> FaissIndex:
        return FaissIndex.load(path)


class TestExactIndexContract(VectorIndexContract):
    def make_index(self, dim: int) -> ExactIndex:
        return ExactIndex(dim)

    def load_index(self, path: Path) -> ExactIndex:
        return ExactIndex.load(path)


def _random_unit(rng: np.random.Generator, n: int, dim: int) -> npt.NDArray[np.float32]:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


Pair = tuple[FaissIndex, ExactIndex, np.random.Generator]


@pytest.fixture
def pair() -> Pair:
    rng = np.random.default_rng(0)
    dim, n = 32, 2000
    ids = [f"item{j}" for j in range(n)]
    vectors = _random_unit(rng, n, dim)
    faiss_index, exact = FaissIndex(dim), ExactIndex(dim)
    for index in (faiss_index, exact):
        index.upsert(ids, vectors)
        index.remove(ids[::10])  # holes in the id space, as after catalog deletions
        index.upsert(ids[:50], _random_unit(np.random.default_rng(1), 50, dim))
    return faiss_index, exact, rng


def test_faiss_search_agrees_with_exact_search(pair: Pair) -> None:
    faiss_index, exact, rng = pair
    queries = _random_unit(rng, 100, faiss_index.dim)
    for q in queries:
        got, want = faiss_index.search(q, k=20), exact.search(q, k=20)
        assert got.ids == want.ids
        np.testing.assert_allclose(got.scores, want.scores, atol=1e-5)


def test_search_many_matches_one_by_one_search(pair: Pair) -> None:
    faiss_index, exact, rng = pair
    queries = _random_unit(rng, 25, faiss_index.dim)
    for index in (faiss_index, exact):
        batch = index.search_many(queries, k=7)
        assert len(batch) == 25
        for q, result in zip(queries, batch, strict=True):
            single = index.search(q, k=7)
            assert result.ids == single.ids
            np.testing.assert_allclose(result.scores, single.scores, atol=1e-6)


def test_search_many_rejects_a_zero_row(pair: Pair) -> None:
    faiss_index, exact, _ = pair
    queries = np.zeros((2, faiss_index.dim), dtype=np.float32)
    queries[0, 0] = 1.0
    for index in (faiss_index, exact):
        with pytest.raises(InvalidRequest):
            index.search_many(queries, k=3)


def test_ids_lists_present_items_in_insertion_order() -> None:
    for index in (FaissIndex(2), ExactIndex(2)):
        index.upsert(["b", "a", "c"], [[1, 0], [0, 1], [1, 1]])
        index.remove(["a"])
        index.upsert(["a"], [[1, 0]])
        assert index.ids() == ["b", "c", "a"]


def test_faiss_load_refuses_an_exact_snapshot(tmp_path: Path) -> None:
    exact = ExactIndex(2)
    exact.upsert(["a"], [[1, 0]])
    exact.save(tmp_path / "snap")
    with pytest.raises(DataNotFound):
        FaissIndex.load(tmp_path / "snap")


def test_single_query_search_leaves_the_callers_openmp_threads_alone() -> None:
    index = FaissIndex(4)
    index.upsert(["a", "b"], np.eye(4, dtype=np.float32)[:2])
    before = faiss.omp_get_max_threads()
    assert index.search(np.ones(4), k=2).ids in (["a", "b"], ["b", "a"])
    assert faiss.omp_get_max_threads() == before
