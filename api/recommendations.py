"""Recommendation endpoints."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from flask import Blueprint, Response, current_app, jsonify, request

from api.attribution import remember
from api.auth import require_token
from api.conditional import (
    CACHE_CONTROL,
    REQUEST_PARSED,
    VERSIONS_READ,
    CachedList,
    Versions,
)
from api.degraded import degraded_body, popular_fallback
from api.metrics import api_metrics, observe_recommendation
from api.params import Args, float_arg, int_arg, list_arg, str_arg
from api.services import ApiServices, services
from core.errors import InvalidRequest, NotFound, TemporaryFailure
from core.ports import RecRequest
from online_models.rating_mf import OnlineRatingMF
from online_models.serving.pipeline import Recommendation

__all__ = ["bp", "rec_request_of"]

bp = Blueprint("recommendations", __name__, url_prefix="/api")


@bp.before_request
def _catch_up_with_the_catalog() -> None:
    replica = services().replica
    if replica is not None:
        try:
            replica.refresh()  # throttled: one Redis read per interval when nothing changed
        except TemporaryFailure as exc:  # Redis down: a stale catalog beats no answer
            current_app.logger.warning("catalog refresh skipped: %s", exc)


def _k(args: Args = request) -> int:
    settings = services().settings
    return int_arg(args, "k", default=settings.default_k, lo=1, hi=settings.max_k)


def rec_request_of(args: Mapping[str, str], svc: ApiServices) -> RecRequest:
    """The request's :class:`RecRequest` from its query ``args`` (InvalidRequest or
    NotFound for a bad one); the view and the 304 fast path (:mod:`api.fastpath`)
    share it, so both compute the same ETag."""
    user_id = str_arg(args, "user_id", required=True)
    assert user_id is not None
    variant = str_arg(args, "variant", max_len=64)
    if variant is not None and variant not in svc.recommender.assigner.variants:
        raise InvalidRequest(f"unknown variant '{variant}'",
                             details=[{"field": "variant", "message": "not configured"}])
    context_item = str_arg(args, "context_item")
    if context_item is not None and context_item not in svc.catalog:
        raise NotFound(f"unknown context item '{context_item}'")
    settings = svc.settings
    return RecRequest(
        user_id=user_id,
        k=int_arg(args, "k", default=settings.default_k, lo=1, hi=settings.max_k),
        context_item=context_item,
        category=str_arg(args, "category", max_len=200),
        preferred_categories=tuple(list_arg(args, "preferred_categories")),
        min_price=float_arg(args, "min_price", lo=0, hi=1e9),
        max_price=float_arg(args, "max_price", lo=0, hi=1e9),
        variant=variant,
    )


@bp.get("/recommendations")
def recommendations() -> Response:
    svc = services()
    # Parsed by the fast path when it let the request through (the same function).
    rec_request = request.environ.get(REQUEST_PARSED) or rec_request_of(request.args, svc)
    user_id, variant, recommender = rec_request.user_id, rec_request.variant, svc.recommender
    conditional, metrics = svc.conditional, api_metrics()
    chosen = variant or recommender.assigner.variant(user_id)
    key = (rec_request, chosen)
    cached = conditional.cache.get(key)
    # Read by the fast path, which let the request through: not read twice.
    versions: Versions | None = request.environ.get(VERSIONS_READ)
    if versions is None and (cached is not None or "If-None-Match" in request.headers):
        try:  # a tag to compare with: the one small read of an unchanged answer
            versions = conditional.versions(user_id, chosen)
        except TemporaryFailure:  # the state store is down: the degraded path below
            versions = None
    if versions is not None:
        etag = conditional.etag(rec_request, versions)
        if request.if_none_match.contains(etag):
            metrics.observe_rec_cache("not_modified")
            return _tagged(Response(status=304), etag)
        if cached is not None and cached.etag == etag:  # the same list and rec_id
            metrics.observe_rec_cache("hit")
            return _tagged(Response(cached.body, mimetype="application/json"), etag)
    if versions is None:  # in-process versions, read before the list: never newer than it
        versions = conditional.versions(user_id, chosen, user_version=-1)
    fallback = popular_fallback()
    try:  # one state read, which carries the user's version
        rec = recommender.run(rec_request)
    except TemporaryFailure as exc:  # the state store is down: popular items, marked so
        current_app.logger.warning("degraded recommendations for %s: %s", user_id, exc)
        rec = Recommendation(user_id, fallback.items(rec_request.k, rec_request,
                                                     recommender.filter), variant=chosen)
        observe_recommendation(rec)
        return jsonify(degraded_body(rec, f"state store unavailable: {exc.message}"))
    metrics.observe_rec_cache("miss")
    fallback.maybe_refresh(recommender)
    observe_recommendation(rec)
    remember(rec)
    current_app.logger.debug("recommended %d items to %s", len(rec.items), user_id)
    response = jsonify(rec.to_dict())
    # Tagged with the version of the state the list was computed from.
    etag = conditional.etag(rec_request, replace(versions, user=rec.state_version))
    conditional.cache.put(key, CachedList(rec.rec_id, response.get_data(), etag))
    return _tagged(response, etag)


def _tagged(response: Response, etag: str) -> Response:
    """``response`` with its ETag; browsers may keep it but must revalidate every use."""
    response.set_etag(etag)
    response.headers["Cache-Control"] = CACHE_CONTROL
    return response


@bp.get("/trending")
def trending() -> Response:
    category = str_arg(request, "category", max_len=200)
    k = _k()
    try:
        rec = services().recommender.trending(k, category)
    except TemporaryFailure as exc:  # the state store is down: the last good list
        rec = Recommendation(None, popular_fallback().items(
            k, RecRequest("", k, category=category), services().recommender.filter))
        return jsonify({"category": category,
                        **degraded_body(rec, f"state store unavailable: {exc.message}")})
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


@bp.get("/users/<user_id>/history")
@require_token
def history(user_id: str) -> Response:
    """What the online state knows of a user: recent items, purchases, weights."""
    if len(user_id) > 128:
        raise InvalidRequest("user id longer than 128 characters")
    state = services().state
    n = int_arg(request, "n", default=50, lo=1, hi=services().settings.recent_items_max)
    catalog = services().catalog
    recent = state.recent_items(user_id, n)
    weights = state.get_histories([user_id]).get(user_id, {})
    return jsonify({
        "user_id": user_id,
        "recent": [
            {"item_id": i, "name": catalog[i].name if i in catalog else None,
             "weight": round(weights.get(i, 0.0), 6)}
            for i in recent
        ],
        "purchased": sorted(state.purchased_items(user_id)),
    })


@bp.get("/predict")
def predict() -> Response:
    """The online rating model's predicted rating (1-5) of an item by a user."""
    user_id = str_arg(request, "user_id", required=True)
    item_id = str_arg(request, "item_id", required=True)
    assert user_id is not None and item_id is not None
    if item_id not in services().catalog:
        raise NotFound(f"unknown item '{item_id}'")
    params = services().state.get_rating_params([user_id], [item_id])
    return jsonify({
        "user_id": user_id, "item_id": item_id,
        "rating": round(OnlineRatingMF.predict(params, user_id, item_id), 4),
        "known_user": user_id in params.users, "known_item": item_id in params.items,
        "ratings_learnt": int(params.n),
    })
