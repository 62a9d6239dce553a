"""``streamrec``: run the demo, the API, the consumers, offline training and evaluation."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from typing import Any

import click

from cli.bench.commands import bench_group
from cli.offline_commands import archive_group, evaluate_command, train_command
from cli.ops_commands import lag_command
from core.errors import StreamrecError
from core.settings import Settings

__all__ = ["cli", "main"]


def _settings(**overrides: Any) -> Settings:
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
def cli(verbose: bool) -> None:
    """streamrec: a real-time recommender for online shops.

    Services come from STREAMREC_KAFKA_BOOTSTRAP, STREAMREC_REDIS_URL (or REDIS_URL)
    and STREAMREC_DATABASE_URL (or DATABASE_URL); `demo` starts embedded ones
    (Tansu broker, Redis, SQLite) for whatever is not set.
    """
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # FAISS logs every CPU-specific build it tries before the one that loads.
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)


@cli.command()
@click.option("--port", type=int, default=8000, show_default=True, help="API port.")
@click.option("--rate", type=float, default=200.0, show_default=True,
              help="Replayed purchase events per second.")
@click.option("--limit", type=int, default=None, help="Replay at most this many events.")
@click.option("--workers", type=int, default=1, show_default=True, help="API worker processes.")
@click.option("--status-every", type=float, default=5.0, show_default=True,
              help="Seconds between status lines.")
def demo(port: int, rate: float, limit: int | None, workers: int, status_every: float) -> None:
    """Start everything and replay real purchase history as live events.

    Starts the embedded broker and Redis (unless configured), loads the shipped
    catalog, builds the item index, starts the consumers and the API on
    127.0.0.1:PORT, then replays the Online Retail purchases. Ctrl-C (or SIGTERM,
    SIGHUP) stops everything it started.
    """
    from cli.demo import run_demo

    run_demo(_settings(api_port=port), rate=rate, limit=limit, workers=workers,
             status_every=status_every)


@cli.command()
@click.option("--host", default=None, help="Bind address [default: STREAMREC_API_HOST].")
@click.option("--port", type=int, default=None, help="Port [default: STREAMREC_API_PORT].")
@click.option("--workers", type=int, default=2, show_default=True)
@click.option("--threads", type=int, default=4, show_default=True)
def serve(host: str | None, port: int | None, workers: int, threads: int) -> None:
    """Serve the JSON API under gunicorn."""
    from cli.serve import serve as run

    run(_settings(api_host=host, api_port=port), workers=workers, threads=threads)


@cli.command()
@click.option("--processes", type=click.IntRange(min=1), default=1, show_default=True,
              help="State consumer processes in the group (each topic's partitions are "
                   "shared out); above 1, the SQL archive runs in one more process of its "
                   "own, at STREAMREC_ARCHIVE_PRIORITY (default: idle).")
def consume(processes: int) -> None:
    """Run the consumers: interactions -> online models -> Redis state (and SQL archive)."""
    from consumers.app import create_consumer_app, run_consumer_processes

    if processes > 1:
        sys.exit(run_consumer_processes(Settings(), processes))
    app = create_consumer_app(Settings())
    asyncio.run(app.run())


@cli.command()
@click.option("--user-id", required=True, help="The shopper to recommend for.")
@click.option("-k", "--k", "k", type=int, default=10, show_default=True)
def recommend(user_id: str, k: int) -> None:
    """Print the same JSON as GET /api/recommendations."""
    from api import create_app
    from infra.bootstrap import with_running_services

    app = create_app(with_running_services(Settings()))
    with app.test_client() as client:
        response = client.get("/api/recommendations", query_string={"user_id": user_id, "k": k})
        click.echo(json.dumps(response.get_json(), indent=2))
        if response.status_code != 200:
            sys.exit(1)
    app.extensions["streamrec"].close()


cli.add_command(train_command, "train")
cli.add_command(evaluate_command, "evaluate")
cli.add_command(archive_group, "archive")
cli.add_command(lag_command, "lag")
cli.add_command(bench_group, "bench")


def main() -> None:
    try:
        cli(standalone_mode=True)
    except StreamrecError as exc:
        click.echo(f"error: {exc.message}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
