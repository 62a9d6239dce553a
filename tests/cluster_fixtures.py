"""A real local Redis Cluster (3 masters + 3 replicas) for the tests that need one.

Started once per test session by the first test asking for it (``scripts/redis_cluster.py``,
Debian's redis-server 7), killed at the end. ``tests/conftest.py`` imports these fixtures.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from redis.cluster import RedisCluster

from infra.redis_cluster import redis_client
from scripts.redis_cluster import LocalCluster, start_cluster

__all__ = ["cluster_client", "cluster_prefix", "redis_cluster"]


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    cluster = start_cluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def cluster_client(redis_cluster: LocalCluster) -> Iterator[RedisCluster]:
    """A cluster client, found the way bootstrap finds it (``INFO cluster``)."""
    client = redis_client(redis_cluster.url)
    assert isinstance(client, RedisCluster)
    yield client
    client.close()


@pytest.fixture
def cluster_prefix(cluster_client: RedisCluster) -> Iterator[str]:
    """A key prefix of this test alone; its keys (on every node) are deleted afterwards."""
    prefix = f"test:{uuid.uuid4().hex[:12]}:"
    yield prefix
    keys = list(cluster_client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        cluster_client.unlink(*keys)
