"""`streamrec consume --processes 2`: one group, each event counted once, the archive in its
own lower-priority process, all stopped cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import psutil
import pytest

from core.events import InteractionEvent
from core.settings import Settings
from infra.bootstrap import build_sql_store, build_state_store
from infra.embedded import free_port
from tests.integration.conftest import assert_same_state, consumer_for
from tests.integration.test_crash_recovery import consumer_env, produce, stream, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: Events are produced over this long, so the second member joins (and the group
#: rebalances) while records flow.
PRODUCE_S = 20.0


def free_ports(n: int) -> int:
    """A port p with p .. p + n - 1 free (process i serves metrics on p + i)."""
    while True:
        port = free_port()
        with contextlib.ExitStack() as probes:
            try:
                for i in range(1, n):
                    probes.enter_context(socket.socket()).bind(("127.0.0.1", port + i))
            except OSError:
                continue
        return port


def events_applied(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("streamrec_consumer_events_total{"))


def produce_slowly(settings: Settings, events: list[InteractionEvent]) -> threading.Thread:
    def run() -> None:
        chunks = np.array_split(np.arange(len(events)), int(PRODUCE_S))
        for chunk in chunks:
            asyncio.run(produce(settings, [events[i] for i in chunk]))
            time.sleep(1.0)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_two_consumer_processes_share_the_stream_count_each_event_once_and_archive_it_niced(
    live_settings: Settings, tmp_path: Path
) -> None:
    from offline.catalog import load_catalog

    item_ids = [i.item_id for i in load_catalog(live_settings.data_dir)][:400]
    events = stream(item_ids)  # with redelivered duplicates
    distinct = len({e.event_id for e in events})
    port = free_ports(3)
    reference = live_settings.model_copy(update={
        "consumer_group": f"ref-{uuid.uuid4().hex[:8]}",
        "redis_prefix": live_settings.redis_prefix + "ref:",
    })
    env = consumer_env(live_settings, STREAMREC_CONSUMER_METRICS_PORT=str(port))
    store, ref_store = build_state_store(live_settings), build_state_store(reference)
    log = tmp_path / "consume.log"
    with open(log, "wb") as out:
        parent = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "consume", "--processes", "2"],
            env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        ref_consumer = consumer_for(reference).start()
        try:
            producer = produce_slowly(live_settings, events)
            producer.join(PRODUCE_S + 60)
            assert wait_for(lambda: store.counters().get("events.total", 0) >= distinct), (
                store.counters(), log.read_text()[-2000:])
            assert wait_for(lambda: ref_store.counters().get("events.total", 0) >= distinct)
            time.sleep(1.0)  # anything applied twice would show up as an excess now
        finally:
            ref_consumer.stop()
        # Both members took part: the group shared the partitions out.
        assert events_applied(port) > 0 and events_applied(port + 1) > 0
        children = [c for c in psutil.Process(parent.pid).children()
                    if "resource_tracker" not in " ".join(c.cmdline())]  # multiprocessing's
        assert len(children) == 3
        # The third is the archive's own process, on spare CPU only (SCHED_IDLE).
        policies = sorted(os.sched_getscheduler(child.pid) for child in children)
        assert policies == sorted([os.sched_getscheduler(0)] * 2 + [os.SCHED_IDLE])
        sql = build_sql_store(live_settings)
        try:
            assert wait_for(lambda: sql.count_events() == distinct), sql.count_events()
        finally:
            sql.close()

        assert_same_state(store, ref_store, [f"u{n}" for n in range(0, 300, 7)], distinct)

        # SIGTERM to the parent stops every member gracefully.
        parent.send_signal(signal.SIGTERM)
        assert parent.wait(60) == 0, log.read_text()[-2000:]
        assert not any(child.is_running() and child.status() != psutil.STATUS_ZOMBIE
                       for child in children)
    finally:
        kill_tree(parent)
        ref_store.clear()


def kill_tree(parent: subprocess.Popen[bytes]) -> None:
    """Kill ``parent`` and its children: a SIGKILLed parent would leave them running."""
    try:
        tree = psutil.Process(parent.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        tree = []
    if parent.poll() is None:
        parent.kill()
        parent.wait(10)
    for child in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
