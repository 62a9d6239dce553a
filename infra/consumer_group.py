"""Has a consumer group joined? Asked of the broker (DescribeGroups), for readiness.

A shopper's events show in their recommendations only once the consumers have
joined their group and got partitions: until then ``/readyz`` says "starting".
"""

from __future__ import annotations

import asyncio

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from infra.embedded import run_sync

__all__ = ["group_members"]


async def _members(bootstrap: str, group: str, timeout_s: float) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap,
                                request_timeout_ms=int(timeout_s * 1000))
    try:
        await admin.start()
        responses = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    for response in responses:
        for error_code, name, state, _ptype, _protocol, members in response.groups:
            if name == group and error_code == 0 and state == "Stable":
                return len(members)
    return 0


def group_members(bootstrap: str, group: str, timeout_s: float = 1.0) -> int:
    """Members of ``group`` once it is stable (joined, partitions assigned); else 0.

    Broker trouble also answers 0: not ready is the honest answer then.
    """
    try:
        # One deadline for all of it: /healthz (a 2 s Docker health check) waits on it.
        return run_sync(asyncio.wait_for(_members(bootstrap, group, timeout_s), timeout_s))
    except (TimeoutError, KafkaError, OSError):
        return 0
