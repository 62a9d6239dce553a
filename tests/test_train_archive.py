"""`streamrec train --dataset archive` retrains on the events the consumers archived."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.offline_commands import train_command
from core.events import ItemClicked, ItemViewed, Purchased
from infra.sql import SqlStore
from offline.catalog import load_catalog


def test_training_on_the_archive_publishes_a_new_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'archive.db'}"
    items = [i.item_id for i in load_catalog(Path(__file__).resolve().parents[1] / "data")][:200]
    rng = random.Random(3)
    kinds = (ItemViewed, ItemClicked, Purchased)
    events = [rng.choice(kinds)(user_id=f"u{rng.randrange(60)}", item_id=rng.choice(items),
                                timestamp=1_300_000_000 + n)  # type: ignore[arg-type]
              for n in range(1500)]
    store = SqlStore(url)
    store.create_schema()
    store.archive_events(events)
    store.close()
    monkeypatch.setenv("STREAMREC_DATABASE_URL", url)
    monkeypatch.setenv("STREAMREC_STATE_DIR", str(tmp_path))

    result = CliRunner().invoke(train_command, ["--dataset", "archive",
                                                "--models", "popularity,als"])
    assert result.exit_code == 0, result.output
    version = (tmp_path / "artifacts" / "latest").read_text().strip()
    manifest = json.loads((tmp_path / "artifacts" / version / "manifest.json").read_text())
    assert manifest["dataset"] == "archive"
    assert manifest["events"] == 1500
    # ... and how the live pipeline combines its sources, learnt on the same archive.
    assert set(manifest["models"]) == {"popularity", "als", "ranker"}
    combiner = manifest["models"]["ranker"]["info"]
    assert combiner["validation"]["rule"] and combiner["chosen"]


def test_an_empty_archive_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("STREAMREC_DATABASE_URL", f"sqlite:///{tmp_path / 'empty.db'}")
    monkeypatch.setenv("STREAMREC_STATE_DIR", str(tmp_path))
    result = CliRunner().invoke(train_command, ["--dataset", "archive", "--models", "als"])
    assert result.exit_code != 0
    assert "the events archive is empty" in result.output
