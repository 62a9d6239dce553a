"""Carts keyed by *shopper* (``u:<id>`` or ``anon:<hex>``), and orders made from them."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Mapping

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from core.errors import InvalidRequest

from .base import SqlAccounts
from .records import Order, OrderLine
from .tables import cart_table, order_lines_table, orders_table

__all__ = ["MAX_QUANTITY", "CartAccounts"]

MAX_QUANTITY = 99


class CartAccounts(SqlAccounts):
    """Carts (a visitor's cart moves into the user's at log-in), checkout and orders."""

    def cart(self, shopper: str) -> dict[str, int]:
        """item id -> quantity, in the order items were added."""
        c = cart_table
        with self._begin("cart") as conn:
            rows = conn.execute(sa.select(c.c.item_id, c.c.quantity)
                                .where(c.c.shopper == shopper)
                                .order_by(c.c.added_at, c.c.item_id))
            return {row.item_id: int(row.quantity) for row in rows}

    def add_to_cart(self, shopper: str, item_id: str, quantity: int = 1) -> int:
        """Add ``quantity`` of an item; return the new quantity (capped at MAX_QUANTITY)."""
        if quantity < 1:
            raise InvalidRequest("the quantity must be at least 1")
        with self._begin("add_to_cart") as conn:
            return self._add(conn, shopper, item_id, quantity)

    def _add(self, conn: Connection, shopper: str, item_id: str, quantity: int) -> int:
        c = cart_table
        insert = self._insert(c).values(shopper=shopper, item_id=item_id,
                                        quantity=min(quantity, MAX_QUANTITY),
                                        added_at=time.time())
        capped = sa.case((c.c.quantity + insert.excluded.quantity > MAX_QUANTITY, MAX_QUANTITY),
                         else_=c.c.quantity + insert.excluded.quantity)
        conn.execute(insert.on_conflict_do_update(index_elements=["shopper", "item_id"],
                                                  set_={"quantity": capped}))
        return int(conn.execute(sa.select(c.c.quantity).where(
            c.c.shopper == shopper, c.c.item_id == item_id)).scalar_one())

    def set_cart_quantity(self, shopper: str, item_id: str, quantity: int) -> None:
        """Set an item's quantity; 0 removes it."""
        c = cart_table
        with self._begin("set_cart_quantity") as conn:
            where = sa.and_(c.c.shopper == shopper, c.c.item_id == item_id)
            if quantity <= 0:
                conn.execute(c.delete().where(where))
            else:
                conn.execute(c.update().where(where)
                             .values(quantity=min(quantity, MAX_QUANTITY)))

    def merge_cart(self, from_shopper: str, to_shopper: str) -> None:
        """Move a visitor's cart into a user's cart (at login)."""
        if from_shopper == to_shopper:
            return
        c = cart_table
        with self._begin("merge_cart") as conn:
            rows = conn.execute(sa.select(c.c.item_id, c.c.quantity)
                                .where(c.c.shopper == from_shopper)).all()
            for row in rows:
                self._add(conn, to_shopper, row.item_id, int(row.quantity))
            conn.execute(c.delete().where(c.c.shopper == from_shopper))

    # --- orders ----------------------------------------------------------------------------
    def checkout(self, user_id: int, shopper: str, prices: Mapping[str, float]) -> Order | None:
        """Turn the cart into an order at ``prices`` and empty it; None for an empty cart.

        Items without a price (no longer in the catalog) stay out of the order.
        """
        c = cart_table
        now = time.time()
        with self._begin("checkout") as conn:
            rows = conn.execute(sa.select(c.c.item_id, c.c.quantity)
                                .where(c.c.shopper == shopper)
                                .order_by(c.c.added_at, c.c.item_id)).all()
            lines = [OrderLine(r.item_id, int(r.quantity), float(prices[r.item_id]))
                     for r in rows if r.item_id in prices]
            conn.execute(c.delete().where(c.c.shopper == shopper))
            if not lines:
                return None
            order_id: int = conn.execute(orders_table.insert()
                                    .values(user_id=user_id, created_at=now)
                                    .returning(orders_table.c.id)).scalar_one()
            conn.execute(order_lines_table.insert(), [
                {"order_id": order_id, "item_id": ln.item_id, "quantity": ln.quantity,
                 "price": ln.price} for ln in lines])
        return Order(int(order_id), now, lines)

    def orders(self, user_id: int, limit: int = 50) -> list[Order]:
        """A user's orders, newest first."""
        o, ln = orders_table, order_lines_table
        with self._begin("orders") as conn:
            heads = conn.execute(sa.select(o.c.id, o.c.created_at).where(o.c.user_id == user_id)
                                 .order_by(o.c.id.desc()).limit(limit)).all()
            lines: dict[int, list[OrderLine]] = defaultdict(list)
            if heads:
                for row in conn.execute(sa.select(ln).where(
                        ln.c.order_id.in_([h.id for h in heads])).order_by(ln.c.item_id)):
                    lines[int(row.order_id)].append(
                        OrderLine(row.item_id, int(row.quantity), float(row.price)))
        return [Order(int(h.id), float(h.created_at), lines[int(h.id)]) for h in heads]

    def baskets(self) -> list[list[str]]:
        """The item ids of every order (for "customers also bought")."""
        ln = order_lines_table
        found: dict[int, list[str]] = defaultdict(list)
        with self._begin("baskets") as conn:
            for row in conn.execute(sa.select(ln.c.order_id, ln.c.item_id)):
                found[int(row.order_id)].append(row.item_id)
        return list(found.values())
