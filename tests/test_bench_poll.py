"""``streamrec bench poll``: a tiny end-to-end run, and how its peak is chosen.

The run proves the harness drives real servers (API under gunicorn, broker, consumer,
Redis) and writes the documented keys; the goals are for the full run
(docs/benchmarks.md).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from cli.bench.commands import bench_group
from cli.bench.poll import _figures
from core.settings import Settings

KEYS = ("shoppers", "poll_interval_s", "polls_per_s", "peak_polls_per_s", "hello_peak_rps",
        "peak_ratio", "not_modified_share", "server_p50_ms", "server_p99_ms",
        "event_to_visible_p50_ms", "event_to_visible_p99_ms", "errors")


def _phase(rate: float, p99: float, errors: int = 0, target: float | None = None
           ) -> dict[str, Any]:
    return {"shoppers": 1, "target_polls_per_s": target or rate, "polls": 100,
            "polls_per_s": rate, "not_modified": 90, "events": 3, "errors": errors,
            "errors_by_kind": {}, "visible_s": [0.2, 0.4], "elapsed_s": 1.0,
            "server_p50_ms": 1.0, "server_p99_ms": p99}


def test_the_peak_is_the_most_polls_per_s_held_with_p99_within_10_ms() -> None:
    shop = {"warm_errors": 0, "phases": [
        _phase(100, 3.0), _phase(150, 9.0), _phase(200, 4.0, target=250),  # not held
        _phase(300, 12.0), _phase(180, 2.0, errors=1)]}
    figures = _figures(shop, 1000.0, shoppers=150, poll_interval_s=1.5,
                       popularity_refresh_s=30.0, workers=2, threads=4, setup_s=1.0)
    assert figures["peak_polls_per_s"] == 150
    assert figures["peak_ratio"] == pytest.approx(0.15)
    assert figures["polls_per_s"] == 100  # the main phase
    assert figures["not_modified_share"] == pytest.approx(0.9)
    assert figures["event_to_visible_p99_ms"] == pytest.approx(400)
    assert figures["errors"] == 1


@pytest.mark.integration
@pytest.mark.slow
def test_poll_bench_polls_clicks_and_writes_every_key(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path,
) -> None:
    settings = Settings(kafka_bootstrap=kafka_bootstrap, redis_url=redis_url, database_url="",
                        state_dir=tmp_path / "state")
    out = tmp_path / "poll.json"
    result = CliRunner().invoke(bench_group, [
        "poll", "--shoppers", "20", "--poll-interval", "0.5", "--event-interval", "1",
        "--duration", "3", "--peak-steps", "2", "--step-duration", "1",
        "--connections", "4", "--hello-duration", "1", "--hello-concurrency", "2",
        "--json", str(out),
    ], obj=settings)
    assert result.exit_code == 0, result.output
    figures = json.loads(out.read_text())
    assert set(KEYS) <= set(figures)
    assert figures["shoppers"] == 20 and figures["errors"] == 0
    assert figures["polls_per_s"] > 20  # 40 a second due
    assert 0 < figures["not_modified_share"] < 1  # 304s, and fresh lists after clicks
    assert figures["events_visible"] >= 1
    for key in ("hello_peak_rps", "server_p50_ms", "server_p99_ms",
                "event_to_visible_p50_ms", "event_to_visible_p99_ms",
                "server_cpu_us_per_request", "loadgen_cpu_us_per_request"):
        assert math.isfinite(figures[key]) and figures[key] > 0, key
    # The step to 40 shoppers runs when 20 held p99 <= 10 ms (no step below 20 is asked for).
    assert [p["shoppers"] for p in figures["phases"]] in ([20], [20, 40])
