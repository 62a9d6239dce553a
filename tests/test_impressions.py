"""Served lists are written off the request path, in batches, and lose nothing on a blip."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from api.impressions import ImpressionWriter
from core.errors import TemporaryFailure
from infra.memory_store import InMemoryStateStore
from tests.fakes import wait_until


class RecordingStore(InMemoryStateStore):
    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[str]] = []
        self.fail = False

    def remember_impressions(self, shown: Mapping[str, Mapping[str, str]], ttl_s: int) -> None:
        if self.fail:
            raise TemporaryFailure("Redis down (fake)")
        self.batches.append(list(shown))
        super().remember_impressions(shown, ttl_s)



def test_a_queued_list_is_written_in_the_background() -> None:
    store = RecordingStore()
    writer = ImpressionWriter(store, ttl_s=60)
    writer.add("r1", {"a": "x"})
    wait_until(lambda: store.impressions("r1") == {"a": "x"})
    writer.close()


def test_flush_writes_everything_queued_in_one_batch() -> None:
    store = RecordingStore()
    writer = ImpressionWriter(store, ttl_s=60)
    writer._pending = {"r1": {"a": "x"}, "r2": {"b": "y"}}  # as if the thread had not run yet
    writer.flush()
    assert store.batches == [["r1", "r2"]]
    assert store.impressions("r2") == {"b": "y"}


def test_a_failed_write_keeps_the_lists_for_the_next_one() -> None:
    store = RecordingStore()
    writer = ImpressionWriter(store, ttl_s=60)
    store.fail = True
    writer._pending = {"r1": {"a": "x"}}
    with pytest.raises(TemporaryFailure):
        writer.flush()
    store.fail = False
    writer.flush()
    assert store.impressions("r1") == {"a": "x"}


def test_while_the_store_is_down_the_oldest_lists_go_first() -> None:
    store = RecordingStore()
    store.fail = True
    writer = ImpressionWriter(store, ttl_s=60, max_pending=2)
    writer.close()  # no thread: every add writes (and fails) at once, keeping the queue
    for n in range(4):
        writer.add(f"r{n}", {"a": str(n)})
    store.fail = False
    writer.flush()
    assert store.impressions("r0") == {} and store.impressions("r1") == {}
    assert store.impressions("r2") == {"a": "2"} and store.impressions("r3") == {"a": "3"}


def test_close_writes_what_is_left_and_later_lists_are_written_at_once() -> None:
    store = RecordingStore()
    writer = ImpressionWriter(store, ttl_s=60)
    writer.add("r1", {"a": "x"})
    writer.close()
    assert store.impressions("r1") == {"a": "x"}
    writer.add("r2", {"b": "y"})
    assert store.impressions("r2") == {"b": "y"}
