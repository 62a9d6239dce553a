"""Event intake: validate, then produce to Kafka (202) or answer 422 with field errors."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from api.params import json_body
from api.services import services
from core.errors import InvalidRequest
from core.events import parse_interaction, parse_interactions

__all__ = ["MAX_BATCH", "bp"]

bp = Blueprint("events", __name__, url_prefix="/api")

MAX_BATCH = 1000


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
        events = parse_interactions(data)
        services().publisher.publish(events)
        return jsonify({"accepted": len(events), "event_ids": [e.event_id for e in events]}), 202
    if not isinstance(data, dict):
        raise InvalidRequest("the body must be an event object or a list of them")
    event = parse_interaction(data)
    services().publisher.publish([event])
    return jsonify({"accepted": 1, "event_id": event.event_id}), 202
