"""Served lists are written off the request path, in batches, and lose nothing on a blip."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
import redis

from api.impressions import ImpressionWriter
from core.errors import TemporaryFailure
from core.settings import Settings
from infra.memory_store import InMemoryStateStore
from online_models.blender import Shown, decode_shown, encode_shown
from tests.fakes import wait_until


class RecordingStore(InMemoryStateStore):
    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[str]] = []
        self.fail = False

    def remember_impressions(self, shown: Mapping[str, str], ttl_s: int) -> None:
        if self.fail:
            raise TemporaryFailure("Redis down (fake)")
        self.batches.append(list(shown))
        super().remember_impressions(shown, ttl_s)

    def shown(self, rec_id: str) -> dict[str, Shown]:
        return decode_shown(self.impressions(rec_id))


def _list(item: str, source: str = "content") -> list[tuple[str, Shown]]:
    return [(item, Shown(0, source, {source: 0.5}))]


def test_a_queued_list_is_written_in_the_background_and_read_back_whole() -> None:
    store = RecordingStore()
    writer = ImpressionWriter(store, ttl_s=60, interval_s=0.01)
    writer.add("r1", [("a", Shown(0, "covisit", {"covisit": 1.0, "popularity": 0.25})),
                      ("b", Shown(1, "content", {"content": 0.5}))])
    wait_until(lambda: bool(store.shown("r1")))
    assert store.shown("r1") == {
        "a": Shown(0, "covisit", {"covisit": 1.0, "popularity": 0.25}),
        "b": Shown(1, "content", {"content": 0.5})}
    writer.close()


def test_scores_held_as_numpy_floats_are_written_as_numbers() -> None:
    encoded = encode_shown([("a", Shown(0, "content", {"content": np.float64(0.25)}))])
    assert decode_shown(encoded) == {"a": Shown(0, "content", {"content": 0.25})}


def test_requests_do_not_wake_the_writer_until_a_batch_is_full() -> None:
    store = RecordingStore()
    writer = ImpressionWriter(store, ttl_s=60, interval_s=30.0, batch_size=3)
    writer.add("r1", _list("a"))
    writer.add("r2", _list("b"))
    time.sleep(0.2)
    assert store.batches == []  # waiting for the interval (30 s) or a full batch
    writer.add("r3", _list("c"))
    wait_until(lambda: store.batches == [["r1", "r2", "r3"]])
    writer.close()


def test_flush_writes_everything_queued_in_one_batch() -> None:
    store = RecordingStore()
    writer = ImpressionWriter(store, ttl_s=60)
    writer._pending = {"r1": (_list("a"), 60), "r2": (_list("b"), 60)}  # as if not run yet
    writer.flush()
    assert store.batches == [["r1", "r2"]]
    assert list(store.shown("r2")) == ["b"]


def test_a_failed_write_keeps_the_lists_for_the_next_one() -> None:
    store = RecordingStore()
    writer = ImpressionWriter(store, ttl_s=60)
    store.fail = True
    writer._pending = {"r1": (_list("a"), 60)}
    with pytest.raises(TemporaryFailure):
        writer.flush()
    store.fail = False
    writer.flush()
    assert list(store.shown("r1")) == ["a"]


def test_while_the_store_is_down_the_oldest_lists_go_first() -> None:
    store = RecordingStore()
    store.fail = True
    writer = ImpressionWriter(store, ttl_s=60, max_pending=2)
    writer.close()  # no thread: every add writes (and fails) at once, keeping the queue
    for n in range(4):
        writer.add(f"r{n}", _list(str(n)))
    store.fail = False
    writer.flush()
    assert store.impressions("r0") is None and store.impressions("r1") is None
    assert list(store.shown("r2")) == ["2"] and list(store.shown("r3")) == ["3"]


def test_close_writes_what_is_left_and_later_lists_are_written_at_once() -> None:
    store = RecordingStore()
    writer = ImpressionWriter(store, ttl_s=60, interval_s=30.0)
    writer.add("r1", _list("a"))
    writer.close()
    assert list(store.shown("r1")) == ["a"]
    writer.add("r2", _list("b"))
    assert list(store.shown("r2")) == ["b"]


def test_an_unexpected_error_loses_that_batch_but_not_the_writer() -> None:
    store = RecordingStore()
    writer = ImpressionWriter(store, ttl_s=60, interval_s=0.01)
    broken = [("a", Shown(0, "content", {"content": object()}))]  # not encodable
    writer.add("r1", broken)  # type: ignore[arg-type]
    wait_until(lambda: not writer._pending)
    writer.add("r2", _list("b"))
    wait_until(lambda: bool(store.shown("r2")))
    assert store.impressions("r1") is None
    writer.close()


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="interval_s"):
        ImpressionWriter(InMemoryStateStore(), interval_s=0)


@pytest.mark.integration
def test_anonymous_lists_are_stored_short_and_briefly_personal_ones_for_a_day(
    redis_client: redis.Redis, redis_prefix: str,
) -> None:
    from api import create_app
    from infra.redis_store import RedisStateStore
    from tests.fakes import toy_services
    from tests.test_api import learn_views

    services = toy_services()
    settings = services.settings
    store = RedisStateStore(redis_client, prefix=redis_prefix)
    services.impressions = ImpressionWriter(store, settings.impression_ttl_s)
    client = create_app(settings, services=services).test_client()
    learn_views(services, "crowd", sorted(services.catalog))  # every item is popular
    learn_views(services, "shopper", ["candles-1", "candles-2"])

    anonymous = client.get("/api/recommendations?user_id=made-up-1&k=200").get_json()
    personal = client.get("/api/recommendations?user_id=shopper&k=200").get_json()
    services.impressions.flush()
    assert len(anonymous["items"]) == 30  # the answer is whole; what is kept is not
    for body, ttl in ((anonymous, settings.anonymous_impression_ttl_s),
                      (personal, settings.impression_ttl_s)):
        key = f"{redis_prefix}shown:{body['rec_id']}"
        assert len(decode_shown(store.impressions(body["rec_id"]))) == 20
        assert ttl - 5 <= redis_client.ttl(key) <= ttl
    assert settings.anonymous_impression_ttl_s <= 3600 < settings.impression_ttl_s
    kept = redis_client.memory_usage(f"{redis_prefix}shown:{anonymous['rec_id']}")
    assert kept is not None and kept < 2_500  # was ~10 KB for a k=200 list


@pytest.mark.integration
def test_the_embedded_redis_has_a_memory_ceiling_that_spares_the_online_state(
    tmp_path: Path,
) -> None:
    from infra.embedded import EmbeddedRedis

    with EmbeddedRedis(log_dir=tmp_path, maxmemory="64mb") as server:
        client = redis.Redis.from_url(server.url)
        try:
            assert client.config_get("maxmemory")["maxmemory"] == str(64 * 1024 * 1024)
            # Keys without a TTL (popularity, profiles) are never evicted.
            assert client.config_get("maxmemory-policy")["maxmemory-policy"] == "volatile-ttl"
        finally:
            client.close()
    assert Settings().embedded_redis_maxmemory == "1gb"
