"""``evaluate`` and ``train`` commands end to end on generated data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cli.offline_commands import evaluate_command, train_command
from offline.train import load_model, read_latest, read_manifest


@pytest.fixture
def export(tmp_path: Path) -> tuple[Path, Path]:
    """A small shop export: three taste groups, item texts that name the group."""
    rng = np.random.default_rng(0)
    lines = ["user_id,item_id,timestamp"]
    for u in range(60):
        group = u % 3
        pool = [j for j in range(30) if j % 3 == group]
        for t, j in enumerate(rng.choice(pool, 6, replace=False)):
            lines.append(f"u{u},i{j},{t * 100 + u}")
    log = tmp_path / "log.csv"
    log.write_text("\n".join(lines) + "\n")
    items = tmp_path / "items.csv"
    names = ["garden hose", "tea cup", "candle light"]
    items.write_text("item_id,text\n" + "".join(f"i{j},{names[j % 3]} {j}\n" for j in range(30)))
    return log, items


def test_evaluate_prints_table_and_writes_json_and_plots(export: tuple[Path, Path],
                                                        tmp_path: Path) -> None:
    log, items = export
    out = tmp_path / "res" / "metrics.json"
    result = CliRunner().invoke(evaluate_command, [
        "--dataset", "csv", "--data", str(log), "--items", str(items),
        "--models", "popularity,ease,content", "--protocol", "leave-one-out",
        "--k", "5", "--json", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "| ease |" in result.output
    metrics = json.loads(out.read_text())
    assert set(metrics) == {"popularity", "ease", "content"}
    for key in ("ndcg@5", "recall@5", "precision@5", "f1@5", "map@5", "hit_rate@5",
                "coverage", "novelty", "fit_s"):
        assert 0 <= metrics["ease"][key] < float("inf")
    # the groups are learnable: collaborative and content beat popularity
    assert metrics["ease"]["ndcg@5"] > metrics["popularity"]["ndcg@5"]
    assert metrics["content"]["ndcg@5"] > metrics["popularity"]["ndcg@5"]
    assert (out.parent / "log_leave-one-out_ndcg_at_k.png").stat().st_size > 1000


def test_evaluate_reports_rmse_for_rating_models(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    rows = ["user_id,item_id,timestamp,rating"]
    for u in range(30):
        for j in rng.choice(20, 8, replace=False):
            rows.append(f"u{u},i{j},{u * 10 + j},{1 + (u + j) % 5}")
    path = tmp_path / "ratings.csv"
    path.write_text("\n".join(rows) + "\n")
    out = tmp_path / "m.json"
    result = CliRunner().invoke(evaluate_command, [
        "--dataset", "csv", "--data", str(path), "--models", "svd,popularity",
        "--protocol", "kfold", "--folds", "2", "--json", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())
    assert metrics["svd"]["rmse"] > 0 and metrics["svd"]["mae"] > 0
    assert "rmse" not in metrics["popularity"]


def test_evaluate_missing_file_gives_a_clear_message(tmp_path: Path) -> None:
    result = CliRunner().invoke(evaluate_command, [
        "--dataset", "ml-100k", "--data", str(tmp_path / "nowhere"), "--no-progress"])
    assert result.exit_code != 0
    assert "MovieLens ratings not found at" in result.output


def test_evaluate_rejects_unknown_model(export: tuple[Path, Path]) -> None:
    log, _ = export
    result = CliRunner().invoke(evaluate_command, [
        "--dataset", "csv", "--data", str(log), "--models", "magic", "--no-progress"])
    assert result.exit_code != 0
    assert "unknown models" in result.output


def test_train_writes_a_versioned_artifact_and_moves_latest(export: tuple[Path, Path],
                                                            tmp_path: Path) -> None:
    log, items = export
    state = tmp_path / "state"
    args = ["--dataset", "csv", "--data", str(log), "--items", str(items),
            "--models", "popularity,ease", "--state-dir", str(state)]
    first = CliRunner().invoke(train_command, [*args, "--evaluate"])
    assert first.exit_code == 0, first.output
    artifacts = state / "artifacts"
    v1 = read_latest(artifacts)
    assert v1 is not None
    manifest = read_manifest(artifacts, v1)
    assert len(manifest["data_sha256"]) == 64
    assert set(manifest["models"]) == {"popularity", "ease", "ranker"}
    assert "ndcg@10" in manifest["metrics"]["ease"]
    # EASE ships its neighbours for the live `ease` source as data (no pickle).
    assert manifest["models"]["ease"]["serving"]["neighbours"] == "ease_neighbours"
    assert (artifacts / v1 / "ease_neighbours.npz").exists()
    model = load_model(artifacts, v1, "ease")
    assert len(model.score("u1")) > 0
    second = CliRunner().invoke(train_command, [*args, "--no-ranker"])
    assert second.exit_code == 0, second.output
    v2 = read_latest(artifacts)
    assert v2 is not None and v2 != v1
    assert read_manifest(artifacts, v2)["data_sha256"] == manifest["data_sha256"]
    assert not list(artifacts.glob(".*partial"))
