"""`streamrec lag` on a real broker: produce N, commit M, the table shows N - M."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from click.testing import CliRunner

from cli.ops_commands import lag_command
from core.events import ItemViewed
from core.settings import Settings
from infra.bootstrap import write_runtime

pytestmark = pytest.mark.integration

T0 = 1_300_000_000


async def _produce(bootstrap: str, topic: str, partition: int, n: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for i in range(n):  # one event a minute of event time
            event = ItemViewed(user_id="u1", item_id=f"i{i}", timestamp=T0 + 60 * i)
            await producer.send_and_wait(topic, event.model_dump_json().encode(),
                                         partition=partition)
    finally:
        await producer.stop()


async def _commit(bootstrap: str, group: str, offsets: dict[TopicPartition, int]) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        await consumer.commit(offsets)
    finally:
        await consumer.stop()


def _invoke(*args: str) -> list[dict[str, object]]:
    result = CliRunner().invoke(lag_command, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    rows: list[dict[str, object]] = json.loads(result.output)
    return rows


def test_lag_is_produced_minus_committed_per_partition_with_event_time_seconds(
    kafka_bootstrap: str, kafka_topics: Callable[..., str]
) -> None:
    topic = kafka_topics(partitions=2, name="lag")
    group = "lag-test-group"
    asyncio.run(_produce(kafka_bootstrap, topic, 0, 10))
    asyncio.run(_produce(kafka_bootstrap, topic, 1, 4))
    asyncio.run(_commit(kafka_bootstrap, group, {TopicPartition(topic, 0): 6}))

    rows = _invoke("--bootstrap", kafka_bootstrap, "--group", group, "--topic", topic, "--json")

    by_partition = {r["partition"]: r for r in rows}
    assert by_partition[0] == {"partition": 0, "committed": 6, "highwater": 10, "lag": 4,
                               # offsets 6..9: event times T0+360 .. T0+540
                               "lag_seconds": 180.0}
    # Never committed on partition 1: the whole log is lag.
    assert by_partition[1] == {"partition": 1, "committed": None, "highwater": 4, "lag": 4,
                               "lag_seconds": 180.0}


def test_lag_table_shows_zero_when_the_group_caught_up(
    kafka_bootstrap: str, kafka_topics: Callable[..., str]
) -> None:
    topic = kafka_topics(partitions=1, name="lag")
    asyncio.run(_produce(kafka_bootstrap, topic, 0, 3))
    asyncio.run(_commit(kafka_bootstrap, "caught-up", {TopicPartition(topic, 0): 3}))

    result = CliRunner().invoke(lag_command, ["--bootstrap", kafka_bootstrap, "--group",
                                              "caught-up", "--topic", topic])

    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0].split() == ["partition", "committed", "high-water", "lag", "(msgs)", "lag",
                                "(s)"]
    assert lines[1].split() == ["0", "3", "3", "0", "0.0"]
    assert lines[2].split() == ["total", "0", "0.0"]


def test_lag_finds_the_running_demo_from_its_runtime_file(
    kafka_bootstrap: str, kafka_topics: Callable[..., str], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    topic = kafka_topics(partitions=1, name="lag")
    asyncio.run(_produce(kafka_bootstrap, topic, 0, 2))
    for name in ("STREAMREC_KAFKA_BOOTSTRAP", "KAFKA_BOOTSTRAP_SERVERS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("STREAMREC_STATE_DIR", str(tmp_path))
    # What `streamrec demo` writes (this test process stands in for the demo's pid).
    write_runtime(Settings(state_dir=tmp_path).with_services(kafka_bootstrap=kafka_bootstrap))

    rows = _invoke("--group", "never-committed", "--topic", topic, "--json", "--no-seconds")

    assert [(r["partition"], r["highwater"], r["lag"]) for r in rows] == [(0, 2, 2)]
