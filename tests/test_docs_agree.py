"""Figures the docs state about the code are the code's own."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from infra.redis_store import REDIS_TIMEOUT_S, redis_client

ROOT = Path(__file__).resolve().parents[1]


def test_the_redis_timeout_in_the_docs_is_the_clients() -> None:
    assert inspect.signature(redis_client).parameters["timeout_s"].default == REDIS_TIMEOUT_S
    text = " ".join((ROOT / "docs" / "reliability.md").read_text().split())
    stated = re.findall(r"client's (\d+(?:\.\d+)?) s socket timeout", text)
    assert stated, "docs/reliability.md no longer states the Redis client's timeout"
    assert {float(s) for s in stated} == {REDIS_TIMEOUT_S}
