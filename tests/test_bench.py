"""The benchmarks run end to end on real services and report every figure.

Small runs only: these prove the harness measures the real pipeline and writes its
JSON; the speed targets are for ``streamrec bench`` itself (docs/benchmarks.md).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.bench.commands import bench_group
from cli.bench.common import make_events, make_history_events, percentile_ms
from cli.bench.freshness import histogram_quantile
from core.settings import Settings


@pytest.fixture
def bench_settings(kafka_bootstrap: str, redis_url: str, index_state_dir: Path) -> Settings:
    # The bench makes its own topic, group, Redis prefix and temporary SQLite archive.
    return Settings(kafka_bootstrap=kafka_bootstrap, redis_url=redis_url, database_url="",
                    state_dir=index_state_dir)


@pytest.fixture(scope="session")
def index_state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bench-state")


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def test_history_events_give_every_user_the_same_number_of_events() -> None:
    events = make_history_events(50, 3, ["a", "b", "c"], seed=1, start_ts=1_000.0, span_s=10)
    assert len(events) == 150
    per_user: dict[str, int] = {}
    for event in events:
        per_user[event.user_id] = per_user.get(event.user_id, 0) + 1
    assert per_user == {f"u{n}": 3 for n in range(50)}
    assert all(1_000.0 <= e.ts <= 1_010.0 for e in events)


def test_the_pipeline_clock_times_only_the_batches_after_the_warm_up() -> None:
    from cli.bench.ingest import PipelineRun
    from consumers.handlers import BatchResult
    from core.ports import StateUpdate

    clock = PipelineRun(target=10, warmup=5)
    observe = clock.wrap(None)
    for size in (3, 3, 2, 2):  # the second batch reaches the warm-up: still not timed
        observe([], BatchResult(size, 0, 0, StateUpdate()), 0.0)
    assert clock.warmup_clock is not None and clock.warmup_clock[2:] == (6, 2)
    assert (clock.applied, clock.batches, clock.total) == (4, 2, 10)
    assert clock.done.is_set()
    assert clock.seconds >= 0


def test_generated_events_cover_every_user_and_mix_the_kinds() -> None:
    events = make_events(500, 200, ["a", "b", "c"], seed=1)
    assert len({e.user_id for e in events}) == 200
    assert {e.event_type for e in events} == {"view", "click", "add_to_cart", "purchase"}
    assert [e.ts for e in events] == sorted(e.ts for e in events)


def test_percentile_is_the_nearest_rank_in_milliseconds() -> None:
    samples = [i / 1000 for i in range(1, 101)]
    assert percentile_ms(samples, 50) == pytest.approx(50.0)
    assert percentile_ms(samples, 99) == pytest.approx(99.0)


def test_histogram_quantile_interpolates_within_the_bucket_like_prometheus() -> None:
    buckets = {0.01: 10.0, 0.05: 90.0, 0.1: 100.0, math.inf: 100.0}
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.01 + 0.04 * 40 / 80)
    assert histogram_quantile(1.0, {0.1: 1.0, math.inf: 2.0}) == pytest.approx(0.1)
    assert math.isnan(histogram_quantile(0.5, {math.inf: 0.0}))


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize(("options", "processes", "busy", "warmup"), [
    ([], 2, "consumers", 5),  # one process per partition, 5 warm-up events a user: defaults
    (["--processes", "1", "--warmup-per-user", "2"], 1, "bench_process", 2),  # in-process
])
def test_ingest_bench_applies_every_event_and_writes_its_figures(
    bench_settings: Settings, tmp_path: Path, options: list[str], processes: int, busy: str,
    warmup: int,
) -> None:
    out = tmp_path / "ingest.json"
    result = CliRunner().invoke(
        bench_group,
        ["ingest", "--events", "2000", "--users", "500", "--partitions", "2",
         "--no-archive-off", "--json", str(out), *options],
        obj=bench_settings, catch_exceptions=False,
    )
    # The bench itself fails unless the state counts exactly the events produced, so
    # each event was applied once across the group.
    assert result.exit_code == 0, result.output
    figures = json.loads(out.read_text())
    for key in ("events_per_s", "baseline_events_per_s", "ratio", "produce_events_per_s",
                "memory_per_100k_users_bytes", "memory_per_100k_users_mb"):
        assert _positive(figures[key]), (key, figures[key])
    assert figures["events"] == 2000 and figures["users"] == 500
    assert "events_per_s" in result.output
    assert figures["consumer_processes"] == processes
    assert _positive(figures["pipeline_cpu_cores"][busy])
    assert figures["warmup_per_user"] == warmup
    # A run this small is read in batches of a tenth of it, so it is timed over several.
    assert figures["consumer_max_records"] == 200
    assert figures["warmup_events"] == warmup * 500
    if processes > 1:  # the archive ran in its own process, as `consume --processes` runs it
        assert "archive" in figures["pipeline_cpu_cores"]
        assert _positive(figures["archive_events_per_s"])
        assert figures["archive_caught_up_after_s"] >= 0


@pytest.mark.integration
@pytest.mark.slow
def test_freshness_bench_sees_every_probe_and_exports_a_histogram(
    bench_settings: Settings, tmp_path: Path
) -> None:
    out, prom = tmp_path / "freshness.json", tmp_path / "freshness.prom"
    result = CliRunner().invoke(
        bench_group,
        ["freshness", "--rate", "500", "--duration", "4", "--users", "500",
         "--partitions", "2", "--probe-every", "10", "--json", str(out), "--prom", str(prom)],
        obj=bench_settings, catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    figures = json.loads(out.read_text())
    for key in ("rate", "p50_ms", "p99_ms", "max_ms", "consumer_p50_ms", "poll_period_ms"):
        assert _positive(figures[key]), (key, figures[key])
    assert figures["probes_seen"] == figures["probes"] == 200
    assert figures["p50_ms"] <= figures["p99_ms"] <= figures["max_ms"]
    assert 'streamrec_bench_freshness_seconds_count 200.0' in prom.read_text()
