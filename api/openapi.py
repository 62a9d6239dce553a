"""The OpenAPI 3.1 description of the JSON API, served at /api/openapi.json."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify

__all__ = ["SPEC", "bp"]

bp = Blueprint("openapi", __name__, url_prefix="/api")

_ID = {"type": "string", "minLength": 1, "maxLength": 128, "pattern": r"^\S+$"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERRORS = {
    "400": _json(_ref("Error"), "Bad parameters"),
    "401": _json(_ref("Error"), "Missing or wrong bearer token (operator endpoints)"),
    "404": _json(_ref("Error"), "Unknown item or route"),
    "422": _json(_ref("Error"), "Invalid event, with field errors in details"),
    "429": _json(_ref("Error"), "Too many requests from this client (see Retry-After)"),
    "503": _json(_ref("Error"), "A dependency (broker, Redis) is unavailable"),
}


def _query(name: str, schema: dict[str, Any], description: str, required: bool = False
           ) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema,
            "description": description}


#: Headers of a recommendation list, fresh (200) or still current (304).
_CONDITIONAL_HEADERS = {
    "ETag": {"description": "Digest of everything the list depends on: the user's state "
                            "version, the model, catalog and popularity-epoch versions, the "
                            "variant and the parameters. It changes with the user's own "
                            "events at once, and with other shoppers' activity once a "
                            "popularity epoch (STREAMREC_POPULARITY_REFRESH_S)",
             "schema": {"type": "string"}},
    "Cache-Control": {"description": "`private, no-cache`: revalidate on every use",
                      "schema": {"type": "string"}},
}

_K = _query("k", {"type": "integer", "minimum": 1, "maximum": 200, "default": 10},
            "How many items")

SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "streamrec API", "version": "1.0.0",
        "description": "Real-time recommendations for an online shop. Errors have one shape: "
                       '{"error": {"code", "message", "details"?}}.',
    },
    "paths": {
        "/api/recommendations": {"get": {
            "summary": "Ranked, explained recommendations for a user",
            "parameters": [
                _query("user_id", _ID, "The shopper", required=True), _K,
                _query("context_item", _ID, "The item being looked at"),
                _query("category", {"type": "string", "maxLength": 200}, "Only this category"),
                _query("preferred_categories", {"type": "string", "maxLength": 4000},
                       "Comma-separated categories for cold start"),
                _query("min_price", {"type": "number", "minimum": 0}, "Lowest price"),
                _query("max_price", {"type": "number", "minimum": 0}, "Highest price"),
                _query("variant", {"type": "string", "maxLength": 64},
                       "Force an A/B variant (default: assigned by user id)"),
                {"name": "If-None-Match", "in": "header", "required": False,
                 "schema": {"type": "string", "maxLength": 1000},
                 "description": "The ETag of the list on screen: 304 when it is still "
                                "current (nothing recomputed)"},
            ],
            "responses": {
                "200": {**_json(_ref("Recommendation"), "Recommendations"),
                        "headers": _CONDITIONAL_HEADERS},
                "304": {"description": "Not Modified: the list whose ETag was sent in "
                                       "If-None-Match is still current (no body; keep it, "
                                       "and its rec_id for clicks)",
                        "headers": _CONDITIONAL_HEADERS},
                **_ERRORS,
            },
        }},
        "/api/trending": {"get": {
            "summary": "Most popular items now (decayed), overall or in a category",
            "parameters": [_query("category", {"type": "string", "maxLength": 200},
                                  "A category"), _K],
            "responses": {"200": _json(_ref("Recommendation"), "Trending items"), **_ERRORS},
        }},
        "/api/items/{item_id}": {"get": {
            "summary": "One product",
            "parameters": [{"name": "item_id", "in": "path", "required": True, "schema": _ID}],
            "responses": {"200": _json(_ref("Item"), "The product"), **_ERRORS},
        }},
        "/api/items/{item_id}/similar": {"get": {
            "summary": "Items closest in content",
            "parameters": [{"name": "item_id", "in": "path", "required": True, "schema": _ID},
                           _K],
            "responses": {"200": _json(_ref("Recommendation"), "Similar items"), **_ERRORS},
        }},
        "/api/users/{user_id}/history": {"get": {
            "summary": "A user's recent items, weights and purchases",
            "security": [{"bearer": []}],
            "parameters": [{"name": "user_id", "in": "path", "required": True, "schema": _ID},
                           _query("n", {"type": "integer", "minimum": 1, "maximum": 50},
                                  "How many recent items")],
            "responses": {"200": _json({"type": "object"}, "History"), **_ERRORS},
        }},
        "/api/predict": {"get": {
            "summary": "The online rating model's predicted rating (1-5) of an item by a user",
            "parameters": [_query("user_id", _ID, "The shopper", required=True),
                           _query("item_id", _ID, "The product", required=True)],
            "responses": {"200": _json({"type": "object", "required": ["rating"], "properties": {
                "rating": {"type": "number", "minimum": 1, "maximum": 5},
                "known_user": {"type": "boolean"}, "known_item": {"type": "boolean"},
                "ratings_learnt": {"type": "integer"}}}, "Predicted rating"), **_ERRORS},
        }},
        "/api/events": {"post": {
            "summary": "Send one interaction or a batch (up to 1000) to the broker",
            "description": "Read-your-writes: once accepted, each event's item already "
                           "counts as seen (and anchors co-visitation) in the user's next "
                           "recommendations, and their ETag changes, before the consumers "
                           "have applied the event.",
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "oneOf": [_ref("Event"), {"type": "array", "items": _ref("Event"),
                                          "minItems": 1, "maxItems": 1000}]}}}},
            "responses": {"202": _json(_ref("Accepted"), "Acknowledged by the broker"),
                          **_ERRORS},
        }},
        "/api/feedback": {"post": {
            "summary": "A rating of a product (1-5)",
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["user_id", "product_id", "rating"],
                "properties": {"user_id": _ID, "product_id": _ID,
                               "rating": {"type": "number", "minimum": 1, "maximum": 5},
                               "review": {"type": "string", "maxLength": 5000}}}}}},
            "responses": {"202": _json(_ref("Accepted"), "Acknowledged by the broker"),
                          **_ERRORS},
        }},
        "/api/catalog": {"post": {
            "summary": "Add or change products (one or a batch)",
            "security": [{"bearer": []}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "oneOf": [_ref("ItemUpsert"), {"type": "array", "items": _ref("ItemUpsert"),
                                               "minItems": 1, "maxItems": 1000}]}}}},
            "responses": {"202": _json({"type": "object"}, "Acknowledged by the broker"),
                          **_ERRORS},
        }},
        "/healthz": {"get": {
            "summary": "Broker and Redis reachable?",
            "responses": {"200": _json({"type": "object"}, "Healthy"),
                          "503": _json({"type": "object"}, "Degraded")},
        }},
        "/readyz": {"get": {
            "summary": "Everything running, the consumers included?",
            "responses": {"200": _json({"type": "object"}, "Ready"),
                          "503": _json({"type": "object"}, "Degraded or still starting")},
        }},
    },
    "components": {"securitySchemes": {"bearer": {
        "type": "http", "scheme": "bearer",
        "description": "STREAMREC_API_TOKEN (operator endpoints; open when unset)"}},
        "schemas": {
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {
            "type": "object", "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                           "details": {}}}}},
        "Item": {"type": "object", "required": ["item_id", "name"], "properties": {
            "item_id": {"type": "string"}, "name": {"type": "string"},
            "category": {"type": "string"}, "price": {"type": "number"},
            "in_stock": {"type": "boolean"}}},
        "ScoredItem": {"type": "object",
                       "required": ["item_id", "name", "score", "sources", "reason"],
                       "properties": {
                           "item_id": {"type": "string"}, "name": {"type": "string"},
                           "category": {"type": "string"}, "price": {"type": "number"},
                           "score": {"type": "number"},
                           "sources": {"type": "object",
                                       "additionalProperties": {"type": "number"}},
                           "reason": {"type": "string"}}},
        "Recommendation": {"type": "object", "required": ["rec_id", "items"], "properties": {
            "user_id": {"type": "string"}, "rec_id": {"type": "string"},
            "variant": {"type": "string"},
            "degraded": {"type": "boolean",
                         "description": "true: the state store is down; popular items"},
            "reason": {"type": "string"},
            "items": {"type": "array", "items": _ref("ScoredItem")}}},
        "Event": {"type": "object", "required": ["event_type", "user_id", "item_id"],
                  "properties": {
                      "event_type": {"enum": ["view", "click", "add_to_cart", "purchase",
                                              "rating"]},
                      "event_id": _ID, "user_id": _ID, "item_id": _ID,
                      "timestamp": {"type": ["string", "number"]},
                      "session_id": _ID, "rec_id": _ID,
                      "variant": {"type": "string", "maxLength": 64},
                      "quantity": {"type": "integer", "minimum": 1},
                      "price": {"type": "number", "minimum": 0},
                      "rating": {"type": "number", "minimum": 1, "maximum": 5},
                      "review": {"type": "string", "maxLength": 5000}}},
        "ItemUpsert": {"type": "object", "required": ["event_type", "item_id", "name"],
                       "properties": {
                           "event_type": {"const": "item_upsert"}, "item_id": _ID,
                           "name": {"type": "string", "minLength": 1, "maxLength": 500},
                           "category": {"type": "string", "maxLength": 200},
                           "description": {"type": "string", "maxLength": 10000},
                           "price": {"type": "number", "minimum": 0},
                           "in_stock": {"type": "boolean"}}},
        "Accepted": {"type": "object", "required": ["accepted"], "properties": {
            "accepted": {"type": "integer"}, "event_id": {"type": "string"},
            "event_ids": {"type": "array", "items": {"type": "string"}}}},
    }},
}


@bp.get("/openapi.json")
def openapi() -> Response:
    return jsonify(SPEC)
