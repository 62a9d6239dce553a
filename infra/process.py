"""Child processes that end with their parent, however the parent ends.

A parent that exits normally (Ctrl-C, SIGTERM) stops its children itself; one killed
outright (SIGKILL, the OOM killer) cannot. On Linux the kernel can then send each
child a signal: ``prctl(PR_SET_PDEATHSIG)``, set in the child. Elsewhere these are
no-ops.

The signal comes when the *thread* that started the child ends, so
:func:`preexec_die_with_parent` arms it only for children started from the main
thread (whose end is the process's end).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable

__all__ = ["die_with_parent", "preexec_die_with_parent"]

log = logging.getLogger(__name__)

#: prctl(2) option: the signal a process gets when its parent dies.
_PR_SET_PDEATHSIG = 1


def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    return prctl


def die_with_parent(parent_pid: int) -> None:
    """Have Linux send this process SIGTERM (a graceful stop) when its parent dies.

    A supervisor that SIGKILLs a parent and starts a new set must not leave the old
    children running beside it. Elsewhere a no-op.
    """
    prctl = _prctl()
    if prctl is None:
        return
    if prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        log.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
        return
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def preexec_die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` for ``subprocess.Popen`` that arms :func:`die_with_parent`.

    None (no preexec) off Linux or off the main thread. The function runs in the
    forked child before ``exec``: it only calls prctl (looked up here, before the
    fork) and reads two process ids.
    """
    prctl = _prctl()
    if prctl is None or threading.current_thread() is not threading.main_thread():
        return None
    parent_pid = os.getpid()

    def arm() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent_pid:
            os.kill(os.getpid(), signal.SIGTERM)

    return arm
