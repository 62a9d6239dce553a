"""A newly trained version is picked up by running processes, without a restart."""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
from pathlib import Path

import pytest

from core.errors import ArtifactIntegrityError
from core.scoring import Interactions
from core.settings import Settings
from core.types import Item
from infra.models import ModelProvider
from offline.datasets import Dataset
from offline.train import load_model, read_manifest, train
from online_models.serving.popularity import COUNTS_FILE, ItemCounts


def tiny(seed_shift: int) -> Dataset:
    records = [(f"u{u}", f"i{(u * 3 + j + seed_shift) % 12}", 1.0, float(u * 10 + j))
               for u in range(20) for j in range(4)]
    return Dataset("tiny", Interactions.from_records(records),
                   [Item(f"i{n}", f"item {n}") for n in range(12)])


def test_the_provider_loads_the_latest_version_and_switches_when_a_new_one_lands(
    tmp_path: Path
) -> None:
    now = [0.0]
    provider = ModelProvider(tmp_path, min_interval_s=5.0, clock=lambda: now[0])
    assert provider.foldin() is None  # nothing trained yet

    first = train(tiny(0), tmp_path, ["als"], version="v1").version
    now[0] = 10.0
    foldin, item_index = provider.current()
    assert foldin is not None and foldin.version == first and item_index is not None
    assert foldin.user_vector({"i1": 2.0}) is not None

    train(tiny(5), tmp_path, ["als"], version="v2")
    assert provider.foldin().version == "v1"  # type: ignore[union-attr]  # throttled
    now[0] = 20.0
    assert provider.foldin().version == "v2"  # type: ignore[union-attr]


def test_the_version_an_etag_names_moves_to_a_new_model_without_any_list_computed(
    tmp_path: Path
) -> None:
    """A worker answering only 304s still sees a new model version (so tags change)."""
    now = [0.0]
    provider = ModelProvider(tmp_path, min_interval_s=5.0, clock=lambda: now[0])
    train(tiny(0), tmp_path, ["als"], version="v1")
    assert provider.current_version() == "v1"
    train(tiny(5), tmp_path, ["als"], version="v2")
    assert provider.current_version() == "v1"  # throttled: at most every min_interval_s
    now[0] = 6.0
    assert provider.current_version() == "v2" == provider.version


def test_a_version_without_an_als_model_turns_collaborative_scores_off(tmp_path: Path) -> None:
    train(tiny(0), tmp_path, ["popularity"], version="pop-only")
    assert ModelProvider(tmp_path, min_interval_s=0).current() == (None, None)


def test_items_folded_in_by_the_consumers_join_the_collaborative_index(tmp_path: Path) -> None:
    import numpy as np

    train(tiny(0), tmp_path, ["als"], version="v1")
    provider = ModelProvider(tmp_path, min_interval_s=0,
                             new_item_factors=lambda version: {"brand-new": np.ones(64)}
                             if version == "v1" else {})
    _, index = provider.current()
    assert index is not None and "brand-new" in index


def test_a_poll_upserts_only_new_items_whose_factors_changed(tmp_path: Path) -> None:
    import numpy as np

    train(tiny(0), tmp_path, ["als"], version="v1")
    folded = {"new-a": np.ones(64), "new-b": np.full(64, 2.0)}
    provider = ModelProvider(tmp_path, min_interval_s=0,
                             new_item_factors=lambda version: dict(folded))
    _, index = provider.current()
    assert index is not None and "new-a" in index and "new-b" in index
    upserted: list[list[str]] = []
    original = index.upsert

    def spy(ids: list[str], vectors: np.ndarray) -> None:
        upserted.append(list(ids))
        original(ids, vectors)

    index.upsert = spy  # type: ignore[method-assign]
    provider.current()
    assert upserted == []  # nothing changed since the last poll
    folded["new-b"] = np.full(64, 3.0)
    folded["new-c"] = np.ones(64)
    provider.current()
    assert upserted == [["new-b", "new-c"]]
    assert "new-c" in index

    train(tiny(5), tmp_path, ["als"], version="v2")  # a new model: a new index, all again
    _, fresh = provider.current()
    assert fresh is not None and fresh is not index
    assert all(item in fresh for item in ("new-a", "new-b", "new-c"))


def test_training_records_each_model_files_sha256_in_the_manifest(tmp_path: Path) -> None:
    result = train(tiny(0), tmp_path, ["als"], version="v1")
    entry = result.manifest["models"]["als"]
    assert entry["sha256"] == hashlib.sha256((result.path / "als.pkl").read_bytes()).hexdigest()
    assert read_manifest(tmp_path, "v1")["models"]["als"]["sha256"] == entry["sha256"]


def _planted_pickle(marker: Path) -> bytes:
    class Planted:
        def __reduce__(self) -> tuple[object, tuple[str, str]]:
            return open, (str(marker), "w")

    return pickle.dumps(Planted())


def test_a_tampered_model_file_is_refused_before_it_is_unpickled(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    provider = ModelProvider(tmp_path, min_interval_s=1.0, clock=lambda: now[0])
    train(tiny(0), tmp_path, ["als"], version="v1")
    assert provider.foldin().version == "v1"  # type: ignore[union-attr]
    train(tiny(5), tmp_path, ["als"], version="v2")
    marker = tmp_path / "ran"
    (tmp_path / "v2" / "als.pkl").write_bytes(_planted_pickle(marker))  # swapped after training
    with pytest.raises(ArtifactIntegrityError, match="sha256"):
        load_model(tmp_path, "v2", "als")
    now[0] = 10.0
    with caplog.at_level(logging.ERROR):
        assert provider.foldin().version == "v1"  # type: ignore[union-attr]  # kept serving
    assert "model version v2 refused" in caplog.text
    assert not marker.exists()


def test_a_model_without_a_recorded_hash_is_refused_and_the_demo_retrains(
    tmp_path: Path,
) -> None:
    from infra.bootstrap import ensure_trained

    train(tiny(0), tmp_path / "artifacts", ["als"], version="old")
    manifest_path = tmp_path / "artifacts" / "old" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["models"]["als"]["sha256"]  # as versions written before hashes
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(ArtifactIntegrityError, match="records no sha256"):
        load_model(tmp_path / "artifacts", "old", "als")
    settings = Settings(state_dir=tmp_path, data_dir=Path(__file__).resolve().parents[1] / "data")
    fresh = ensure_trained(settings)
    assert fresh != "old"
    assert load_model(tmp_path / "artifacts", fresh, "als") is not None
    # the demo's version also carries the all-time counts the `alltime` source reads
    provider = ModelProvider(tmp_path / "artifacts")
    assert provider.current_version() == fresh
    assert provider.artifact(COUNTS_FILE, ItemCounts.load) is not None


def test_a_version_whose_check_chose_the_normalised_blend_serves_it(tmp_path: Path) -> None:
    from online_models.serving.ranker import FILE, BlendRanker

    def write_blend(folder: Path) -> dict[str, str]:
        BlendRanker([1.0, 0.5], ["ease", "covisit"], {"chosen": "normalised"}).save(
            folder / FILE)
        return {"file": FILE}

    train(tiny(0), tmp_path, ["als"], version="v1", extras={"ranker": write_blend})
    ranker = ModelProvider(tmp_path).ranker()
    assert isinstance(ranker, BlendRanker)
    assert ranker.sources == ("ease", "covisit") and ranker.weights.tolist() == [1.0, 0.5]
