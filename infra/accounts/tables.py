"""The accounts schema (SQLAlchemy Core): one ``MetaData`` for every accounts table."""

from __future__ import annotations

import sqlalchemy as sa

__all__ = [
    "cart_table",
    "metadata",
    "order_lines_table",
    "orders_table",
    "ratings_table",
    "user_categories_table",
    "user_sessions_table",
    "users_table",
]

metadata = sa.MetaData()

users_table = sa.Table(
    "users",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("username", sa.String(64), nullable=False, unique=True),  # stored lower-case
    sa.Column("password_hash", sa.String(512), nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
)

user_categories_table = sa.Table(
    "user_categories",
    metadata,
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("category", sa.String(200), primary_key=True),
)

# A table of its own (not a column of users), so an existing database gains it from
# create_schema without a migration.
user_sessions_table = sa.Table(
    "user_sessions",
    metadata,
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("generation", sa.Integer, nullable=False),
)

ratings_table = sa.Table(
    "ratings",
    metadata,
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("item_id", sa.String(128), primary_key=True),
    sa.Column("rating", sa.SmallInteger, nullable=False),
    sa.Column("review", sa.Text, nullable=False, default=""),
    sa.Column("updated_at", sa.Double, nullable=False),
    sa.Index("ix_ratings_item", "item_id"),
)

cart_table = sa.Table(
    "cart_lines",
    metadata,
    sa.Column("shopper", sa.String(128), primary_key=True),
    sa.Column("item_id", sa.String(128), primary_key=True),
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.Column("added_at", sa.Double, nullable=False),
)

orders_table = sa.Table(
    "orders",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"),
              nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Index("ix_orders_user", "user_id"),
)

order_lines_table = sa.Table(
    "order_lines",
    metadata,
    sa.Column("order_id", sa.Integer, sa.ForeignKey("orders.id", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("item_id", sa.String(128), primary_key=True),
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.Column("price", sa.Double, nullable=False),
)
