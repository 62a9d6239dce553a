"""Fixtures for the end-to-end tests: unique topics, keys and group per test."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from consumers.app import BackgroundConsumer, create_consumer_app
from core.settings import Settings
from infra.bootstrap import ensure_kafka_topics
from tests.fakes import TEST_API_TOKEN


@pytest.fixture(scope="session")
def index_state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state dir shared by the session, so the item index is built once."""
    return tmp_path_factory.mktemp("state")


@pytest.fixture
def live_settings(
    kafka_bootstrap: str, redis_url: str, index_state_dir: Path, tmp_path: Path,
    redis_prefix: str,
) -> Settings:
    """Settings on the real services, with topics, group and Redis keys of this test alone."""
    tag = uuid.uuid4().hex[:10]
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap,
        redis_url=redis_url,
        database_url=f"sqlite:///{tmp_path / 'streamrec.db'}",
        state_dir=index_state_dir,
        interactions_topic=f"interactions-{tag}",
        catalog_topic=f"catalog-{tag}",
        dead_letter_topic=f"interactions-{tag}.dlq",
        consumer_group=f"group-{tag}",
        redis_prefix=redis_prefix,
        topic_partitions=2,
        api_token=TEST_API_TOKEN,
    )
    ensure_kafka_topics(settings)
    return settings


def consumer_for(settings: Settings) -> BackgroundConsumer:
    """The consumers' app for ``settings``, ready to start in a background thread."""
    return BackgroundConsumer(create_consumer_app(settings))


@pytest.fixture
def running_consumer(live_settings: Settings) -> Iterator[BackgroundConsumer]:
    consumer = consumer_for(live_settings).start()
    yield consumer
    consumer.stop()


def assert_same_state(store: Any, reference: Any, users: list[str], distinct: int) -> None:
    """``store`` holds what ``reference`` (a run that never failed) holds after ``distinct``
    events: counts by type, popularity, recent items and content profiles of ``users``."""
    got, want = store.counters(), reference.counters()
    assert got["events.total"] == want["events.total"] == distinct
    for kind in ("view", "add_to_cart", "purchase"):
        assert got[f"events.{kind}"] == want[f"events.{kind}"]
    assert store.top_popular(20).ids == reference.top_popular(20).ids
    np.testing.assert_allclose(store.top_popular(20).scores,
                               reference.top_popular(20).scores, rtol=1e-9)
    assert store.recent_items_many(users, 50) == reference.recent_items_many(users, 50)
    mine, theirs = store.get_profiles(users), reference.get_profiles(users)
    assert mine.keys() == theirs.keys()
    for user in users:
        np.testing.assert_allclose(mine[user], theirs[user], atol=1e-5)
