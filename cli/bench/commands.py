"""``streamrec bench``: ingest, freshness, soak, api, poll and index.

Both run on the services the environment names, or on embedded ones (Tansu,
redis-server, SQLite) where it names none. Figures go to stdout and, with
``--json PATH``, to a JSON file; ``docs/benchmarks.md`` records the reference run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from cli.bench.common import print_figures, write_json
from core.settings import Settings

__all__ = ["bench_group"]

_json_option = click.option(
    "--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="Also write the figures to this JSON file.")
_partitions_option = click.option(
    "--partitions", type=click.IntRange(1, 1024), default=4, show_default=True,
    help="Partitions of the benchmark's topic.")
_users_option = click.option(
    "--users", type=click.IntRange(min=1), default=100_000, show_default=True,
    help="Distinct shoppers in the generated traffic.")


def _settings(ctx: click.Context) -> Settings:
    # A caller (tests, the demo) may hand its settings in as the context object.
    obj = ctx.find_object(Settings)
    return obj if obj is not None else Settings()


@click.group("bench")
def bench_group() -> None:
    """Benchmarks of the event pipeline, the API and the index (see docs/benchmarks.md)."""


@bench_group.command("ingest")
@click.option("--events", type=click.IntRange(min=1), default=200_000, show_default=True,
              help="Events to produce and then ingest.")
@_users_option
@_partitions_option
@_json_option
@click.option("--archive-off/--no-archive-off", default=True, show_default=True,
              help="Also time the pipeline with the SQL archive off.")
@click.option("--profile", is_flag=True,
              help="Run the pipeline once more under cProfile; print the top to stderr.")
@click.option("--profile-top", type=click.IntRange(min=1), default=15, show_default=True)
@click.option("--processes", type=click.IntRange(min=1), default=None,
              help="Consumer processes in the group, as `streamrec consume --processes` "
                   "[default: one per partition, at most 4].")
@click.option("--warmup-per-user", type=click.IntRange(min=0), default=None,
              help="Events per user applied before the timed ones, so they meet full "
                   "histories (steady state) [default: 5, or covisit_window if larger; "
                   "0: time a fresh state].")
@click.pass_context
def ingest_command(
    ctx: click.Context, events: int, users: int, partitions: int, json_path: Path | None,
    archive_off: bool, profile: bool, profile_top: int, processes: int | None,
    warmup_per_user: int | None,
) -> None:
    """Events/s from Kafka through the consumers into Redis, beside a bare consume loop.

    Produces EVENTS realistic events (views, clicks, carts, purchases over the
    shipped catalog, USERS shoppers) to a fresh topic, after a warm-up that gives
    every shopper a full history, then times a bare aiokafka consumer and the real
    consumer pipeline over them (steady state and the warm-up's own fresh rate), and
    measures Redis memory per 100k users of state.
    """
    from cli.bench.ingest import run_ingest

    figures = run_ingest(
        _settings(ctx), events=events, users=users, partitions=partitions,
        archive_off=archive_off, profile=profile, profile_top=profile_top,
        profile_out=sys.stderr,
        # More processes than cores: while one waits on its Redis script, others parse
        # and batch (steady state on 2 cores: 2 -> 13.3k, 3 -> 17.7k, 4 -> 20.3-21.7k
        # events/s with the archive off, docs/benchmarks.md).
        processes=min(4, partitions) if processes is None else processes,
        warmup_per_user=warmup_per_user,
    )
    print_figures("ingest", figures)
    write_json(json_path, figures)


@bench_group.command("freshness")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=1000.0,
              show_default=True, help="Events produced per second.")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=30.0,
              show_default=True, help="Seconds of steady producing.")
@_users_option
@_partitions_option
@_json_option
@click.option("--probe-every", type=click.IntRange(min=1), default=20, show_default=True,
              help="Every Nth event is a probe (a new user's view) whose visibility is timed.")
@click.option("--poll-ms", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Pause between two reads of the outstanding probes.")
@click.option("--prom", "prom_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Write the probe latencies as a Prometheus histogram here.")
@click.pass_context
def freshness_command(
    ctx: click.Context, rate: float, duration: float, users: int, partitions: int,
    json_path: Path | None, probe_every: int, poll_ms: float, prom_path: Path | None,
) -> None:
    """Time from event produced to its effect readable by the API, at a steady rate.

    Runs the consumers in their own process, produces RATE events/s for DURATION
    seconds and polls each probe user's recent items (the API's state read) until
    the probe shows up. Also reports the consumers' own freshness histogram.
    """
    from cli.bench.freshness import run_freshness

    figures = run_freshness(
        _settings(ctx), rate=rate, duration=duration, users=users, partitions=partitions,
        probe_every=probe_every, poll_s=poll_ms / 1000, prom_path=prom_path,
    )
    print_figures("freshness", figures)
    write_json(json_path, figures)


@bench_group.command("soak")
@click.option("--mode", type=click.Choice(["api", "consumer", "both"]), default="both",
              show_default=True, help="The API load run, the consumer soak, or both.")
@click.option("--api-rate", type=click.FloatRange(min=0, min_open=True), default=500.0,
              show_default=True, help="API requests per second.")
@click.option("--api-duration", type=click.FloatRange(min=0, min_open=True), default=60.0,
              show_default=True, help="Seconds of API load.")
@click.option("--event-rate", type=click.FloatRange(min=0), default=1000.0, show_default=True,
              help="Events per second streamed into Kafka during the API load.")
@click.option("--soak-rate", type=click.FloatRange(min=0, min_open=True), default=5000.0,
              show_default=True, help="Events per second of the consumer soak.")
@click.option("--soak-duration", type=click.FloatRange(min=0, min_open=True), default=300.0,
              show_default=True, help="Seconds of the consumer soak.")
@click.option("--sample-s", type=click.FloatRange(min=0, min_open=True), default=5.0,
              show_default=True, help="Seconds between two RSS samples of the consumer.")
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True,
              help="gunicorn workers of the API.")
@_users_option
@_partitions_option
@_json_option
@click.pass_context
def soak_command(
    ctx: click.Context, mode: str, api_rate: float, api_duration: float, event_rate: float,
    soak_rate: float, soak_duration: float, sample_s: float, workers: int, users: int,
    partitions: int, json_path: Path | None,
) -> None:
    """The API at a steady request rate while events stream, and a consumer soak.

    See docs/reliability.md: the API run counts every non-2xx answer as an error;
    the soak samples the consumer's RSS every SAMPLE_S seconds and reports its slope.
    """
    from cli.bench.soak import run_api_load, run_consumer_soak

    settings = _settings(ctx)
    figures: dict[str, object] = {}
    if mode in ("api", "both"):
        api = run_api_load(settings, rate=api_rate, duration=api_duration,
                           event_rate=event_rate, users=min(users, 20_000),
                           partitions=partitions, workers=workers)
        print_figures("api load", {k: v for k, v in api.items() if k != "machine"})
        figures["api_load"] = api
    if mode in ("consumer", "both"):
        soak = run_consumer_soak(settings, rate=soak_rate, duration=soak_duration,
                                 sample_s=sample_s, users=users, partitions=partitions)
        print_figures("consumer soak", {k: v for k, v in soak.items()
                                        if k not in ("samples", "machine")})
        figures["consumer_soak"] = soak
    write_json(json_path, figures)


def _int_list(_ctx: click.Context, _param: click.Parameter, value: str) -> list[int]:
    try:
        numbers = [int(v) for v in value.split(",") if v.strip()]
    except ValueError as exc:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from exc
    if not numbers or min(numbers) < 1:
        raise click.BadParameter("expected at least one integer, all >= 1")
    return numbers


def _setting_default(name: str) -> object:
    # The shipped default, not the environment's: this runs when the CLI is imported.
    return Settings.model_fields[name].default


def _optional_int_list(ctx: click.Context, param: click.Parameter, value: str | None
                       ) -> list[int]:
    return _int_list(ctx, param, value) if value else []


@bench_group.command("api")
@click.option("--catalog-size", type=click.IntRange(min=1), default=20_000, show_default=True,
              help="Items in the catalog (the shipped one plus generated products).")
@click.option("--users", type=click.IntRange(min=1), default=3_000, show_default=True,
              help="Shoppers whose state is seeded and who are asked for.")
@click.option("--events", type=click.IntRange(min=1), default=60_000, show_default=True,
              help="Events applied to seed their state.")
@click.option("-k", "--k", "k", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=200.0,
              show_default=True, help="Requests/s of the steady phase.")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=30.0,
              show_default=True, help="Seconds of the steady phase.")
@click.option("--peak-duration", type=click.FloatRange(min=0, min_open=True), default=10.0,
              show_default=True, help="Seconds of each closed-loop peak level.")
@click.option("--concurrency", default="8,16,32", show_default=True, callback=_int_list,
              help="Connections of each peak level (comma-separated).")
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--models/--no-models", "with_models", default=True, show_default=True,
              help="Serve batch models (ALS, EASE, popularity counts, SASRec where PyTorch "
                   "imports, a ranker) trained on the seeded events, as a trained API "
                   "does; --no-models: the online sources only.")
@_json_option
@click.pass_context
def api_command(
    ctx: click.Context, catalog_size: int, users: int, events: int, k: int, rate: float,
    duration: float, peak_duration: float, concurrency: list[int], workers: int, threads: int,
    with_models: bool, json_path: Path | None,
) -> None:
    """Recommendation latency at a steady rate and peak requests/s under gunicorn.

    Serves the API (``streamrec serve``) over a CATALOG_SIZE catalog with seeded
    shopper state, loads it from a separate process, and compares its peak with
    a bare Flask JSON "hello" app under the same gunicorn settings.
    """
    from cli.bench.api import run_api_bench

    figures = run_api_bench(
        _settings(ctx), catalog_size=catalog_size, users=users, events=events, k=k, rate=rate,
        duration=duration, peak_duration=peak_duration, concurrency=concurrency,
        workers=workers, threads=threads, log=sys.stderr, with_models=with_models,
    )
    print_figures("api", {n: v for n, v in figures.items() if not isinstance(v, list)})
    write_json(json_path, figures)


def _float_list(_ctx: click.Context, _param: click.Parameter, value: str) -> list[float]:
    try:
        numbers = [float(v) for v in value.split(",") if v.strip()]
    except ValueError as exc:
        raise click.BadParameter(f"expected comma-separated numbers, got {value!r}") from exc
    if any(n <= 0 for n in numbers):
        raise click.BadParameter("expected numbers > 0")
    return numbers


@bench_group.command("poll")
@click.option("--shoppers", type=click.IntRange(min=1), default=3_000, show_default=True,
              help="Simulated shoppers polling their recommendations.")
@click.option("--poll-interval", type=click.FloatRange(min=0, min_open=True), default=1.5,
              show_default=True, help="Seconds between two polls of a shopper.")
@click.option("--event-interval", type=click.FloatRange(min=0, min_open=True), default=15.0,
              show_default=True, help="Mean seconds between two clicks of a shopper.")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=30.0,
              show_default=True, help="Seconds of the main phase.")
@click.option("--peak-steps", default="0.25,0.5,0.75,1.5,2,2.5,3", show_default=True,
              callback=_float_list,
              help="Peak search: shoppers times each of these (comma-separated; empty: none), "
                   "up from the main phase while it holds p99 <= 10 ms, else down.")
@click.option("--step-duration", type=click.FloatRange(min=0, min_open=True), default=10.0,
              show_default=True, help="Seconds of each peak step.")
@click.option("--popularity-refresh", type=click.FloatRange(min=0), default=15.0,
              show_default=True,
              help="STREAMREC_POPULARITY_REFRESH_S of the API: the popularity epoch, how long "
                   "a list may ignore other shoppers' activity.")
@click.option("--history-per-user", type=click.IntRange(min=1), default=5, show_default=True,
              help="Events per shopper applied before the run (their lists are personal).")
@click.option("--connections", type=click.IntRange(min=1), default=64, show_default=True,
              help="Keep-alive connections the shoppers' requests share.")
@click.option("--hello-duration", type=click.FloatRange(min=0, min_open=True), default=10.0,
              show_default=True, help="Seconds of each closed-loop level of the hello app.")
@click.option("--hello-concurrency", default="8,16,32", show_default=True,
              callback=_int_list, help="Connections of each hello level (comma-separated).")
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=4, show_default=True)
@_json_option
@click.pass_context
def poll_command(
    ctx: click.Context, shoppers: int, poll_interval: float, event_interval: float,
    duration: float, peak_steps: list[float], step_duration: float,
    popularity_refresh: float, history_per_user: int, connections: int,
    hello_duration: float, hello_concurrency: list[int], workers: int, threads: int,
    json_path: Path | None,
) -> None:
    """Pages polling recommendations with If-None-Match while shoppers click, on the real
    path (API -> Kafka -> consumer -> Redis), beside the bare Flask hello app.

    See ``cli/bench/poll.py`` for the phases and docs/benchmarks.md for the reference run.
    """
    from cli.bench.poll import run_poll_bench

    figures = run_poll_bench(
        _settings(ctx), shoppers=shoppers, poll_interval_s=poll_interval,
        event_interval_s=event_interval, duration=duration, peak_steps=peak_steps,
        step_duration=step_duration, popularity_refresh_s=popularity_refresh,
        history_per_user=history_per_user, connections=connections,
        hello_duration=hello_duration, hello_concurrency=hello_concurrency,
        workers=workers, threads=threads, log=sys.stderr,
    )
    print_figures("poll", {n: v for n, v in figures.items() if not isinstance(v, list)})
    write_json(json_path, figures)


@bench_group.command("index")
@click.option("--sizes", default="100000,1000000", show_default=True, callback=_int_list,
              help="Catalog sizes (comma-separated).")
@click.option("--dim", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--queries", type=click.IntRange(min=1), default=1000, show_default=True)
@click.option("--m", "m", type=click.IntRange(min=2), default=_setting_default("index_hnsw_m"),
              show_default=True, help="HNSW links per node.")
@click.option("--ef-construction", type=click.IntRange(min=1),
              default=_setting_default("index_ef_construction"), show_default=True)
@click.option("--target-recall", type=click.FloatRange(0, 1),
              default=_setting_default("index_target_recall"), show_default=True,
              help="Recall@10 the IVF and HNSW indexes calibrate nprobe and efSearch for "
                   "(0: no calibrated rows).")
@click.option("--ef-search", default=None, callback=_optional_int_list,
              help="Also measure HNSW at these efSearch values (comma-separated).")
@click.option("--vectors", type=click.Choice(["random", "content"]), default="random",
              show_default=True,
              help="random: unit vectors with no structure; content: the content embeddings "
                   "of the shipped catalog plus generated variants of its products, queried "
                   "by shopper-like profiles (at most 200,000 items).")
@_json_option
@click.pass_context
def index_command(
    ctx: click.Context, sizes: list[int], dim: int, queries: int, m: int,
    ef_construction: int, target_recall: float, ef_search: list[int], vectors: str,
    json_path: Path | None,
) -> None:
    """Recall@10 against exact search and queries/s of the flat, IVF and HNSW indexes.

    Writes a JSON list of rows (``index``, ``n_items``, ``recall_at_10``, ``qps``,
    ``qps_batch``, ``build_s``; IVF rows add ``nlist``, ``nprobe``, ``trained``, HNSW
    rows ``m``, ``ef_search``, ``calibrated``, and the calibrated rows ``target_recall``,
    ``calibrated_recall``, ``calibrate_s``; every row its ``vectors``). Random vectors
    have no cluster structure, the hard case for IVF; ``--vectors content`` measures
    item embeddings, the case the index defaults are chosen for.
    """
    import json

    from cli.bench.index import CONTENT_MAX, run_index_bench

    if vectors == "content" and max(sizes) > CONTENT_MAX:
        raise click.BadParameter(f"content vectors are embedded: at most {CONTENT_MAX} items",
                                 param_hint="--sizes")
    rows = run_index_bench(sizes, dim=dim, queries=queries, m=m,
                           ef_construction=ef_construction, target_recall=target_recall,
                           ef_search=ef_search, log=sys.stdout,
                           vectors="content" if vectors == "content" else "random",
                           data_dir=_settings(ctx).data_dir)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(rows, indent=2, sort_keys=True) + "\n")
