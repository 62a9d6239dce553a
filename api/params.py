"""Query-string and body parsing that fails with InvalidRequest, never a 500."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from typing import Any, TypeAlias

import orjson
from flask import Request

from core.errors import InvalidRequest

__all__ = [
    "MAX_JSON_DEPTH",
    "Args",
    "ascii_int",
    "float_arg",
    "int_arg",
    "json_body",
    "list_arg",
    "str_arg",
]

#: Arrays and objects nested deeper than this are refused. An event is 2 levels deep
#: (3 in a batch); the standard library's parser hit Python's recursion limit at ~1,000
#: levels (a 500), and deep values would only strain the validators after it.
MAX_JSON_DEPTH = 32

#: What a whole number from a query string or form may look like: ASCII digits only
#: (``str.isdigit`` and ``int`` also take '²' or Arabic-Indic digits) and short
#: enough for ``int`` (which refuses strings over 4,300 digits).
_ASCII_INT = re.compile(r"[0-9]{1,9}")
_SIGNED_ASCII_INT = re.compile(r"[+-]?[0-9]+")

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


def ascii_int(raw: str | None) -> int | None:
    """``raw`` as a non-negative whole number of ASCII digits (at most 9), else None.

    >>> ascii_int("42"), ascii_int(" 7 "), ascii_int("²"), ascii_int("-1"), ascii_int("9" * 10)
    (42, 7, None, None, None)
    """
    if raw is None:
        return None
    raw = raw.strip()
    return int(raw) if _ASCII_INT.fullmatch(raw) else None


def int_arg(request: Args, name: str, *, default: int, lo: int, hi: int) -> int:
    raw = _get(request, name)
    if raw is None or raw.strip() == "":
        return default
    raw = raw.strip()
    if not _SIGNED_ASCII_INT.fullmatch(raw):
        raise InvalidRequest(f"query parameter '{name}' must be an integer",
                             details=[{"field": name, "message": "not an integer"}])
    # Past 18 digits it is out of any range we take (and int() stops at 4,300 digits).
    value = int(raw) if len(raw) <= 18 else (hi + 1 if raw[0] != "-" else lo - 1)
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


def _too_deep(data: Any, limit: int) -> bool:
    """True when ``data`` nests arrays/objects deeper than ``limit`` (iterative: no recursion)."""
    if not isinstance(data, dict | list):
        return False
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            return True
        children = value.values() if isinstance(value, dict) else value
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def json_body(request: Request) -> Any:
    """The request's JSON body; InvalidRequest (400) for a body that is not JSON or too deep.

    Parsed by orjson, which refuses nesting past 1,024 levels with an error (Python's
    ``json`` overflowed the stack instead); :data:`MAX_JSON_DEPTH` bounds it far lower.
    """
    if not request.is_json:
        raise InvalidRequest("the body must be JSON (Content-Type: application/json)")
    try:
        data = orjson.loads(request.get_data(cache=True))
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"the body is not valid JSON: {exc}") from None
    if _too_deep(data, MAX_JSON_DEPTH):
        raise InvalidRequest(f"the JSON body nests arrays or objects deeper than "
                             f"{MAX_JSON_DEPTH} levels")
    return data
