"""JSON errors with one stable shape: ``{"error": {"code", "message", "details"?}}``."""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from core.errors import StreamrecError

__all__ = ["register_error_handlers"]

log = logging.getLogger(__name__)


def _json_error(status: int, code: str, message: str, details: object = None) -> Response:
    body: dict[str, object] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    response = jsonify({"error": body})
    response.status_code = status
    return response


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(StreamrecError)
    def _streamrec_error(exc: StreamrecError) -> Response:
        if exc.http_status >= 500:
            log.error("%s: %s", exc.code, exc.message)
        return _json_error(exc.http_status, exc.code, exc.message, exc.details)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        code = (exc.name or "error").lower().replace(" ", "_")
        return _json_error(exc.code or 500, code, exc.description or exc.name or "error")

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error")
        return _json_error(500, "internal_error", "internal server error")
