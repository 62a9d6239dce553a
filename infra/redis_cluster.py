"""One Redis or a Redis Cluster, told apart by the server itself.

:func:`redis_client` asks the server ``INFO cluster``: with ``cluster_enabled:1`` it
returns redis-py's :class:`~redis.cluster.RedisCluster` (which follows the slot map and
its changes), else a plain :class:`redis.Redis`. No setting says which: the same URL
form serves both.

:class:`Router` groups keys by the node that holds them (one group on a single Redis)
and runs a script on one group's node; on a cluster such scripts carry Redis 7's
``allow-cross-slot-keys`` flag, so one call may touch every slot of its node.
"""

from __future__ import annotations

from typing import Any

import redis
from redis.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["REDIS_TIMEOUT_S", "RedisClient", "Router", "cross_slot", "is_cluster", "redis_client"]

RedisClient = redis.Redis | RedisCluster
#: Socket (and connect) timeout of every Redis client, in seconds. Not shorter: the
#: consumer applies up to 4,000 records in one script call, and a timed-out script
#: still runs on the server, so a short timeout only turns slow batches on a busy
#: machine into retries. It matches the Kafka publisher's 5 s.
REDIS_TIMEOUT_S = 5.0
#: How long a cluster write waits for its node's replicas (then goes on: best effort).
WAIT_REPLICAS_MS = 500


def is_cluster(client: RedisClient) -> bool:
    return isinstance(client, RedisCluster)


def redis_client(url: str, *, timeout_s: float = REDIS_TIMEOUT_S) -> RedisClient:
    """A client for ``url`` with bounded timeouts: a cluster client when the server is one.

    A server that does not answer now gets a plain client, whose calls then fail as
    temporary failures (a cluster node always answers ``INFO``).
    """
    options: dict[str, Any] = {"socket_timeout": timeout_s,
                               "socket_connect_timeout": timeout_s}
    plain = redis.Redis.from_url(url, health_check_interval=30, **options)
    try:
        enabled = int(plain.info("cluster").get("cluster_enabled", 0)) == 1
    except (RedisConnectionError, RedisTimeoutError):
        return plain
    if not enabled:
        return plain
    plain.close()
    return RedisCluster.from_url(url, **options)


def cross_slot(script: str) -> str:
    """``script`` allowed to touch keys of several slots of the node it runs on (Redis 7)."""
    return "#!lua flags=allow-cross-slot-keys\n" + script


class Router:
    """Which node holds a key, and a script run on one node (see the module doc)."""

    def __init__(self, client: RedisClient) -> None:
        self.client = client
        self.cluster = is_cluster(client)

    def group_of(self, key: str) -> str:
        """The name of the node holding ``key`` ("" on a single Redis: one group)."""
        if not self.cluster:
            return ""
        assert isinstance(self.client, RedisCluster)
        slot = key_slot(key.encode())
        return str(self.client.nodes_manager.get_node_from_slot(slot).name)

    def run_at(self, key: str, script: str, *args: Any, replicated: bool = False) -> Any:
        """EVAL the cross-slot ``script`` (no declared keys) on the node holding ``key``.

        ``replicated``: return once the node's replicas have the script's writes too (WAIT,
        in the same round trip), so a failover right after cannot lose what was answered.
        """
        assert isinstance(self.client, RedisCluster)
        slot = key_slot(key.encode())
        node = self.client.nodes_manager.get_node_from_slot(slot)
        client = node.redis_connection
        if client is None:  # not connected yet: the caller retries after a refresh
            raise RedisConnectionError(f"no connection to node {node.name}")
        pipe = client.pipeline(transaction=False)
        pipe.execute_command("EVAL", script, 0, *args)
        replicas = len(self.client.nodes_manager.slots_cache.get(slot, ())) - 1
        if replicated and replicas > 0:
            pipe.execute_command("WAIT", replicas, WAIT_REPLICAS_MS)
        return pipe.execute()[0]

    def refresh(self) -> None:
        """Read the slot map again (after a failover moved keys to another node)."""
        if self.cluster:
            assert isinstance(self.client, RedisCluster)
            self.client.nodes_manager.initialize()
