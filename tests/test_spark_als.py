"""Batch ALS on Spark: archive -> Parquet -> Spark MLlib -> the artifact the API serves.

One local[1] SparkSession for the whole module (a session starts in ~10 s); the
commands and the model reuse it instead of starting their own.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from cli.main import cli
from core.events import ItemClicked, ItemViewed, Purchased
from core.scoring import Interactions, Scorer
from infra.models import ModelProvider
from infra.sql import SqlStore
from offline.models.base import user_item_matrix
from offline.models.registry import make_model
from offline.models.spark_als import SparkALSScorer
from offline.train import load_model
from tests.contracts.scorer import ScorerContract, generated_items, generated_log

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: Two shopper groups with disjoint tastes: right ids in the artifact keep them apart.
GROUPS = {"a": [f"A-{n:02d}" for n in range(8)], "b": [f"B-{n:02d}" for n in range(8)]}


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    from offline.spark import spark_session

    # A JVM that compiles less and collects garbage simply starts faster for tiny jobs.
    quick = {"spark.driver.extraJavaOptions": "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC"}
    with spark_session("local[1]", driver_memory="512m", conf=quick) as session:
        yield session


def _archive(url: str) -> int:
    rng = np.random.default_rng(5)
    events = []
    for n in range(60):
        group = "a" if n % 2 == 0 else "b"
        for step in range(6):
            item = str(rng.choice(GROUPS[group]))
            kind = (ItemViewed, ItemClicked, Purchased)[step % 3]
            events.append(kind(user_id=f"{group}-shopper-{n}", item_id=item,
                               timestamp=1_300_000_000 + n * 10 + step))
    store = SqlStore(url)
    store.create_schema()
    store.archive_events(events)
    store.close()
    return len(events)


def test_archive_export_and_spark_training_publish_an_als_the_provider_serves(
    spark: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'archive.db'}"
    n_events = _archive(url)
    monkeypatch.setenv("STREAMREC_DATABASE_URL", url)
    monkeypatch.setenv("STREAMREC_STATE_DIR", str(tmp_path))
    runner = CliRunner()
    export = tmp_path / "export"

    exported = runner.invoke(cli, ["archive", "export", "--parquet", str(export)])
    assert exported.exit_code == 0, exported.output
    assert f"exported {n_events} events" in exported.output
    trained = runner.invoke(cli, ["train", "--engine", "spark", "--master", "local[1]",
                                  "--parquet", str(export), "--factors", "8",
                                  "--iterations", "3"])
    assert trained.exit_code == 0, trained.output

    artifacts = tmp_path / "artifacts"
    version = (artifacts / "latest").read_text().strip()
    manifest = json.loads((artifacts / version / "manifest.json").read_text())
    assert (manifest["engine"], manifest["events"], set(manifest["models"])) == (
        "spark", n_events, {"als"})
    foldin, index = ModelProvider(artifacts, min_interval_s=0).current()
    assert foldin is not None and index is not None and foldin.version == version
    assert set(foldin.item_ids) == set(GROUPS["a"]) | set(GROUPS["b"])
    # The served index ranks by the model's factors under our ids: an A shopper's top
    # collaborative candidates are A items, a B shopper's B items.
    model = load_model(artifacts, version, "als")
    assert isinstance(model, SparkALSScorer)
    for shopper, group in (("a-shopper-0", "A-"), ("b-shopper-1", "B-")):
        user_vector = model.user_factors_[model.user_index_[shopper]]
        assert all(i.startswith(group) for i in index.search(user_vector, 4).ids)
        assert all(i.startswith(group) for i in model.score(shopper).top(4).ids)
    assert foldin.user_vector({"A-00": 8.0}) is not None  # new shoppers fold in


def test_spark_training_on_a_data_set_keeps_the_ids_and_matrix_of_the_batch_models(
    spark: Any, tmp_path: Path
) -> None:
    csv = tmp_path / "log.csv"
    csv.write_text("user_id,item_id,timestamp\nv,b,0\nu,a,1\nu,a,2\nw,c,3\nv,a,4\n")
    result = CliRunner().invoke(cli, ["train", "--engine", "spark", "--dataset", "csv",
                                      "--data", str(csv), "--state-dir", str(tmp_path),
                                      "--factors", "4", "--iterations", "2"])
    assert result.exit_code == 0, result.output
    artifacts = tmp_path / "artifacts"
    model = load_model(artifacts, (artifacts / "latest").read_text().strip(), "als")
    assert isinstance(model, SparkALSScorer)
    assert (model.user_ids_, model.item_ids_) == (["u", "v", "w"], ["a", "b", "c"])
    log = Interactions.from_records([("v", "b", 1.0, 0), ("u", "a", 1.0, 1), ("u", "a", 1.0, 2),
                                     ("w", "c", 1.0, 3), ("v", "a", 1.0, 4)])
    expected = user_item_matrix(log, model.user_index_, model.item_index_)
    assert (model.matrix_ != expected).nnz == 0
    assert model.user_factors_.shape == (3, 4)
    assert set(model.score("w").ids) == {"a", "b", "c"}


class TestSparkALSContract(ScorerContract):
    """The shared scorer suite; one fit for the class (each Spark fit runs many jobs)."""

    def make_scorer(self) -> Scorer:
        return SparkALSScorer(factors=4, iterations=2, random_state=3)

    @pytest.fixture(scope="class")
    def fitted(self, spark: Any) -> Scorer:
        model = self.make_scorer()
        model.fit(generated_log(), generated_items())
        return model


def test_spark_als_is_a_registered_model_for_evaluate() -> None:
    assert isinstance(make_model("spark_als", random_state=3), SparkALSScorer)


def test_without_pyspark_the_spark_engine_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "pyspark" else real_find_spec(name, *a))
    result = CliRunner().invoke(cli, ["train", "--engine", "spark",
                                      "--state-dir", str(tmp_path)])
    assert result.exit_code != 0
    assert "needs the `spark` extra" in result.output
    assert not (tmp_path / "artifacts").exists()
