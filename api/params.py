"""Query-string and body parsing that fails with InvalidRequest, never a 500."""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from typing import Any, TypeAlias

from flask import Request

from core.errors import InvalidRequest

__all__ = ["Args", "float_arg", "int_arg", "json_body", "list_arg", "str_arg"]

#: Where parameters come from: a request, or its ``args`` read once (each read of
#: ``request.args`` goes through Flask's context-local proxy).
Args: TypeAlias = Request | Mapping[str, str]


#: Unicode categories refused in query parameters: control (NUL, CR, LF, ESC, C1) and
#: format characters (bidi overrides, zero-width).
_CONTROL = frozenset({"Cc", "Cf"})


def _get(source: Args, name: str) -> str | None:
    return (source.args if isinstance(source, Request) else source).get(name)


def str_arg(
    request: Args, name: str, *, required: bool = False, max_len: int = 128
) -> str | None:
    value = _get(request, name)
    if value is None or value.strip() == "":
        if required:
            raise InvalidRequest(f"query parameter '{name}' is required",
                                 details=[{"field": name, "message": "required"}])
        return None
    value = value.strip()
    if len(value) > max_len:
        raise InvalidRequest(f"query parameter '{name}' is longer than {max_len} characters",
                             details=[{"field": name, "message": "too long"}])
    if any(unicodedata.category(c) in _CONTROL for c in value):
        # Ids end up in state keys and log lines (a CR/LF would forge one).
        raise InvalidRequest(f"query parameter '{name}' contains control characters",
                             details=[{"field": name, "message": "control characters"}])
    return value


def int_arg(request: Args, name: str, *, default: int, lo: int, hi: int) -> int:
    raw = _get(request, name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidRequest(f"query parameter '{name}' must be an integer",
                             details=[{"field": name, "message": "not an integer"}]) from None
    if not lo <= value <= hi:
        raise InvalidRequest(f"query parameter '{name}' must be between {lo} and {hi}",
                             details=[{"field": name, "message": f"out of range [{lo}, {hi}]"}])
    return value


def float_arg(request: Args, name: str, *, lo: float, hi: float) -> float | None:
    raw = _get(request, name)
    if raw is None or raw.strip() == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise InvalidRequest(f"query parameter '{name}' must be a number",
                             details=[{"field": name, "message": "not a number"}]) from None
    if not lo <= value <= hi:  # also refuses nan and inf
        raise InvalidRequest(f"query parameter '{name}' must be between {lo:g} and {hi:g}",
                             details=[{"field": name, "message": "out of range"}])
    return value


def list_arg(request: Args, name: str, *, max_items: int = 20, max_len: int = 200) -> list[str]:
    """A comma-separated list parameter (empty entries dropped)."""
    raw = str_arg(request, name, max_len=max_items * (max_len + 1))
    if raw is None:
        return []
    values = [v.strip() for v in raw.split(",") if v.strip()]
    if len(values) > max_items or any(len(v) > max_len for v in values):
        raise InvalidRequest(f"query parameter '{name}' has too many or too long entries",
                             details=[{"field": name, "message": "too long"}])
    return values


def json_body(request: Request) -> Any:
    if not request.is_json:
        raise InvalidRequest("the body must be JSON (Content-Type: application/json)")
    data = request.get_json(silent=True)
    if data is None:
        raise InvalidRequest("the body is not valid JSON")
    return data
