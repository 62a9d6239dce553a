"""Data set loaders: shipped data, generated files in each format, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from core.errors import ConfigurationError, DataNotFound, InvalidRequest
from offline.datasets import load_dataset
from offline.evaluation.protocols import kfold, leave_one_out, temporal

DATA_DIR = Path(__file__).resolve().parent.parent / "data"


def test_csv_loader_reads_interactions_and_item_text(tmp_path: Path) -> None:
    (tmp_path / "log.csv").write_text("user_id,item_id,timestamp\nu1,a,1\nu2,b,2\nu1,c,3\n")
    (tmp_path / "items.csv").write_text("item_id,text\na,red cup\nb,blue pot\n")
    ds = load_dataset("csv", tmp_path / "log.csv", tmp_path / "items.csv")
    assert ds.interactions.users.tolist() == ["u1", "u2", "u1"]
    assert not ds.interactions.is_rating
    assert ds.item_text == {"a": "red cup", "b": "blue pot", "c": ""}


def test_csv_loader_takes_ratings_when_present(tmp_path: Path) -> None:
    (tmp_path / "r.csv").write_text("user_id,item_id,timestamp,rating\nu1,a,1,4\n")
    ds = load_dataset("csv", tmp_path / "r.csv")
    assert ds.interactions.is_rating
    assert ds.interactions.values.tolist() == [4.0]


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(DataNotFound, match=r"not found at .*nope\.csv"):
        load_dataset("csv", tmp_path / "nope.csv")
    with pytest.raises(DataNotFound, match="MovieLens ratings not found"):
        load_dataset("ml-100k", tmp_path)
    with pytest.raises(DataNotFound, match="Amazon test file not found"):
        load_dataset("amazon-scientific", tmp_path)


def test_csv_without_required_columns_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "bad.csv").write_text("user,item\nu,a\n")
    with pytest.raises(InvalidRequest, match="lacks columns"):
        load_dataset("csv", tmp_path / "bad.csv")


def test_unknown_dataset_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="unknown data set"):
        load_dataset("netflix")


def test_amazon_loader_rebuilds_sequences_from_recbole_files(tmp_path: Path) -> None:
    header = "user_id:token\titem_id_list:token_seq\titem_id:token\n"
    (tmp_path / "Scientific.test.inter").write_text(header + "0\t0 1 2\t3\n1\t2 3\t0\n")
    (tmp_path / "Scientific.item2index").write_text("A0\t0\nA1\t1\nA2\t2\nA3\t3\n")
    (tmp_path / "Scientific.text").write_text(
        "item_id:token\ttext:token_seq\nA0\tSolder wire. Tools. Acme. \nA3\tGloves. PPE. Bee. \n")
    ds = load_dataset("amazon-scientific", tmp_path)
    log = ds.interactions
    assert log.users.tolist() == ["0"] * 4 + ["1"] * 3
    assert log.items.tolist() == ["0", "1", "2", "3", "2", "3", "0"]
    assert ds.item_text["0"] == "Solder wire. Tools. Acme."
    # leave-last-one-out reproduces the published test items
    assert leave_one_out(log).test.items.tolist() == ["3", "0"]


def test_ml100k_loader_reads_ratings_and_genres(tmp_path: Path) -> None:
    (tmp_path / "u.data").write_text("1\t10\t4\t100\n2\t10\t2\t200\n")
    flags = "|".join(["0"] * 18 + ["1"])
    (tmp_path / "u.item").write_text(f"10|Some Film (1995)|01-Jan-1995||http://x|{flags}\n")
    ds = load_dataset("ml-100k", tmp_path)
    assert ds.interactions.is_rating
    assert ds.interactions.values.tolist() == [4.0, 2.0]
    assert ds.item_text["10"] == "Some Film (1995) Western"


@pytest.mark.skipif(not (DATA_DIR / "purchases.csv.gz").exists(), reason="shipped data absent")
def test_online_retail_loads_the_shipped_extract_as_implicit_feedback() -> None:
    ds = load_dataset("online-retail", DATA_DIR)
    log = ds.interactions
    assert not log.is_rating
    assert len(log) > 300_000
    assert (log.values == 1.0).all()
    assert {i.item_id for i in ds.items} >= set(np.unique(log.items[:1000]).tolist())


def test_temporal_split_cuts_globally_by_time_and_keeps_known_users() -> None:
    from core.scoring import Interactions

    log = Interactions.from_records(
        [("u", "a", 1, 1), ("v", "b", 1, 2), ("u", "c", 1, 3), ("w", "d", 1, 9),
         ("v", "e", 1, 10)])
    split = temporal(log, 0.4)
    assert split.train.timestamps.max() < split.test.timestamps.min()
    assert split.test.users.tolist() == ["v"]  # w never appears in train


def test_kfold_partitions_the_events() -> None:
    from core.scoring import Interactions

    log = Interactions.from_records([(f"u{i % 5}", f"i{i}", 1, i) for i in range(50)])
    folds = list(kfold(log, 5))
    assert len(folds) == 5
    tested = sorted(int(i[1:]) for f in folds for i in f.test.items.tolist())
    assert tested == list(range(50))
    for f in folds:
        assert not set(f.train.items.tolist()) & set(f.test.items.tolist())
