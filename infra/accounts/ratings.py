"""Ratings and reviews: one rating (1-5) per user and item, the latest wins."""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa

from core.errors import InvalidRequest

from .base import SqlAccounts
from .records import RatingSummary, Review
from .tables import ratings_table, users_table

__all__ = ["RatingAccounts"]


class RatingAccounts(SqlAccounts):
    """Users' ratings and reviews of items."""

    def rate(self, user_id: int, item_id: str, rating: int, review: str = "") -> None:
        """Rate an item 1-5 (a second rating of the same item replaces the first)."""
        if not 1 <= int(rating) <= 5:
            raise InvalidRequest("a rating is an integer from 1 to 5")
        values = {"user_id": user_id, "item_id": item_id, "rating": int(rating),
                  "review": review.strip()[:5000], "updated_at": time.time()}
        insert = self._insert(ratings_table).values(**values)
        stmt = insert.on_conflict_do_update(
            index_elements=["user_id", "item_id"],
            set_={c: insert.excluded[c] for c in ("rating", "review", "updated_at")})
        with self._begin("rate") as conn:
            conn.execute(stmt)

    def _reviews(self, where: Any, limit: int) -> list[Review]:
        r, u = ratings_table, users_table
        with self._begin("reviews") as conn:
            rows = conn.execute(
                sa.select(u.c.username, r.c.item_id, r.c.rating, r.c.review, r.c.updated_at)
                .join(u, u.c.id == r.c.user_id).where(where)
                .order_by(r.c.updated_at.desc()).limit(limit))
            return [Review(row.username, row.item_id, int(row.rating), row.review,
                           float(row.updated_at)) for row in rows]

    def reviews(self, item_id: str, limit: int = 50) -> list[Review]:
        """Ratings and reviews of an item, newest first."""
        return self._reviews(ratings_table.c.item_id == item_id, limit)

    def user_ratings(self, user_id: int, limit: int = 200) -> list[Review]:
        """The ratings a user gave, newest first."""
        return self._reviews(ratings_table.c.user_id == user_id, limit)

    def user_rating(self, user_id: int, item_id: str) -> Review | None:
        found = self._reviews(sa.and_(ratings_table.c.user_id == user_id,
                                      ratings_table.c.item_id == item_id), 1)
        return found[0] if found else None

    def rating_summary(self, item_id: str) -> RatingSummary:
        r = ratings_table
        with self._begin("rating_summary") as conn:
            avg, count = conn.execute(
                sa.select(sa.func.avg(r.c.rating), sa.func.count()).where(r.c.item_id == item_id)
            ).tuples().one()
        return RatingSummary(None if avg is None else round(float(avg), 2), int(count))
