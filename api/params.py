"""Query-string and body parsing that fails with InvalidRequest, never a 500."""

from __future__ import annotations

from typing import Any

from flask import Request

from core.errors import InvalidRequest

__all__ = ["int_arg", "json_body", "str_arg"]


def str_arg(
    request: Request, name: str, *, required: bool = False, max_len: int = 128
) -> str | None:
    value = request.args.get(name)
    if value is None or value.strip() == "":
        if required:
            raise InvalidRequest(f"query parameter '{name}' is required",
                                 details=[{"field": name, "message": "required"}])
        return None
    value = value.strip()
    if len(value) > max_len:
        raise InvalidRequest(f"query parameter '{name}' is longer than {max_len} characters",
                             details=[{"field": name, "message": "too long"}])
    return value


def int_arg(request: Request, name: str, *, default: int, lo: int, hi: int) -> int:
    raw = request.args.get(name)
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


def json_body(request: Request) -> Any:
    if not request.is_json:
        raise InvalidRequest("the body must be JSON (Content-Type: application/json)")
    data = request.get_json(silent=True)
    if data is None:
        raise InvalidRequest("the body is not valid JSON")
    return data
