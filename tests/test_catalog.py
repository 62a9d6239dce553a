"""The shipped data set and its loaders."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from core.errors import DataNotFound
from core.types import Item
from offline.catalog import catalog_frame, load_catalog, load_purchases

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(scope="module")
def catalog() -> list[Item]:
    return load_catalog(DATA)


@pytest.fixture(scope="module")
def purchases() -> pd.DataFrame:
    return load_purchases(DATA)


def test_catalog_has_unique_string_ids_names_and_positive_prices(catalog: list[Item]) -> None:
    assert 3000 < len(catalog) < 4000
    ids = [item.item_id for item in catalog]
    assert len(set(ids)) == len(ids)
    assert all(isinstance(i, str) for i in ids)
    assert "10002" in ids and "85123A" in ids  # numeric-looking ids stay strings
    assert all(item.name and item.category for item in catalog)
    assert all(item.price > 0 for item in catalog)


def test_catalog_names_are_readable_not_shouting(catalog: list[Item]) -> None:
    names = {item.item_id: item.name for item in catalog}
    assert names["85123A"] == "White Hanging Heart T-Light Holder"
    assert sum(item.name.isupper() for item in catalog) < 0.01 * len(catalog)


def test_catalog_has_no_service_codes(catalog: list[Item]) -> None:
    ids = {item.item_id for item in catalog}
    assert not ids & {"POST", "DOT", "M", "C2", "BANK CHARGES", "PADS", "AMAZONFEE",
                      "23444", "23574", "23702"}


def test_categories_are_few_unique_and_match_categories_json(catalog: list[Item]) -> None:
    meta = json.loads((DATA / "categories.json").read_text())
    counts = pd.Series([item.category for item in catalog]).value_counts()
    assert 15 <= len(counts) <= 25
    assert set(counts.index) == set(meta)
    assert all(meta[name]["size"] == int(n) for name, n in counts.items())
    assert all(" & " in name for name in meta)


def test_purchases_have_the_documented_columns_and_types(purchases: pd.DataFrame) -> None:
    assert list(purchases.columns) == ["invoice", "user_id", "item_id", "quantity", "price",
                                       "timestamp"]
    assert purchases["timestamp"].dtype == "int64" and purchases["quantity"].dtype == "int64"
    assert isinstance(purchases["user_id"].iloc[0], str)
    assert not purchases["user_id"].str.contains(r"\.").any()  # "17850", never "17850.0"
    assert 350_000 < len(purchases) < 450_000


def test_purchases_are_clean_sorted_and_refer_to_catalog_items(
    purchases: pd.DataFrame, catalog: list[Item]
) -> None:
    assert purchases["timestamp"].is_monotonic_increasing
    assert (purchases["quantity"] > 0).all() and (purchases["price"] > 0).all()
    assert not purchases["invoice"].str.startswith("C").any()
    assert set(purchases["item_id"]) == {item.item_id for item in catalog}
    first, last = pd.to_datetime(purchases["timestamp"].iloc[[0, -1]], unit="s")
    assert str(first.date()) == "2010-12-01" and str(last.date()) == "2011-12-09"


def test_shipped_data_stays_small_and_credits_its_source() -> None:
    total = sum(p.stat().st_size for p in DATA.iterdir() if p.is_file())
    assert total < 6 * 1024 * 1024
    readme = (DATA / "README.md").read_text()
    assert "10.24432/C5BW33" in readme and "CC BY 4.0" in readme


def test_missing_catalog_raises_data_not_found_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(DataNotFound, match=r"catalog\.csv"):
        load_catalog(tmp_path)


def test_missing_purchases_raise_data_not_found_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(DataNotFound, match=r"purchases\.csv\.gz"):
        load_purchases(tmp_path)


def test_catalog_without_a_required_column_raises_data_not_found(tmp_path: Path) -> None:
    (tmp_path / "catalog.csv").write_text("item_id,name,price\n1,Mug,2.5\n")
    with pytest.raises(DataNotFound, match="category"):
        catalog_frame(tmp_path)


def test_loader_keeps_leading_zeros_and_reads_every_call_afresh(tmp_path: Path) -> None:
    path = tmp_path / "catalog.csv"
    path.write_text("item_id,name,category,price\n00123,Mug,Kitchen,2.5\n")
    assert load_catalog(tmp_path) == [Item("00123", "Mug", "Kitchen", 2.5)]
    path.write_text("item_id,name,category,price\n00124,Cup,Kitchen,1\n")
    assert [item.item_id for item in load_catalog(tmp_path)] == ["00124"]  # nothing cached
