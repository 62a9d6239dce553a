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

    Always, also with no ``api_token`` configured: then the endpoint is closed (an
    open catalog write let anyone set a price to 0). ``streamrec demo`` generates a
    token into ``state_dir/api_token``; production sets ``STREAMREC_API_TOKEN``.
    """

    @functools.wraps(view)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        token = services().settings.api_token
        if not token:
            raise Unauthorized("this operator endpoint is closed: the server has no API token "
                               "(set STREAMREC_API_TOKEN; `streamrec demo` writes one to "
                               "<state dir>/api_token)")
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise Unauthorized("this endpoint needs 'Authorization: Bearer <api token>'")
        return view(*args, **kwargs)

    return guarded  # type: ignore[return-value]
