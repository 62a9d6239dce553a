"""``streamrec bench api`` and ``bench index`` run end to end and write their figures.

Tiny runs only: they prove the harness measures real servers and indexes and
writes the documented JSON keys; the targets are for the full runs
(docs/benchmarks.md).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cli.bench.api import generated_items
from cli.bench.commands import bench_group
from core.settings import Settings
from core.types import Item


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def _index_rows(tmp_path: Path, *options: str) -> list[dict[str, Any]]:
    """Run ``streamrec bench index`` with ``options``; the rows of its JSON."""
    out = tmp_path / "index.json"
    result = CliRunner().invoke(bench_group, ["index", *options, "--json", str(out)])
    assert result.exit_code == 0, result.output
    rows: list[dict[str, Any]] = json.loads(out.read_text())
    return rows


def test_index_bench_writes_a_row_per_index_with_recall_and_qps(tmp_path: Path) -> None:
    rows = _index_rows(tmp_path, "--sizes", "2000", "--dim", "16", "--queries", "50",
                       "--m", "8", "--ef-construction", "40", "--ef-search", "16,64")
    assert [(r["index"], r.get("calibrated")) for r in rows] == [
        ("flat", None), ("ivf", True), ("hnsw", True), ("hnsw", False), ("hnsw", False)]
    assert [r["ef_search"] for r in rows[3:]] == [16, 64]
    ivf = rows[1]
    assert ivf["trained"] is True and ivf["nlist"] == 51 and 1 <= ivf["nprobe"] <= 51
    assert ivf["calibration_met"] is True and ivf["calibrated_recall"] >= 0.95
    calibrated = rows[2]
    assert calibrated["calibrated"] is True and calibrated["target_recall"] == 0.95
    assert calibrated["calibration_met"] is True and calibrated["calibrated_recall"] >= 0.95
    assert calibrated["m"] == 8 and 16 <= calibrated["ef_search"] <= 4096
    assert _positive(calibrated["calibrate_s"])
    for row in rows:
        assert row["n_items"] == 2000
        assert 0 < row["recall_at_10"] <= 1
        assert _positive(row["qps"]) and _positive(row["qps_batch"])
        assert _positive(row["build_s"])
    assert rows[0]["recall_at_10"] == 1.0


def test_index_bench_on_content_vectors_embeds_a_catalog_and_queries_profiles(
        tmp_path: Path) -> None:
    rows = _index_rows(tmp_path, "--sizes", "5000", "--vectors", "content", "--dim", "32",
                       "--queries", "50", "--m", "8", "--ef-construction", "40")
    assert [r["index"] for r in rows] == ["flat", "ivf", "hnsw"]
    assert {r["vectors"] for r in rows} == {"content"}
    # Every shipped product plus generated ones: a few may embed to nothing and are left out.
    assert {r["n_items"] for r in rows} == {rows[0]["n_items"]} and rows[0]["n_items"] > 4900
    ivf = rows[1]
    assert ivf["trained"] is True and ivf["calibration_met"] is True
    assert ivf["recall_at_10"] > 0.8  # on queries calibration never saw


def test_index_bench_refuses_content_catalogs_past_what_it_embeds() -> None:
    result = CliRunner().invoke(bench_group, ["index", "--sizes", "300000",
                                              "--vectors", "content"])
    assert result.exit_code != 0 and "at most 200000 items" in result.output


def test_index_bench_without_a_target_measures_only_the_asked_ef_search(tmp_path: Path) -> None:
    rows = _index_rows(tmp_path, "--sizes", "500", "--dim", "8", "--queries", "20", "--m", "8",
                       "--target-recall", "0", "--ef-search", "32")
    assert [(r["index"], r.get("ef_search")) for r in rows] == [("flat", None), ("hnsw", 32)]


def test_index_bench_rejects_a_malformed_size_list() -> None:
    result = CliRunner().invoke(bench_group, ["index", "--sizes", "10,abc"])
    assert result.exit_code != 0 and "comma-separated integers" in result.output


def test_generated_items_are_new_ids_in_known_categories() -> None:
    base = [Item("a", "Red Heart Mug", "Kitchen", 2.0), Item("b", "Blue Glass Vase", "Home", 5.0)]
    items = generated_items(base, 50)
    assert len({i.item_id for i in items}) == 50
    assert {i.category for i in items} <= {"Kitchen", "Home"}
    assert all(i.price > 0 and len(i.name.split()) >= 5 for i in items)


@pytest.mark.integration
@pytest.mark.slow
def test_api_bench_serves_real_requests_and_writes_every_key(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path,
) -> None:
    settings = Settings(kafka_bootstrap=kafka_bootstrap, redis_url=redis_url, database_url="",
                        state_dir=tmp_path / "state")
    out = tmp_path / "api.json"
    result = CliRunner().invoke(bench_group, [
        "api", "--catalog-size", "3700", "--users", "30", "--events", "300", "--rate", "50",
        "--duration", "1", "--peak-duration", "1", "--concurrency", "2", "--json", str(out),
    ], obj=settings)
    assert result.exit_code == 0, result.output
    figures = json.loads(out.read_text())
    for key in ("p50_ms", "p99_ms", "rate", "peak_rps", "hello_peak_rps",
                "client_p50_ms", "client_p99_ms",
                "server_cpu_us_per_request", "hello_server_cpu_us_per_request"):
        assert _positive(figures[key]), key
    assert figures["rate"] == 50
    assert figures["steady_errors"] == 0
    assert figures["server_requests"] == 50  # every steady request reached the histogram
    assert figures["catalog_items"] >= 3700
    # The API served trained batch models and a ranker, not only its online sources.
    assert {"als", "ease", "popularity"} <= set(figures["models"]["models"])
    assert figures["models"]["ranker"]["rounds"] > 0

