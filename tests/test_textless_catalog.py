"""A shop's log without an items file: no item has text, and everything still works."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.settings import Settings
from core.types import Item
from infra.bootstrap import build_index
from infra.served import ServedModel
from offline.content import ContentEmbedder
from offline.datasets import Dataset
from offline.evaluation.harness import evaluate
from tests.contracts.scorer import generated_log


def test_an_embedder_fitted_on_no_text_embeds_everything_to_zero_and_reads_back(
        tmp_path: Path) -> None:
    embedder = ContentEmbedder(dim=16)
    vectors = embedder.fit_transform([Item(f"i{k}", "") for k in range(5)])
    assert vectors.shape == (5, embedder.dim_) and not vectors.any()
    # An item listed later with a name is still unknown to this vocabulary-less embedder.
    assert not embedder.transform([Item("new", "Red Mug")]).any()
    embedder.save(tmp_path / "embedder.json")
    loaded = ContentEmbedder.load(tmp_path / "embedder.json")
    assert loaded.dim_ == embedder.dim_
    assert not loaded.transform([Item("new", "Red Mug")]).any()


@pytest.mark.parametrize("n_items", [30, 12_000])  # a flat index and an IVF one
def test_the_item_index_of_a_catalog_without_text_is_empty(tmp_path: Path,
                                                           n_items: int) -> None:
    catalog = {f"i{k}": Item(f"i{k}", "") for k in range(n_items)}
    index, embedder = build_index(Settings(state_dir=tmp_path), catalog)
    assert len(index) == 0 and index.dim == embedder.dim_
    again, _ = build_index(Settings(state_dir=tmp_path), catalog)  # read back from disk
    assert len(again) == 0


def test_served_is_evaluated_on_a_log_without_an_items_file() -> None:
    log = generated_log(n_users=100, n_items=30, per_user=8)
    bare = Dataset("bare", log, [Item(str(i), "") for i in np.unique(log.items).tolist()])
    result = evaluate(bare, ["popularity", "served"], protocol="leave-one-out", k=10,
                      progress=False, extra_models={"served": ServedModel})
    assert result.metrics["served"]["ndcg@10"] > 0
    (report,) = result.params["served"].values()  # one split
    # No text: the content source scores nothing and is left out.
    assert "content" in report["skipped_sources"]
