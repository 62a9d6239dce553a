"""Catalog upserts: embedded once by the consumers, replicated into every process."""

from __future__ import annotations

import numpy as np
import pytest

from core.events import ItemUpserted
from core.types import Item
from index.faiss_index import ExactIndex
from infra.catalog_log import InMemoryCatalogLog
from online_models.catalog import CatalogReplica, CatalogUpdater


class AxisEmbedder:
    """Embeds by keyword: 'mug' -> e0, 'bag' -> e1, anything else -> zero."""

    def transform(self, items):
        out = np.zeros((len(items), 4), dtype=np.float32)
        for row, item in enumerate(items):
            if "mug" in item.name.lower():
                out[row, 0] = 1
            elif "bag" in item.name.lower():
                out[row, 1] = 1
        return out


def upsert(item_id: str, name: str, ts: float = 0.0) -> ItemUpserted:
    return ItemUpserted(item_id=item_id, name=name, timestamp=ts)  # type: ignore[arg-type]


@pytest.fixture
def log() -> InMemoryCatalogLog:
    return InMemoryCatalogLog()


def test_an_upserted_item_reaches_another_replica_with_its_vector(log) -> None:
    CatalogUpdater(AxisEmbedder(), log).apply([upsert("m1", "Blue mug")])
    catalog: dict[str, Item] = {}
    index = ExactIndex(4)
    replica = CatalogReplica(catalog, index, log, min_interval_s=0)
    assert replica.refresh() == 1
    assert catalog["m1"].name == "Blue mug"
    assert index.search(np.array([1, 0, 0, 0], np.float32), 1).ids == ["m1"]
    assert replica.refresh() == 0  # nothing new


def test_the_last_upsert_of_an_item_in_a_batch_wins(log) -> None:
    result = CatalogUpdater(AxisEmbedder(), log).apply(
        [upsert("x", "Red bag", ts=2), upsert("x", "Red mug", ts=1)]
    )
    assert result.items == 1
    _, items, vectors = log.changes_since(0)
    assert items[0].name == "Red bag" and vectors["x"][1] == 1


def test_an_item_without_known_terms_is_kept_but_not_indexed(log) -> None:
    catalog: dict[str, Item] = {}
    index = ExactIndex(4)
    index.upsert(["z"], np.array([[0, 0, 1, 0]], np.float32))
    replica = CatalogReplica(catalog, index, log, min_interval_s=0)
    result = CatalogUpdater(AxisEmbedder(), log).apply([upsert("z", "Quantum flux")])
    assert result.embedded == 0
    replica.refresh()
    assert "z" in catalog and "z" not in index  # its old vector no longer matches its text


def test_refresh_is_throttled(log) -> None:
    now = [0.0]
    replica = CatalogReplica({}, ExactIndex(4), log, min_interval_s=1.0, clock=lambda: now[0])
    replica.refresh()
    CatalogUpdater(AxisEmbedder(), log).apply([upsert("m", "mug")])
    assert replica.refresh() == 0
    now[0] = 2.0
    assert replica.refresh() == 1
