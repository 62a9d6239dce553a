"""Recommendation endpoints."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, request

from api.metrics import observe_recommendation
from api.params import int_arg, str_arg
from api.services import services
from core.errors import NotFound

__all__ = ["bp"]

bp = Blueprint("recommendations", __name__, url_prefix="/api")


@bp.before_request
def _catch_up_with_the_catalog() -> None:
    replica = services().replica
    if replica is not None:
        replica.refresh()  # throttled: one Redis read per interval when nothing changed


def _k() -> int:
    settings = services().settings
    return int_arg(request, "k", default=settings.default_k, lo=1, hi=settings.max_k)


@bp.get("/recommendations")
def recommendations() -> Response:
    user_id = str_arg(request, "user_id", required=True)
    assert user_id is not None
    k = _k()
    rec = services().recommender.recommend(user_id, k)
    observe_recommendation(rec)
    current_app.logger.debug("recommended %d items to %s", len(rec.items), user_id)
    return jsonify(rec.to_dict())


@bp.get("/trending")
def trending() -> Response:
    category = str_arg(request, "category", max_len=200)
    rec = services().recommender.trending(_k(), category)
    return jsonify({"category": category, **rec.to_dict()})


@bp.get("/items/<item_id>")
def item(item_id: str) -> Response:
    found = services().catalog.get(item_id)
    if found is None:
        raise NotFound(f"unknown item '{item_id}'")
    return jsonify({
        "item_id": found.item_id, "name": found.name, "category": found.category,
        "price": found.price, "in_stock": found.in_stock,
    })


@bp.get("/items/<item_id>/similar")
def similar(item_id: str) -> Response:
    k = _k()
    rec = services().recommender.similar(item_id, k)
    if rec is None:
        raise NotFound(f"unknown item '{item_id}'")
    observe_recommendation(rec)
    return jsonify({"item_id": item_id, **rec.to_dict()})
