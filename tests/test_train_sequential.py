"""`streamrec train` ships the sequential network the ranker's world trained (one network)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import infra.served
from cli.offline_commands import train_command
from online_models.sequential import SequentialModel
from tests.contracts.scorer import generated_log

pytest.importorskip("torch")
from offline.models.sasrec import SASRecScorer


def _write_csv(path: Path) -> None:
    log = generated_log(n_users=80, n_items=30, per_user=8)
    rows = ["user_id,item_id,timestamp"] + [
        f"{u},{i},{t}" for u, i, t in zip(log.users, log.items, log.timestamps, strict=True)]
    path.write_text("\n".join(rows) + "\n")


def test_the_version_serves_the_network_its_ranker_was_fitted_on(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(infra.served, "SEQUENTIAL_BUDGET_S", 10.0)
    trained: list[SASRecScorer] = []
    original = SASRecScorer.fit

    def counting_fit(self: SASRecScorer, *args: object, **kwargs: object) -> None:
        trained.append(self)
        original(self, *args, **kwargs)

    monkeypatch.setattr(SASRecScorer, "fit", counting_fit)
    data = tmp_path / "shop.csv"
    _write_csv(data)
    result = CliRunner().invoke(train_command, [
        "--dataset", "csv", "--data", str(data), "--models", "popularity,sasrec",
        "--state-dir", str(tmp_path / "state")])
    assert result.exit_code == 0, result.output
    artifacts = tmp_path / "state" / "artifacts"
    version = (artifacts / "latest").read_text().strip()
    manifest = json.loads((artifacts / version / "manifest.json").read_text())
    assert {"popularity", "sasrec", "ranker"} <= set(manifest["models"])
    entry = manifest["models"]["sasrec"]
    assert "validation world" in entry["trained_on"] and entry["fit_s"] > 0
    # SASRec was trained once, by the world the combiner was learnt in, and that
    # network is the one the version serves.
    assert len(trained) == 1
    shipped = SequentialModel.load(artifacts / version, "sasrec")
    world_network = trained[0].to_numpy()
    assert shipped.item_ids == world_network.item_ids
    assert len(shipped.members) == len(world_network.members)
    for ours, theirs in zip(shipped.members, world_network.members, strict=True):
        np.testing.assert_array_equal(ours["item_embeddings"], theirs["item_embeddings"])
    for name, sha in entry["sha256"].items():
        assert hashlib.sha256((artifacts / version / name).read_bytes()).hexdigest() == sha


def test_served_trains_its_network_with_the_standalone_budget() -> None:
    """``served`` must hold as well trained a network as ``sasrec`` alone."""
    assert SASRecScorer().max_train_s == infra.served.SEQUENTIAL_BUDGET_S
