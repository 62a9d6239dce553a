"""Readiness is reported honestly: the consumers count as starting until their group
has members (asked of a real broker), and /readyz says so with a 503."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from aiokafka import AIOKafkaConsumer

from api import create_app
from infra.consumer_group import group_members
from tests.fakes import toy_services


def test_readyz_names_the_parts_still_starting_and_healthz_says_starting() -> None:
    services = toy_services()
    consumers_joined = False
    services.readiness_checks = {"consumers": lambda: consumers_joined}
    client = create_app(services.settings, services=services).test_client()

    ready, health = client.get("/readyz"), client.get("/healthz")
    assert ready.status_code == 503
    assert ready.get_json()["starting"] == ["consumers"]
    assert health.status_code == 200  # alive: broker and Redis answer
    assert health.get_json()["status"] == "starting"

    consumers_joined = True
    assert client.get("/readyz").status_code == 200
    assert client.get("/healthz").get_json() == {
        "status": "ok", "checks": {"redis": True, "kafka": True}, "starting": []}


def test_a_failing_readiness_check_counts_as_starting() -> None:
    services = toy_services()

    def broken() -> bool:
        raise OSError("broker gone")

    services.readiness_checks = {"consumers": broken}
    client = create_app(services.settings, services=services).test_client()
    assert client.get("/readyz").get_json()["starting"] == ["consumers"]


@pytest.mark.integration
def test_group_members_are_counted_once_the_group_is_joined(
    kafka_bootstrap: str, kafka_topics: Callable[..., str]
) -> None:
    topic = kafka_topics(partitions=2, name="ready")
    group = f"{topic}-group"
    assert group_members(kafka_bootstrap, group) == 0

    async def join_and_count() -> int:
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka_bootstrap, group_id=group)
        await consumer.start()
        try:
            for _ in range(100):
                if consumer.assignment():
                    break
                await asyncio.sleep(0.1)
            return await asyncio.to_thread(group_members, kafka_bootstrap, group)
        finally:
            await consumer.stop()

    assert asyncio.run(join_and_count()) == 1
    assert group_members("127.0.0.1:1", group, timeout_s=0.5) == 0  # no broker: not ready
