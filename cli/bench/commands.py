"""``streamrec bench ingest`` and ``streamrec bench freshness``.

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
    """Benchmarks of the event pipeline (see docs/benchmarks.md)."""


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
@click.pass_context
def ingest_command(
    ctx: click.Context, events: int, users: int, partitions: int, json_path: Path | None,
    archive_off: bool, profile: bool, profile_top: int,
) -> None:
    """Events/s from Kafka through the consumers into Redis, beside a bare consume loop.

    Produces EVENTS realistic events (views, clicks, carts, purchases over the
    shipped catalog, USERS shoppers) to a fresh topic, then times a bare aiokafka
    consumer and the real consumer pipeline over them, and measures Redis memory
    per 100k users of state.
    """
    from cli.bench.ingest import run_ingest

    figures = run_ingest(
        _settings(ctx), events=events, users=users, partitions=partitions,
        archive_off=archive_off, profile=profile, profile_top=profile_top,
        profile_out=sys.stderr,
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
