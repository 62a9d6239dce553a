"""ALS fold-in: the same user vector implicit computes, updated by every event."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from threadpoolctl import threadpool_limits

from core.events import ItemViewed, Purchased
from infra.memory_store import InMemoryStateStore
from online_models.als_foldin import ALSFoldIn
from online_models.processor import StreamProcessor
from online_models.profile import ContentProfile
from tests.fakes import toy_catalog, toy_index


def test_fold_in_equals_implicits_exact_recalculation_of_a_user() -> None:
    from implicit.cpu.als import AlternatingLeastSquares

    matrix = sp.random(60, 40, density=0.2, format="csr", random_state=1, dtype=np.float32)
    matrix.data = 10 * np.log1p(5 * matrix.data)  # confidence = alpha * log1p(weight)
    with threadpool_limits(1, "blas"):
        als = AlternatingLeastSquares(factors=8, regularization=0.05, alpha=1.0, iterations=4,
                                      random_state=0, num_threads=1, use_cg=False)
        als.fit(matrix, show_progress=False)
        row = matrix[7]
        expected = als.recalculate_user(7, row)
    foldin = ALSFoldIn([str(i) for i in range(40)], als.item_factors, regularization=0.05,
                       alpha=10.0)
    history = {str(j): float(np.expm1(v / 10)) for j, v in zip(row.indices, row.data, strict=True)}
    np.testing.assert_allclose(foldin.user_vector(history), expected, rtol=1e-4, atol=1e-5)


def test_every_batch_refreshes_the_users_collaborative_vector() -> None:
    catalog = toy_catalog()
    ids = list(catalog)
    rng = np.random.default_rng(0)
    foldin = ALSFoldIn(ids, rng.normal(size=(len(ids), 4)), regularization=0.1, alpha=10.0,
                       version="v7")
    store = InMemoryStateStore()
    processor = StreamProcessor(store, toy_index(catalog), {}, half_life_s=3600.0,
                                profile=ContentProfile(0.3), collaborative=lambda: foldin)
    processor.apply([ItemViewed(user_id="u", item_id=ids[0], timestamp=1.0)])  # type: ignore[arg-type]
    first = store.get_user_factors(["u"], "v7")["u"]
    processor.apply([Purchased(user_id="u", item_id=ids[5], timestamp=2.0)])  # type: ignore[arg-type]
    second = store.get_user_factors(["u"], "v7")["u"]
    assert store.get_histories(["u"]) == {"u": {ids[0]: 1.0, ids[5]: 8.0}}
    np.testing.assert_allclose(second, foldin.user_vector({ids[0]: 1.0, ids[5]: 8.0}), rtol=1e-5)
    assert not np.allclose(first, second)


def test_history_is_kept_even_without_a_trained_model() -> None:
    catalog = toy_catalog()
    store = InMemoryStateStore()
    processor = StreamProcessor(store, toy_index(catalog), {}, half_life_s=3600.0,
                                profile=ContentProfile(0.3), collaborative=lambda: None)
    processor.apply([ItemViewed(user_id="u", item_id="bags-1", timestamp=1.0)])  # type: ignore[arg-type]
    assert store.get_histories(["u"]) == {"u": {"bags-1": 1.0}}
    assert store.get_user_factors(["u"], "") == {}


def test_a_product_the_model_never_saw_gets_factors_from_the_users_who_touched_it() -> None:
    catalog = toy_catalog()
    ids = list(catalog)
    factors = np.array([[1.0, 0.0] if i.startswith("mugs") else [0.0, 1.0] for i in ids])
    user_factors = np.random.default_rng(1).normal(size=(50, 2))
    foldin = ALSFoldIn(ids, factors, regularization=0.1, alpha=10.0, version="v1",
                       user_gram=user_factors.T @ user_factors)
    store = InMemoryStateStore()
    processor = StreamProcessor(store, toy_index(catalog), {}, half_life_s=3600.0,
                                profile=ContentProfile(0.3), collaborative=lambda: foldin)
    # Mug lovers (their vectors point at mugs) buy a product the model never saw.
    processor.apply([Purchased(user_id=f"m{n}", item_id=f"mugs-{n}", timestamp=float(n))  # type: ignore[arg-type]
                     for n in range(5)])
    processor.apply([Purchased(user_id=f"m{n}", item_id="new-mug", timestamp=10.0 + n)  # type: ignore[arg-type]
                     for n in range(5)])
    assert store.get_item_histories(["new-mug"])["new-mug"].keys() == {f"m{n}" for n in range(5)}
    new = store.get_item_factors("v1")["new-mug"]
    assert new[0] > abs(new[1])  # it lands among the mugs


def test_new_item_factors_join_the_inner_product_index_under_its_scale() -> None:
    from index.faiss_index import ExactIndex
    from index.mips import InnerProductIndex

    idx = InnerProductIndex(ExactIndex(3), ["a", "b"], np.array([[1.0, 0.0], [0.0, 2.0]]))
    idx.upsert(["new"], np.array([[3.0, 0.0]]))  # longer than M = 2: shortened to M
    assert idx.search(np.array([1.0, 0.0]), 3).ids[0] == "new"
    np.testing.assert_allclose(np.linalg.norm(idx.get(["new"])["new"]), 1.0, rtol=1e-5)
