"""The one error tree of streamrec.

Every error knows how it is handled at the edges:

* ``http_status`` -- the status the API answers with (JSON body
  ``{"error": {"code", "message", "details"}}``).
* ``delivery`` -- what a consumer does with the message that raised it:
  ``"dead_letter"`` (the message can never succeed: park it with the reason and
  move on) or ``"retry"`` (a temporary failure: do not commit, try again).

>>> InvalidEvent("rating out of range").http_status
422
>>> TemporaryFailure("redis down").delivery
'retry'
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

__all__ = [
    "ArtifactIntegrityError",
    "ConfigurationError",
    "DataNotFound",
    "InvalidEvent",
    "InvalidRequest",
    "NotFound",
    "ServiceUnavailable",
    "StreamrecError",
    "TemporaryFailure",
    "Unauthorized",
]

Delivery = Literal["dead_letter", "retry"]


class StreamrecError(Exception):
    """Base of every error streamrec raises on purpose."""

    code: ClassVar[str] = "error"
    http_status: ClassVar[int] = 500
    delivery: ClassVar[Delivery] = "retry"

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        """The stable JSON shape of an error."""
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            body["details"] = self.details
        return {"error": body}


class InvalidEvent(StreamrecError):
    """An event that does not match its schema; it goes to the dead-letter topic."""

    code = "invalid_event"
    http_status = 422
    delivery = "dead_letter"


class InvalidRequest(StreamrecError):
    """A request with missing or malformed parameters."""

    code = "invalid_request"
    http_status = 400
    delivery = "dead_letter"


class Unauthorized(StreamrecError):
    """A request without the credentials an endpoint asks for."""

    code = "unauthorized"
    http_status = 401
    delivery = "dead_letter"


class NotFound(StreamrecError):
    """An item, user or resource that does not exist."""

    code = "not_found"
    http_status = 404
    delivery = "dead_letter"


class TemporaryFailure(StreamrecError):
    """A dependency failed for now (broker, Redis, database); retrying may succeed."""

    code = "temporary_failure"
    http_status = 503
    delivery = "retry"


class ServiceUnavailable(TemporaryFailure):
    """A required service cannot be reached at all."""

    code = "service_unavailable"


class ConfigurationError(StreamrecError):
    """Settings that cannot work together (bad URL, unknown model name, ...)."""

    code = "configuration_error"
    http_status = 500
    delivery = "retry"


class DataNotFound(StreamrecError):
    """A data set or artifact file that is not where it was said to be."""

    code = "data_not_found"
    http_status = 404
    delivery = "dead_letter"


class ArtifactIntegrityError(StreamrecError):
    """An artifact file whose sha256 is not the one its manifest records (or none is)."""

    code = "artifact_integrity_error"
    http_status = 500
    delivery = "retry"
