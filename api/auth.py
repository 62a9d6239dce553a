"""Bearer-token protection of the JSON API's operator endpoints."""

from __future__ import annotations

import functools
import hmac
from collections.abc import Callable
from typing import Any, TypeVar

from flask import request

from api.services import services
from core.errors import Unauthorized

__all__ = ["require_token"]

F = TypeVar("F", bound=Callable[..., Any])


def require_token(view: F) -> F:
    """Refuse the request with 401 unless it carries ``Authorization: Bearer <api_token>``.

    With no ``api_token`` configured the endpoint is open (development); production
    sets ``STREAMREC_API_TOKEN``.
    """

    @functools.wraps(view)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        token = services().settings.api_token
        if token:
            given = request.headers.get("Authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
                raise Unauthorized("this endpoint needs 'Authorization: Bearer <api token>'")
        return view(*args, **kwargs)

    return guarded  # type: ignore[return-value]
