"""The unchanged poll answered before Flask: ``304 Not Modified`` at the WSGI level.

Pages poll ``GET /api/recommendations`` with ``If-None-Match`` every 1.5 s and most
polls find their list unchanged (:mod:`api.conditional`). Flask's request handling
(request context, URL matching, the hooks, a ``Response`` object) cost about as much
as the rest of such a poll together, so :class:`NotModifiedFastPath` wraps the app's
WSGI callable and answers exactly those polls itself:

- the same request parsing as the view (:func:`api.recommendations.rec_request_of`),
  the same catalog catch-up, the same versions and ETag (one small state-store read);
- the same per-client rate limit (:mod:`api.ratelimit`): a token is taken here, and a
  request passed on to Flask is marked so that Flask does not take a second one;
- the same response headers as the view's 304: ``ETag``, ``Cache-Control`` and the
  security headers (:mod:`api.security_headers`);
- the same metrics: the request's latency and count under the endpoint's label, and
  the ``not_modified`` cache result.

Everything else -- another path or method, no ``If-None-Match``, a tag that does not
match, a bad parameter, the state store down, any error -- goes to Flask unchanged,
which answers it as it always did (with the request parsed and the versions read here,
when there are some, so the view does neither again).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl

from flask import Flask
from werkzeug.datastructures import MultiDict
from werkzeug.http import parse_etags, quote_etag

from api.conditional import CACHE_CONTROL, REQUEST_PARSED, VERSIONS_READ
from api.metrics import ApiMetrics, api_metrics
from api.ratelimit import RATE_CHARGED, TokenBucketLimiter
from api.recommendations import rec_request_of
from api.security_headers import SECURITY_HEADERS
from api.services import ApiServices
from core.errors import StreamrecError

__all__ = ["ENDPOINT", "NotModifiedFastPath", "install_fast_path"]

#: The path (and the metrics label: the view's URL rule) answered here.
ENDPOINT = "/api/recommendations"

log = logging.getLogger(__name__)

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class NotModifiedFastPath:
    """WSGI middleware: a conditional poll whose tag is current gets its 304 here.

    Parameters
    ----------
    app
        The Flask app, fully set up (its services, metrics and rate limiter are read
        from its extensions).
    inner
        The WSGI callable that answers everything else (the app's own).
    """

    def __init__(self, app: Flask, inner: WsgiApp) -> None:
        self.inner = inner
        self.services: ApiServices = app.extensions["streamrec"]
        self.metrics: ApiMetrics = api_metrics(app)
        self.limiter: TokenBucketLimiter | None = app.extensions.get("streamrec.ratelimit")
        self._fixed_headers = [("Cache-Control", CACHE_CONTROL), *SECURITY_HEADERS.items()]

    def __call__(self, environ: dict[str, Any], start_response: StartResponse
                 ) -> Iterable[bytes]:
        if (environ.get("PATH_INFO") != ENDPOINT or environ.get("REQUEST_METHOD") != "GET"
                or "HTTP_IF_NONE_MATCH" not in environ):
            return self.inner(environ, start_response)
        started = time.perf_counter()
        if self.limiter is not None:
            wait = self.limiter.acquire(environ.get("REMOTE_ADDR") or "unknown")
            environ[RATE_CHARGED] = wait  # Flask answers 429 if > 0, never charges twice
            if wait > 0:
                return self.inner(environ, start_response)
        etag = self._current_tag(environ)
        if etag is None or not parse_etags(environ["HTTP_IF_NONE_MATCH"]).contains(etag):
            return self.inner(environ, start_response)
        start_response("304 NOT MODIFIED", [("ETag", quote_etag(etag)), *self._fixed_headers])
        self.metrics.observe_request(ENDPOINT, "GET", 304, time.perf_counter() - started)
        self.metrics.observe_rec_cache("not_modified")
        return []

    def _current_tag(self, environ: dict[str, Any]) -> str | None:
        """The request's current ETag; None where Flask must answer (and then the
        versions read, if any, are left in ``environ`` for the view)."""
        svc = self.services
        try:
            # As werkzeug reads request.args, but strict: anything odd goes to Flask.
            query = environ.get("QUERY_STRING", "").encode("latin-1").decode()
            args = MultiDict(parse_qsl(query, keep_blank_values=True, errors="strict"))
            if svc.replica is not None:
                svc.replica.refresh()  # throttled, as the blueprint's hook does
            request = rec_request_of(args, svc)
            variant = request.variant or svc.recommender.assigner.variant(request.user_id)
            versions = svc.conditional.versions(request.user_id, variant)
        except (StreamrecError, UnicodeError, ValueError):
            return None  # a bad request or the state store down: Flask answers it
        except Exception:  # a bug here must not cost the poll: Flask answers it as before
            log.exception("304 fast path failed; the request goes to Flask")
            return None
        environ[REQUEST_PARSED], environ[VERSIONS_READ] = request, versions
        return svc.conditional.etag(request, versions)


def install_fast_path(app: Flask) -> None:
    """Put :class:`NotModifiedFastPath` in front of ``app`` (call once it is set up)."""
    app.wsgi_app = NotModifiedFastPath(app, app.wsgi_app)  # type: ignore[method-assign]
