"""The contract every :class:`core.ports.VectorIndex` honours.

Use it as a mixin: subclass, implement ``make_index`` (and ``load_index`` for the
save/load round trip) and pytest runs every check for the new implementation::

    class TestMyIndex(VectorIndexContract):
        def make_index(self, dim: int) -> VectorIndex:
            return MyIndex(dim)

        def load_index(self, path: Path) -> VectorIndex:
            return MyIndex.load(path)
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from core.errors import DataNotFound, InvalidRequest
from core.ports import VectorIndex

__all__ = ["VectorIndexContract"]

DIM = 8


def unit(rng: np.random.Generator, n: int, dim: int = DIM) -> npt.NDArray[np.float32]:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def axis(i: int, dim: int = DIM) -> npt.NDArray[np.float32]:
    v = np.zeros(dim, dtype=np.float32)
    v[i] = 1.0
    return v


class VectorIndexContract:
    """Checks shared by every VectorIndex implementation."""

    def make_index(self, dim: int) -> VectorIndex:
        raise NotImplementedError

    def load_index(self, path: Path) -> VectorIndex:
        raise NotImplementedError

    @pytest.fixture
    def index(self) -> VectorIndex:
        return self.make_index(DIM)

    @pytest.fixture
    def rng(self) -> np.random.Generator:
        return np.random.default_rng(7)

    # --- shape of the port ---------------------------------------------------------

    def test_is_a_vector_index_with_its_dim(self, index: VectorIndex) -> None:
        assert isinstance(index, VectorIndex)
        assert index.dim == DIM
        assert len(index) == 0

    def test_empty_index_searches_to_nothing(self, index: VectorIndex) -> None:
        assert index.search(axis(0), k=5).ids == []

    # --- upsert / get / contains ---------------------------------------------------

    def test_upsert_adds_and_get_returns_unit_vectors(self, index: VectorIndex) -> None:
        index.upsert(["a", "b"], [axis(0) * 3, axis(1) + axis(2)])
        assert len(index) == 2 and "a" in index and "b" in index and "c" not in index
        got = index.get(["a", "b"])
        np.testing.assert_allclose(got["a"], axis(0), atol=1e-6)
        np.testing.assert_allclose(got["b"], (axis(1) + axis(2)) / np.sqrt(2), atol=1e-6)
        assert got["a"].dtype == np.float32

    def test_get_leaves_out_unknown_ids(self, index: VectorIndex) -> None:
        index.upsert(["a"], [axis(0)])
        assert set(index.get(["a", "nope"])) == {"a"}
        assert index.get(["nope"]) == {}

    def test_upsert_of_a_present_id_replaces_its_vector(self, index: VectorIndex) -> None:
        index.upsert(["a", "b"], [axis(0), axis(1)])
        index.upsert(["a"], [axis(2)])
        assert len(index) == 2
        np.testing.assert_allclose(index.get(["a"])["a"], axis(2), atol=1e-6)
        assert index.search(axis(2), k=1).ids == ["a"]
        assert index.search(axis(0), k=2).scores.max() < 0.5  # old vector is gone

    def test_repeated_id_in_one_upsert_keeps_the_last_vector(self, index: VectorIndex) -> None:
        index.upsert(["a", "a"], [axis(0), axis(1)])
        assert len(index) == 1
        np.testing.assert_allclose(index.get(["a"])["a"], axis(1), atol=1e-6)

    def test_upsert_of_nothing_changes_nothing(self, index: VectorIndex) -> None:
        index.upsert([], np.zeros((0, DIM), dtype=np.float32))
        index.upsert([], [])
        assert len(index) == 0

    def test_upsert_with_wrong_dimension_is_rejected(self, index: VectorIndex) -> None:
        with pytest.raises(InvalidRequest):
            index.upsert(["a"], np.ones((1, DIM + 1), dtype=np.float32))
        assert len(index) == 0

    def test_upsert_with_row_count_not_matching_ids_is_rejected(
        self, index: VectorIndex
    ) -> None:
        with pytest.raises(InvalidRequest):
            index.upsert(["a", "b"], [axis(0)])
        assert len(index) == 0

    def test_upsert_of_a_zero_vector_is_rejected_and_changes_nothing(
        self, index: VectorIndex
    ) -> None:
        with pytest.raises(InvalidRequest):
            index.upsert(["a", "b"], [axis(0), np.zeros(DIM, dtype=np.float32)])
        assert len(index) == 0

    def test_upsert_of_nan_is_rejected(self, index: VectorIndex) -> None:
        with pytest.raises(InvalidRequest):
            index.upsert(["a"], [np.full(DIM, np.nan)])

    # --- remove ----------------------------------------------------------------------

    def test_remove_counts_only_present_ids(self, index: VectorIndex) -> None:
        index.upsert(["a", "b", "c"], [axis(0), axis(1), axis(2)])
        assert index.remove(["a", "zzz", "a"]) == 1
        assert len(index) == 2 and "a" not in index
        assert "a" not in index.search(axis(0), k=3)
        assert index.remove(["a"]) == 0

    def test_removed_then_re_added_id_is_found_again(self, index: VectorIndex) -> None:
        index.upsert(["a", "b"], [axis(0), axis(1)])
        index.remove(["a"])
        index.upsert(["a"], [axis(3)])
        assert len(index) == 2
        assert index.search(axis(3), k=1).ids == ["a"]
        assert index.search(axis(1), k=1).ids == ["b"]

    # --- search ----------------------------------------------------------------------

    def test_search_ranks_by_cosine_best_first(self, index: VectorIndex) -> None:
        angle = {"c": 0.1, "b": 0.5, "a": 0.9, "d": 1.3}  # cosine to axis 0 falls with angle
        ids = ["a", "d", "b", "c"]  # insertion order unrelated to the ranking
        index.upsert(ids, [np.cos(angle[i]) * axis(0) + np.sin(angle[i]) * axis(1) for i in ids])
        result = index.search(axis(0) * 5, k=3)  # the query's length does not matter
        assert result.ids == ["c", "b", "a"]
        np.testing.assert_allclose(result.scores, [np.cos(angle[i]) for i in "cba"], atol=1e-5)

    def test_search_returns_at_most_k_and_at_most_len(
        self, index: VectorIndex, rng: np.random.Generator
    ) -> None:
        index.upsert([f"i{j}" for j in range(10)], unit(rng, 10))
        assert len(index.search(unit(rng, 1)[0], k=4)) == 4
        assert len(index.search(unit(rng, 1)[0], k=50)) == 10
        assert len(index.search(unit(rng, 1)[0], k=0)) == 0

    def test_search_leaves_out_excluded_ids_and_still_fills_k(
        self, index: VectorIndex, rng: np.random.Generator
    ) -> None:
        ids = [f"i{j}" for j in range(10)]
        index.upsert(ids, unit(rng, 10))
        q = unit(rng, 1)[0]
        full = index.search(q, k=10).ids
        result = index.search(q, k=3, exclude=[full[0], full[2], "unknown"])
        assert result.ids == [full[1], full[3], full[4]]

    def test_search_excluding_everything_returns_nothing(self, index: VectorIndex) -> None:
        index.upsert(["a", "b"], [axis(0), axis(1)])
        assert index.search(axis(0), k=5, exclude=["a", "b"]).ids == []

    def test_search_with_wrong_dimension_is_rejected(self, index: VectorIndex) -> None:
        index.upsert(["a"], [axis(0)])
        with pytest.raises(InvalidRequest):
            index.search(np.ones(DIM + 2), k=1)

    def test_search_with_a_zero_query_is_rejected(self, index: VectorIndex) -> None:
        index.upsert(["a"], [axis(0)])
        with pytest.raises(InvalidRequest):
            index.search(np.zeros(DIM), k=1)

    def test_search_with_negative_k_is_rejected(self, index: VectorIndex) -> None:
        with pytest.raises(InvalidRequest):
            index.search(axis(0), k=-1)

    # --- persistence ---------------------------------------------------------------

    def test_save_then_load_gives_the_same_answers(
        self, index: VectorIndex, rng: np.random.Generator, tmp_path: Path
    ) -> None:
        ids = [f"i{j}" for j in range(20)]
        index.upsert(ids, unit(rng, 20))
        index.remove(["i3"])
        index.save(tmp_path / "snap")
        loaded = self.load_index(tmp_path / "snap")
        assert loaded.dim == DIM and len(loaded) == 19 and "i3" not in loaded
        q = unit(rng, 1)[0]
        before, after = index.search(q, k=5), loaded.search(q, k=5)
        assert after.ids == before.ids
        np.testing.assert_allclose(after.scores, before.scores, atol=1e-6)
        # The loaded index keeps working: new ids do not collide with old ones.
        loaded.upsert(["new"], [q])
        assert loaded.search(q, k=1).ids == ["new"] and len(loaded) == 20

    def test_save_overwrites_an_older_snapshot(
        self, index: VectorIndex, tmp_path: Path
    ) -> None:
        index.upsert(["a"], [axis(0)])
        index.save(tmp_path / "snap")
        index.upsert(["b"], [axis(1)])
        index.save(tmp_path / "snap")
        assert len(self.load_index(tmp_path / "snap")) == 2

    def test_load_of_a_missing_path_raises_data_not_found(self, tmp_path: Path) -> None:
        with pytest.raises(DataNotFound):
            self.load_index(tmp_path / "missing")

    # --- concurrency ------------------------------------------------------------------

    def test_concurrent_searches_during_upserts_never_fail(
        self, index: VectorIndex, rng: np.random.Generator
    ) -> None:
        index.upsert([f"i{j}" for j in range(50)], unit(rng, 50))
        vectors = unit(rng, 200)
        queries = unit(rng, 20)
        errors: list[BaseException] = []

        def writer() -> None:
            try:
                for j in range(200):
                    index.upsert([f"w{j % 30}"], vectors[j : j + 1])
                    if j % 7 == 0:
                        index.remove([f"w{(j + 3) % 30}"])
            except BaseException as exc:  # reported below, not swallowed
                errors.append(exc)

        def reader() -> None:
            try:
                for j in range(200):
                    result = index.search(queries[j % 20], k=5)
                    assert len(result) == 5 and len(set(result.ids)) == 5
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=writer)] + [
            threading.Thread(target=reader) for _ in range(3)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
