"""ContentEmbedder: TF-IDF + SVD item vectors."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from core.errors import DataNotFound, InvalidRequest
from core.types import Item
from offline.catalog import load_catalog
from offline.content import ContentEmbedder

DATA = Path(__file__).resolve().parents[1] / "data"

Fitted = tuple[ContentEmbedder, npt.NDArray[np.float32]]


@pytest.fixture(scope="module")
def catalog() -> list[Item]:
    return load_catalog(DATA)


@pytest.fixture(scope="module")
def fitted(catalog: list[Item]) -> Fitted:
    embedder = ContentEmbedder(dim=64, random_state=0)
    return embedder, embedder.fit_transform(catalog)


def _intra_inter(vectors: npt.NDArray[np.float32], labels: list[str]) -> tuple[float, float]:
    cats = np.asarray(labels)
    sims = vectors @ vectors.T
    same = cats[:, None] == cats[None, :]
    off_diagonal = ~np.eye(len(cats), dtype=bool)
    return float(sims[same & off_diagonal].mean()), float(sims[~same].mean())


def test_vectors_are_unit_float32_of_the_asked_width(fitted: Fitted) -> None:
    embedder, vectors = fitted
    assert vectors.dtype == np.float32 and vectors.shape[1] == 64 == embedder.dim_
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_same_category_items_are_closer_than_other_categories(
    fitted: Fitted, catalog: list[Item]
) -> None:
    _, vectors = fitted
    intra, inter = _intra_inter(vectors, [item.category for item in catalog])
    assert intra > inter + 0.3


def test_names_alone_still_put_same_category_items_closer(catalog: list[Item]) -> None:
    """The closeness comes from the names, not only from the category words in the text."""
    names_only = [Item(item.item_id, item.name) for item in catalog]
    vectors = ContentEmbedder(dim=32).fit_transform(names_only)
    intra, inter = _intra_inter(vectors, [item.category for item in catalog])
    assert intra > 2 * inter


def test_a_new_item_lands_next_to_its_kind(fitted: Fitted, catalog: list[Item]) -> None:
    embedder, vectors = fitted
    new = embedder.transform([Item("new-1", "Pink Polkadot Coffee Mug")])[0]
    nearest = [catalog[j].name for j in np.argsort(-(vectors @ new))[:5]]
    assert sum("Mug" in name or "Cup" in name for name in nearest) >= 3, nearest


def test_same_items_and_seed_give_the_same_vectors(catalog: list[Item]) -> None:
    sample = catalog[:300]
    a = ContentEmbedder(dim=16, random_state=3).fit_transform(sample)
    b = ContentEmbedder(dim=16, random_state=3).fit_transform(sample)
    np.testing.assert_array_equal(a, b)


def test_dim_is_capped_by_a_tiny_catalog() -> None:
    items = [Item("a", "Red Mug", "Kitchen"), Item("b", "Wool Scarf", "Clothing")]
    embedder = ContentEmbedder(dim=64)
    vectors = embedder.fit_transform(items)
    assert embedder.dim_ == 2 and vectors.shape == (2, 2)
    assert embedder.dim == 64  # the hyperparameter is left as given


def test_text_sharing_nothing_with_the_catalog_embeds_to_zero(fitted: Fitted) -> None:
    embedder, _ = fitted
    vector = embedder.transform([Item("x", "ΩΩΩ")])[0]
    assert not vector.any()


def test_save_then_load_transforms_identically(
    fitted: Fitted, catalog: list[Item], tmp_path: Path
) -> None:
    embedder, vectors = fitted
    embedder.save(tmp_path / "content.json")
    loaded = ContentEmbedder.load(tmp_path / "content.json")
    assert loaded.dim_ == embedder.dim_ and repr(loaded) == repr(embedder)
    np.testing.assert_allclose(loaded.transform(catalog[:50]), vectors[:50], atol=1e-6)
    new = [Item("new-1", "Pink Polkadot Coffee Mug")]  # unseen text embeds alike too
    np.testing.assert_allclose(loaded.transform(new), embedder.transform(new), atol=1e-6)


def test_a_saved_embedder_is_data_only_and_never_unpickled(
    fitted: Fitted, tmp_path: Path
) -> None:
    embedder, _ = fitted
    embedder.save(tmp_path / "content.json")
    json.loads((tmp_path / "content.json").read_text())  # plain JSON
    with np.load(tmp_path / "content.npz", allow_pickle=False) as data:
        assert set(data.files) == {"word_idf", "char_idf", "components"}
    # a pickle put in place of the arrays is refused, not executed
    (tmp_path / "content.npz").write_bytes(pickle.dumps({"components": object()}))
    with pytest.raises(DataNotFound):
        ContentEmbedder.load(tmp_path / "content.json")


def test_load_of_a_missing_or_foreign_file_raises_data_not_found(tmp_path: Path) -> None:
    with pytest.raises(DataNotFound):
        ContentEmbedder.load(tmp_path / "missing.json")
    (tmp_path / "junk.json").write_bytes(b"not json")
    (tmp_path / "junk.npz").write_bytes(b"not arrays")
    with pytest.raises(DataNotFound):
        ContentEmbedder.load(tmp_path / "junk.json")


def test_transform_before_fit_and_fit_on_nothing_are_rejected() -> None:
    with pytest.raises(InvalidRequest):
        ContentEmbedder().transform([Item("a", "Mug")])
    with pytest.raises(InvalidRequest):
        ContentEmbedder().fit([])
