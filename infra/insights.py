"""Data insights for the operator dashboard: SQL over the events archive.

Every query runs on SQLite and PostgreSQL (SQLAlchemy Core). Time windows are
counted back from the *newest archived event*, not from the wall clock, so a
replay of 2011 purchase history shows its own last days. Days are UTC days,
returned as ``YYYY-MM-DD``.

>>> from infra.sql import SqlStore
>>> from core.events import ItemViewed
>>> store = SqlStore("sqlite://"); store.create_schema()
>>> _ = store.archive_events([ItemViewed(user_id="u1", item_id="i1", timestamp=86_400)])
>>> Insights(store).funnel()[0]
{'stage': 'view', 'users': 1, 'funnel_users': 1, 'conversion': 1.0}
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from infra.sql import SqlStore, events_table, products_table

__all__ = ["FUNNEL", "Insights"]

#: The funnel's stages, in order.
FUNNEL = ("view", "add_to_cart", "purchase")
_DAY = 86_400
_UNKNOWN = "(unknown)"


def _day_label(day: int) -> str:
    return datetime.fromtimestamp(day * _DAY, UTC).strftime("%Y-%m-%d")


class Insights:
    """Aggregates over ``store``'s ``events`` table (joined with ``products``)."""

    def __init__(self, store: SqlStore) -> None:
        self.store = store
        self.engine = store.engine
        e = events_table.c
        # UTC day number of an event; CAST truncates on SQLite, FLOOR is needed on PostgreSQL.
        if store.dialect == "postgresql":
            self._day: Any = sa.cast(sa.func.floor(e.ts / _DAY), sa.BigInteger)
        else:
            self._day = sa.cast(e.ts / _DAY, sa.Integer)

    def __repr__(self) -> str:
        return f"Insights({self.store!r})"

    def _rows(self, query: Any) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(query))

    def newest_day(self) -> int | None:
        """UTC day number of the newest archived interaction (None: empty archive)."""
        newest = self._rows(sa.select(sa.func.max(events_table.c.ts))
                            .where(events_table.c.user_id.is_not(None)))[0][0]
        return None if newest is None else int(newest // _DAY)

    def _since(self, days: int | None) -> float | None:
        newest = self.newest_day()
        if days is None or newest is None:
            return None
        return float((newest - days + 1) * _DAY)

    def _interactions(self, since: float | None) -> Any:
        clause: Any = events_table.c.user_id.is_not(None)
        if since is not None:
            clause = sa.and_(clause, events_table.c.ts >= since)
        return clause

    # --- queries ----------------------------------------------------------------------------
    def top_products(self, limit: int = 10, days: int | None = None) -> list[dict[str, Any]]:
        """Most interacted-with products, with views, carts and purchases each."""
        e, p = events_table.c, products_table.c

        def count(kind: str) -> Any:
            return sa.func.sum(sa.case((e.event_type == kind, 1), else_=0)).label(kind)

        total = sa.func.count().label("events")
        query = (
            sa.select(e.item_id, sa.func.max(p.name).label("name"),
                      sa.func.max(p.category).label("category"), total,
                      count("view"), count("add_to_cart"), count("purchase"))
            .select_from(events_table.outerjoin(products_table, p.item_id == e.item_id))
            .where(self._interactions(self._since(days)))
            .group_by(e.item_id)
            .order_by(sa.desc("purchase"), total.desc(), e.item_id)
            .limit(limit)
        )
        return [
            {"item_id": r.item_id, "name": r.name or r.item_id,
             "category": r.category or _UNKNOWN, "events": int(r.events),
             "views": int(r.view or 0), "carts": int(r.add_to_cart or 0),
             "purchases": int(r.purchase or 0)}
            for r in self._rows(query)
        ]

    def category_trend(self, days: int = 30, top: int = 6) -> dict[str, Any]:
        """Events per day of the ``top`` categories (the rest summed as ``other``).

        Returns ``{"days": [...], "series": {category: [count per day]}}``.
        """
        e, p = events_table.c, products_table.c
        category = sa.func.coalesce(p.category, _UNKNOWN).label("category")
        day = self._day.label("day")
        query = (
            sa.select(day, category, sa.func.count().label("n"))
            .select_from(events_table.outerjoin(products_table, p.item_id == e.item_id))
            .where(self._interactions(self._since(days)))
            .group_by(day, category)
        )
        rows = [(int(r.day), r.category or _UNKNOWN, int(r.n)) for r in self._rows(query)]
        if not rows:
            return {"days": [], "series": {}}
        totals: dict[str, int] = {}
        for _, cat, n in rows:
            totals[cat] = totals.get(cat, 0) + n
        kept = sorted(totals, key=lambda c: (-totals[c], c))[:top]
        first, last = min(r[0] for r in rows), max(r[0] for r in rows)
        index = {d: i for i, d in enumerate(range(first, last + 1))}
        names = kept + (["other"] if len(totals) > len(kept) else [])
        series = {name: [0] * len(index) for name in names}
        for d, cat, n in rows:
            series[cat if cat in kept else "other"][index[d]] += n
        return {"days": [_day_label(d) for d in index], "series": series}

    def funnel(self, days: int | None = None) -> list[dict[str, Any]]:
        """view -> add_to_cart -> purchase in distinct users.

        ``users``: users with that event at all; ``funnel_users``: users who also
        reached every earlier stage; ``conversion``: funnel_users over the previous
        stage's funnel_users (1.0 for the first stage, None when it is 0).
        """
        e = events_table.c
        where = self._interactions(self._since(days))

        def users_of(kind: str) -> Any:
            return sa.select(e.user_id).where(where, e.event_type == kind).distinct()

        out: list[dict[str, Any]] = []
        previous: Any = None
        previous_n: int | None = None
        with self.engine.connect() as conn:
            for kind in FUNNEL:
                stage = users_of(kind)
                users = conn.execute(sa.select(sa.func.count()).select_from(stage.subquery()))
                n_all = int(users.scalar_one())
                reached = stage if previous is None else stage.where(e.user_id.in_(previous))
                n = int(conn.execute(sa.select(sa.func.count())
                                     .select_from(reached.subquery())).scalar_one())
                conversion = 1.0 if previous_n is None else (n / previous_n if previous_n else None)
                out.append({"stage": kind, "users": n_all, "funnel_users": n,
                            "conversion": conversion})
                previous, previous_n = reached, n
        return out

    def rating_distribution(self) -> dict[str, int]:
        """How many ratings of each value (``"1"``..``"5"``), in order."""
        e = events_table.c
        rating = e.payload["rating"].as_float()
        query = (sa.select(rating.label("rating"), sa.func.count().label("n"))
                 .where(e.event_type == "rating").group_by(rating))
        counts: dict[str, int] = {str(v): 0 for v in range(1, 6)}
        for r in self._rows(query):
            if r.rating is None:
                continue
            key = f"{float(r.rating):g}"
            counts[key] = counts.get(key, 0) + int(r.n)
        return dict(sorted(counts.items(), key=lambda kv: float(kv[0])))

    def new_vs_returning(self, days: int = 30) -> list[dict[str, Any]]:
        """Per day: active users, those seen for the first time (new) and the others.

        "First time" looks at the whole archive, not only the window.
        """
        e = events_table.c
        day = self._day.label("day")
        activity = (sa.select(e.user_id, day).where(e.user_id.is_not(None))
                    .distinct().subquery("activity"))
        first = (sa.select(activity.c.user_id, sa.func.min(activity.c.day).label("first_day"))
                 .group_by(activity.c.user_id).subquery("first"))
        is_new = sa.case((activity.c.day == first.c.first_day, 1), else_=0)
        query = (
            sa.select(activity.c.day, sa.func.count().label("active"),
                      sa.func.sum(is_new).label("new"))
            .select_from(activity.join(first, first.c.user_id == activity.c.user_id))
            .group_by(activity.c.day).order_by(activity.c.day)
        )
        newest = self.newest_day()
        if newest is not None:
            query = query.where(activity.c.day > newest - days)
        return [
            {"day": _day_label(int(r.day)), "active": int(r.active), "new": int(r.new or 0),
             "returning": int(r.active) - int(r.new or 0)}
            for r in self._rows(query)
        ]

    def summary(self) -> dict[str, Any]:
        """Archive size and time span."""
        e = events_table.c
        row = self._rows(sa.select(sa.func.count(), sa.func.min(e.ts), sa.func.max(e.ts),
                                   sa.func.count(sa.distinct(e.user_id))))[0]
        return {"events": int(row[0]), "first_ts": row[1], "last_ts": row[2],
                "users": int(row[3])}
