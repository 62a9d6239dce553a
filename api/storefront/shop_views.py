"""Catalogue, product pages, ratings, cart and checkout; every action becomes an event."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from flask import Response, abort, flash, jsonify, redirect, render_template, request
from werkzeug.wrappers import Response as WerkzeugResponse

from api.params import ascii_int
from api.services import services
from core.events import AddedToCart, InteractionEvent, ItemClicked, ItemViewed, Purchased, Rated
from core.ports import ALL_ITEMS
from core.types import Item
from infra.accounts import MAX_QUANTITY

from .blueprint import (
    bp,
    build_event,
    clean_rec_id,
    current_user,
    emit,
    event_fields,
    require_accounts,
    safe_next,
    shopper_id,
    storefront_state,
)
from .images import product_svg
from .reasons import reason

__all__ = ["PAGE_SIZE", "interest_items", "personal_items"]

PAGE_SIZE = 24
PANEL_K = 8

Page = str | tuple[str, int] | WerkzeugResponse


def _item_or_404(item_id: str) -> Item:
    item = services().catalog.get(item_id)
    if item is None:
        abort(404, description=f"There is no product '{item_id}'.")
    return item


def _page_arg() -> int:
    return max(1, ascii_int(request.args.get("page")) or 1)


def _paginate(ids: Sequence[str], page: int) -> tuple[list[Item], int]:
    catalog = services().catalog
    pages = max(1, math.ceil(len(ids) / PAGE_SIZE))
    page = min(page, pages)
    chunk = ids[(page - 1) * PAGE_SIZE: page * PAGE_SIZE]
    return [catalog[i] for i in chunk if i in catalog], pages


def _card(item: Item, why: str = "", rec_id: str | None = None) -> dict[str, Any]:
    return {"item_id": item.item_id, "name": item.name, "category": item.category,
            "price": item.price, "reason": why, "rec_id": rec_id}


def _wants_json() -> bool:
    return request.accept_mimetypes.best == "application/json"


# --- the recommendation panel ---------------------------------------------------------------
def interest_items(k: int) -> list[dict[str, Any]]:
    """Cold start: popular items of the user's preferred categories (then their first items)."""
    user = current_user()
    if user is None or not user.categories:
        return []
    svc = services()
    per = max(1, math.ceil(k / len(user.categories)))
    picks: list[tuple[float, str, str]] = []
    for category in user.categories:
        popular = svc.state.top_popular(per, scope=f"cat:{category}")
        ids = list(popular.ids)
        if len(ids) < per:  # a quiet category: fill with its catalog items
            ids += [i for i, it in svc.catalog.items()
                    if it.category == category and i not in ids][: per - len(ids)]
        scores = popular.as_dict()
        picks.extend((scores.get(i, 0.0), i, category) for i in ids)
    picks.sort(key=lambda p: -p[0])
    seen: set[str] = set()
    cards = []
    for _, item_id, category in picks:
        if item_id in seen or item_id not in svc.catalog:
            continue
        seen.add(item_id)
        cards.append(_card(svc.catalog[item_id], f"Popular in {category}, a category you like"))
    return cards[:k]


def personal_items(k: int) -> tuple[list[dict[str, Any]], str]:
    """The panel's first render: recommendations, or interests while nothing is personal."""
    rec = services().recommender.recommend(shopper_id(), k)
    personal = any(set(r.sources) - {"popularity"} for r in rec.items)
    if not personal:
        interests = interest_items(k)
        if interests:
            return interests, "interests"
    return [_card(r.item, reason(r.sources), rec.rec_id) for r in rec.items], "recommender"


def _trending(k: int) -> list[dict[str, Any]]:
    svc = services()
    top = svc.state.top_popular(k, ALL_ITEMS)
    return [_card(svc.catalog[i], "Trending now") for i in top.ids if i in svc.catalog]


@bp.get("/")
def home() -> str:
    items, mode = personal_items(PANEL_K)
    return render_template("storefront/home.html", recommended=items, mode=mode,
                           trending=_trending(PANEL_K), user_id=shopper_id(),
                           categories=storefront_state().categories(services().catalog))


@bp.get("/shop-api/trending")
def trending_json() -> Response:
    """Trending items (decayed popularity); the JSON API gains /api/trending later."""
    k = ascii_int(request.args.get("k"))
    return jsonify({"items": _trending(PANEL_K if k is None else min(k, 50))})


@bp.get("/shop-api/interests")
def interests_json() -> Response:
    """Cold-start items for the logged-in user's preferred categories (own session only)."""
    return jsonify({"items": interest_items(PANEL_K)})


# --- catalogue ---------------------------------------------------------------------------------
@bp.get("/category/<name>")
def category(name: str) -> str:
    catalog = services().catalog
    ids = sorted((i for i, it in catalog.items() if it.category == name),
                 key=lambda i: (catalog[i].name, i))
    if not ids:
        abort(404, description=f"There is no category '{name}'.")
    page = _page_arg()
    items, pages = _paginate(ids, page)
    return render_template("storefront/category.html", name=name, items=items,
                           page=min(page, pages),
                           pages=pages, total=len(ids),
                           categories=storefront_state().categories(catalog))


@bp.get("/search")
def search() -> str:
    query = request.args.get("q", "").strip()[:200]
    hits = storefront_state().search(services().catalog).search(query) if query else None
    page = _page_arg()
    items, pages = _paginate(hits.ids if hits else [], page)
    return render_template("storefront/search.html", query=query, items=items,
                           page=min(page, pages),
                           pages=pages, total=len(hits.ids) if hits else 0,
                           corrected=hits.corrected if hits else None)


@bp.get("/product/<item_id>")
def product(item_id: str) -> str:
    item = _item_or_404(item_id)
    svc = services()
    rec_id = clean_rec_id(request.args.get("rec"))
    events: list[InteractionEvent | None] = [
        build_event(ItemViewed, item_id=item.item_id, **event_fields(rec_id))]
    if rec_id:
        events.append(build_event(ItemClicked, item_id=item.item_id, **event_fields(rec_id)))
    emit([e for e in events if e is not None])

    similar = svc.recommender.similar(item.item_id, 6)
    similar_cards = ([_card(r.item, "Similar product", similar.rec_id) for r in similar.items]
                     if similar else [])
    co = storefront_state().co_purchases(svc.settings.data_dir, svc.catalog, svc.accounts)
    also = [_card(svc.catalog[i], f"Bought together {n}x") for i, n in
            co.also_bought(item.item_id, 12) if i in svc.catalog][:6]
    accounts = svc.accounts
    user = current_user()
    return render_template(
        "storefront/product.html", item=item, similar=similar_cards, also_bought=also,
        summary=accounts.rating_summary(item.item_id) if accounts else None,
        reviews=accounts.reviews(item.item_id) if accounts else [],
        mine=accounts.user_rating(user.id, item.item_id) if accounts and user else None,
    )


@bp.get("/product/<item_id>/image.svg")
def product_image(item_id: str) -> Response:
    item = _item_or_404(item_id)
    response = Response(product_svg(item), mimetype="image/svg+xml")
    response.headers["Cache-Control"] = "public, max-age=86400"
    return response


@bp.post("/product/<item_id>/rate")
def rate(item_id: str) -> Page:
    item = _item_or_404(item_id)
    user = current_user()
    if user is None:
        return redirect(f"/login?next=/product/{item.item_id}")
    raw = request.form.get("rating", "")
    if raw not in {"1", "2", "3", "4", "5"}:
        abort(400, description="Choose a rating from 1 to 5 stars.")
    review = request.form.get("review", "").strip()[:5000]
    require_accounts().rate(user.id, item.item_id, int(raw), review)
    event = build_event(Rated, item_id=item.item_id, rating=float(raw), review=review or None,
                        **event_fields())
    emit([event] if event else [])
    flash("Thank you for your rating.")
    return redirect(f"/product/{item.item_id}#reviews")


# --- cart and checkout -------------------------------------------------------------------------
def _quantity(default: int = 1) -> int:
    quantity = ascii_int(request.form.get("quantity", str(default)))
    if quantity is None or not 0 <= quantity <= MAX_QUANTITY:
        abort(400, description=f"The quantity must be a whole number from 0 to {MAX_QUANTITY}.")
    return quantity


@bp.post("/cart/add")
def cart_add() -> Page | Response:
    item = _item_or_404(request.form.get("item_id", ""))
    quantity = max(1, _quantity())
    accounts = require_accounts()
    shopper = shopper_id()
    now_in_cart = accounts.add_to_cart(shopper, item.item_id, quantity)
    rec_id = clean_rec_id(request.form.get("rec"))
    event = build_event(AddedToCart, item_id=item.item_id, quantity=quantity,
                        **event_fields(rec_id))
    emit([event] if event else [])
    if _wants_json():
        return jsonify({"item_id": item.item_id, "quantity": now_in_cart,
                        "cart_items": sum(accounts.cart(shopper).values())})
    flash(f"Added {item.name} to your cart.")
    return redirect(safe_next(request.form.get("next"), "/cart"))


@bp.post("/cart/update")
def cart_update() -> WerkzeugResponse:
    item_id = request.form.get("item_id", "")
    require_accounts().set_cart_quantity(shopper_id(), item_id, _quantity())
    return redirect("/cart")


@bp.get("/cart")
def cart() -> str:
    catalog = services().catalog
    lines = [(catalog[i], q) for i, q in require_accounts().cart(shopper_id()).items()
             if i in catalog]
    total = round(sum(item.price * q for item, q in lines), 2)
    return render_template("storefront/cart.html", lines=lines, total=total)


@bp.post("/checkout")
def checkout() -> WerkzeugResponse:
    user = current_user()
    if user is None:
        flash("Log in or sign up to check out; your cart is kept.")
        return redirect("/login?next=/cart")
    svc = services()
    prices = {i: it.price for i, it in svc.catalog.items()}
    order = require_accounts().checkout(user.id, user.shopper_id, prices)
    if order is None:
        flash("Your cart is empty.")
        return redirect("/cart")
    fields = event_fields()
    events = [build_event(Purchased, item_id=line.item_id, quantity=line.quantity,
                          price=line.price, **fields) for line in order.lines]
    emit([e for e in events if e is not None])
    storefront_state().record_basket([line.item_id for line in order.lines])
    flash(f"Thank you! Order #{order.id} is confirmed: £{order.total:.2f}.")
    return redirect("/profile#orders")
