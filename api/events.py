"""Event intake: validate, then produce to Kafka (202) or answer 422 with field errors.

Read-your-writes: an accepted event's item is also noted in the state store for its
user (:meth:`core.ports.OwnEvents.note_own_events`, one round trip), so the shopper's
next recommendation already counts it as seen and anchors on it, and the next
conditional poll gets a fresh list, without waiting for Kafka and the consumers, which
still apply the event and own the state.
"""

from __future__ import annotations

from collections.abc import Sequence

from flask import Blueprint, Response, current_app, jsonify, request

from api.attribution import attribute, written_before
from api.auth import require_token
from api.metrics import observe_events
from api.params import json_body
from api.services import services
from core.errors import InvalidEvent, InvalidRequest, TemporaryFailure
from core.events import (
    EventTimeWindow,
    InteractionEvent,
    parse_catalog_event,
    parse_interaction,
    parse_interactions,
)

__all__ = ["MAX_BATCH", "bp"]

bp = Blueprint("events", __name__, url_prefix="/api")

MAX_BATCH = 1000
#: How long a noted own event shows before the consumers apply it. Applying removes it
#: sooner; this only bounds how long an event that is never applied (dead-lettered,
#: lost with a broker) shows, and exceeds any consumer lag the project meets.
OWN_EVENTS_TTL_S = 120.0


def _note_own(events: Sequence[InteractionEvent]) -> None:
    """Note the accepted events' items for their users (read-your-writes, best effort:
    with the state store down, an event shows once the consumers applied it)."""
    by_user: dict[str, list[str]] = {}
    for event in events:
        by_user.setdefault(event.user_id, []).append(event.item_id)
    try:
        services().state.note_own_events(by_user, OWN_EVENTS_TTL_S)
    except TemporaryFailure as exc:
        current_app.logger.warning("own events not noted: %s", exc)


def _in_time(events: list[InteractionEvent]) -> list[InteractionEvent]:
    """``events``, or a 422 when one's timestamp lies outside the accepted window."""
    EventTimeWindow.from_settings(services().settings).check(events)
    return events


@bp.post("/events")
def post_events() -> tuple[Response, int]:
    data = json_body(request)
    if isinstance(data, list):
        if not data:
            raise InvalidRequest("an empty batch of events")
        if len(data) > MAX_BATCH:
            raise InvalidRequest(f"at most {MAX_BATCH} events per request")
        if not all(isinstance(e, dict) for e in data):
            raise InvalidRequest("every event must be a JSON object")
        events = _in_time(parse_interactions(data))
        services().publisher.publish(written_before(events))
        _note_own(events)
        observe_events(events)
        attribute(events)
        return jsonify({"accepted": len(events), "event_ids": [e.event_id for e in events]}), 202
    if not isinstance(data, dict):
        raise InvalidRequest("the body must be an event object or a list of them")
    [event] = _in_time([parse_interaction(data)])
    services().publisher.publish(written_before([event]))
    _note_own([event])
    observe_events([event])
    attribute([event])
    return jsonify({"accepted": 1, "event_id": event.event_id}), 202


@bp.post("/catalog")
@require_token
def post_catalog() -> tuple[Response, int]:
    """Add or change products: one ``item_upsert`` object or a list (catalog topic)."""
    data = json_body(request)
    batch = data if isinstance(data, list) else [data]
    if not batch or len(batch) > MAX_BATCH or not all(isinstance(e, dict) for e in batch):
        raise InvalidRequest(f"send one product object or a list of 1 to {MAX_BATCH}")
    events = [parse_catalog_event(e) for e in batch]
    services().publisher.publish_catalog(events)
    return jsonify({"accepted": len(events), "item_ids": [e.item_id for e in events]}), 202


@bp.post("/feedback")
def post_feedback() -> tuple[Response, int]:
    """A rating, as in the original design: ``{"user_id", "product_id", "rating": 1-5}``."""
    data = json_body(request)
    if not isinstance(data, dict):
        raise InvalidRequest("the body must be an object with user_id, product_id and rating")
    if "product_id" not in data and "item_id" not in data:
        raise InvalidEvent("invalid rating: product_id is required",
                           details=[{"field": "product_id", "message": "Field required",
                                     "type": "missing"}])
    body = {k: v for k, v in data.items() if k not in {"product_id", "item_id"}}
    [event] = _in_time([parse_interaction({
        **body, "event_type": "rating", "item_id": data.get("product_id", data.get("item_id")),
    })])
    services().publisher.publish([event])
    _note_own([event])
    observe_events([event])
    return jsonify({"accepted": 1, "event_id": event.event_id}), 202
