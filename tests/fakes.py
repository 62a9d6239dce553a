"""Fakes and toy data for unit tests (the real adapters are tested against real services)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from flask import Flask

from api.services import ApiServices
from core.errors import TemporaryFailure
from core.events import InteractionEvent, ItemUpserted
from core.settings import Settings
from core.types import Item
from index.faiss_index import ExactIndex
from infra.accounts import AccountStore
from infra.memory_store import InMemoryStateStore
from online_models.serving.filters import Rules
from online_models.serving.pipeline import Recommender
from online_models.serving.popularity import PopularitySnapshot
from online_models.serving.registry import DEFAULT_SOURCES, SOURCES, SourceDeps, build_sources
from online_models.serving.sources import CollaborativeModels, PopularitySource

CATEGORIES = ("Candles", "Bags", "Mugs")
DIM = 8


class RecordingPublisher:
    """An EventPublisher that keeps what it was given (and can be told to fail)."""

    def __init__(self) -> None:
        self.events: list[InteractionEvent] = []
        self.catalog: list[ItemUpserted] = []
        self.raw: list[tuple[str, bytes | None, bytes]] = []
        self.fail = False

    def publish(self, events: Sequence[InteractionEvent]) -> None:
        if self.fail:
            raise TemporaryFailure("broker down (fake)")
        self.events.extend(events)

    def publish_catalog(self, events: Sequence[ItemUpserted]) -> None:
        self.catalog.extend(events)

    def publish_raw(self, topic: str, key: bytes | None, value: bytes) -> None:
        self.raw.append((topic, key, value))

    def close(self) -> None:
        pass


def toy_catalog(per_category: int = 10) -> dict[str, Item]:
    """Items ``<cat>-<n>`` in three categories."""
    return {
        f"{cat.lower()}-{n}": Item(f"{cat.lower()}-{n}", f"{cat} item {n}", cat, 1.0 + n)
        for cat in CATEGORIES
        for n in range(per_category)
    }


def toy_index(catalog: dict[str, Item], seed: int = 0) -> ExactIndex:
    """Embeddings where each category sits around its own axis."""
    rng = np.random.default_rng(seed)
    index = ExactIndex(DIM)
    ids = list(catalog)
    vectors = np.zeros((len(ids), DIM), dtype=np.float32)
    for row, item_id in enumerate(ids):
        vectors[row, CATEGORIES.index(catalog[item_id].category)] = 1.0
        vectors[row] += rng.normal(0, 0.15, DIM).astype(np.float32)
    index.upsert(ids, vectors)
    return index


def toy_accounts(url: str = "sqlite://") -> AccountStore:
    """An account store (in-memory SQLite by default) with its tables made.

    pbkdf2 with few rounds keeps tests fast; production hashes with scrypt.
    """
    accounts = AccountStore(url, password_method="pbkdf2:sha256:1000")
    accounts.create_schema()
    return accounts


#: The API token of :func:`toy_services`; operator endpoints need :data:`OPERATOR` headers.
TEST_API_TOKEN = "test-api-token-" + "0" * 24
OPERATOR = {"Authorization": f"Bearer {TEST_API_TOKEN}"}


def toy_services(settings: Settings | None = None, accounts: AccountStore | None = None
                 ) -> ApiServices:
    settings = settings or Settings(redis_url="redis://fake", kafka_bootstrap="fake:9092",
                                    secret_key="test-secret-key", api_token=TEST_API_TOKEN)
    catalog = toy_catalog()
    index = toy_index(catalog)
    state = InMemoryStateStore(recent_max=settings.recent_items_max,
                               half_life_s=settings.popularity_half_life_s)
    publisher = RecordingPublisher()
    return ApiServices(
        settings=settings, state=state, index=index, catalog=catalog, publisher=publisher,
        recommender=live_recommender(state, index, catalog, settings.blend_weights,
                                     settings.recent_items_max),
        accounts=accounts or toy_accounts(),
        health_checks={"redis": state.ping, "kafka": lambda: not publisher.fail},
    )


def live_recommender(
    state: Any, index: Any, catalog: Mapping[str, Item], weights: Mapping[str, float],
    recent_max: int = 50, *, rules: Rules | None = None,
    models: CollaborativeModels | None = None, **options: Any,
) -> Recommender:
    """The default sources over these parts; popularity re-read on every request."""
    popularity = PopularitySnapshot(state, catalog, refresh_s=0)
    deps = SourceDeps(state, index, catalog, popularity,
                      collaborative=models or (lambda: (None, None)))
    return Recommender(state, index, catalog, build_sources(DEFAULT_SOURCES, deps), weights,
                       recent_max, rules=rules, known_sources=SOURCES,
                       popularity_epoch=popularity.epoch, **options)


def toy_app(state_dir: Path, accounts: AccountStore | None = None, **settings: Any) -> Flask:
    """A testing app on :func:`toy_services`: storefront secret set, no API rate limit,
    data and state in ``state_dir``; ``settings`` override any of that."""
    built = Settings(**{"redis_url": "redis://fake", "kafka_bootstrap": "fake:9092",
                        "secret_key": "toy-app-test-secret", "data_dir": state_dir,
                        "state_dir": state_dir, "rate_limit_per_s": 0.0, **settings})
    from api import create_app

    app = create_app(built, services=toy_services(built, accounts))
    app.config["TESTING"] = True
    return app


def use_popularity(recommender: Recommender, snapshot: PopularitySnapshot) -> None:
    """Serve ``recommender``'s popularity (source and epoch) from ``snapshot``."""
    for source in recommender.sources:
        if isinstance(source, PopularitySource):
            source.snapshot = snapshot
    recommender.popularity_epoch = snapshot.epoch


def wait_until(condition: Callable[[], object], timeout_s: float = 5.0) -> None:
    """Poll ``condition`` until it is true; fail the test after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)
