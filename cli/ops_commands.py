"""Operator commands: ``streamrec lag``.

``lag`` prints, for each partition of the interactions topic, the consumer group's
committed offset (the next offset it will read), the high-water mark (the offset
the next produced record gets), the lag in messages (high-water mark - committed;
the whole log when the group never committed) and the lag in seconds of event time
(event time of the newest record - event time of the oldest unconsumed one).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import click

from core.errors import ConfigurationError
from core.settings import Settings
from infra.bootstrap import with_running_services
from infra.kafka import PartitionLag, partition_lag
from infra.lag_seconds import lag_seconds

__all__ = ["format_lag_table", "lag_command", "read_lag"]


async def _read(bootstrap: str, group: str, topic: str, seconds: bool) -> list[dict[str, Any]]:
    rows: list[PartitionLag] = await partition_lag(bootstrap, group, topic)
    times = await lag_seconds(bootstrap, topic, rows) if seconds else {}
    return [{"partition": r.partition, "committed": r.committed, "highwater": r.highwater,
             "lag": r.lag, "lag_seconds": times.get(r.partition)} for r in rows]


def read_lag(
    bootstrap: str, group: str, topic: str, *, seconds: bool = True
) -> list[dict[str, Any]]:
    """Per-partition lag rows of ``group`` on ``topic`` (raises TemporaryFailure)."""
    return asyncio.run(_read(bootstrap, group, topic, seconds))


def format_lag_table(rows: list[dict[str, Any]]) -> str:
    """A fixed-width table with a total line.

    >>> print(format_lag_table([{"partition": 0, "committed": 7, "highwater": 10,
    ...                          "lag": 3, "lag_seconds": 1.5}]))
    partition  committed  high-water  lag (msgs)  lag (s)
            0          7          10           3      1.5
        total                                  3      1.5
    """
    header = ("partition", "committed", "high-water", "lag (msgs)", "lag (s)")
    widths = [len(h) for h in header]

    def cells(r: dict[str, Any]) -> list[str]:
        committed = "-" if r["committed"] is None else str(r["committed"])
        secs = "-" if r["lag_seconds"] is None else f"{r['lag_seconds']:.1f}"
        return [str(r["partition"]), committed, str(r["highwater"]), str(r["lag"]), secs]

    body = [cells(r) for r in rows]
    known = [r["lag_seconds"] for r in rows if r["lag_seconds"] is not None]
    total = ["total", "", "", str(sum(r["lag"] for r in rows)),
             f"{max(known):.1f}" if known else "-"]
    lines = [list(header), *body, total]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True))
                     for line in lines)


@click.command("lag")
@click.option("--group", default=None, help="Consumer group [default: STREAMREC_CONSUMER_GROUP].")
@click.option("--topic", default=None,
              help="Topic [default: STREAMREC_INTERACTIONS_TOPIC].")
@click.option("--bootstrap", default=None,
              help="Broker host:port [default: STREAMREC_KAFKA_BOOTSTRAP].")
@click.option("--no-seconds", is_flag=True, help="Skip the event-time lag (reads no records).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON rows instead of a table.")
def lag_command(group: str | None, topic: str | None, bootstrap: str | None,
                no_seconds: bool, as_json: bool) -> None:
    """Print the consumer group's lag per partition, read from the broker.

    The broker is --bootstrap, else STREAMREC_KAFKA_BOOTSTRAP, else the one of a
    `streamrec demo` running on this machine (its state_dir/runtime.json).

    lag (msgs) = high-water mark - committed offset: records produced but not yet
    consumed (committed '-' = the group never committed; lag is the whole log).
    lag (s) = event time of the newest record - event time of the oldest unconsumed
    one: how far behind in event time the group is. The total line sums messages and
    takes the largest seconds.
    """
    # Like `streamrec recommend`: a demo running on this machine fills in its broker.
    settings = with_running_services(Settings())
    bootstrap = bootstrap or settings.kafka_bootstrap
    if not bootstrap:
        raise ConfigurationError("no broker: set STREAMREC_KAFKA_BOOTSTRAP, pass --bootstrap "
                                 "or start `streamrec demo`")
    rows = read_lag(bootstrap, group or settings.consumer_group,
                    topic or settings.interactions_topic, seconds=not no_seconds)
    click.echo(json.dumps(rows, indent=2) if as_json else format_lag_table(rows))
