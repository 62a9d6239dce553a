"""Consumer processes stop when the process that started them is killed outright."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import time
from pathlib import Path

import pytest

from infra.process import die_with_parent


def _child(parent_pid: int, pid_file: str) -> None:
    die_with_parent(parent_pid)
    Path(pid_file).write_text(str(os.getpid()))
    time.sleep(60)


def _parent(pid_file: str) -> None:
    context = multiprocessing.get_context("spawn")
    context.Process(target=_child, args=(os.getpid(), pid_file), daemon=False).start()
    time.sleep(60)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has ended, only not yet reaped


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux only")
def test_a_child_gets_sigterm_when_its_parent_is_sigkilled(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    parent = multiprocessing.get_context("spawn").Process(target=_parent, args=(str(pid_file),))
    parent.start()
    try:
        deadline = time.monotonic() + 30
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline, "the child never started"
            time.sleep(0.05)
        child = int(pid_file.read_text())
        assert _alive(child)
        os.kill(parent.pid or 0, signal.SIGKILL)
        parent.join(10)
        deadline = time.monotonic() + 10
        while _alive(child):
            assert time.monotonic() < deadline, "the child outlived its SIGKILLed parent"
            time.sleep(0.05)
    finally:
        if parent.is_alive():
            parent.kill()
        if pid_file.exists() and pid_file.read_text() and _alive(int(pid_file.read_text())):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)

