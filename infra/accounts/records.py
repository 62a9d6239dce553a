"""What the account store hands out: frozen records, no database handles."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Order", "OrderLine", "RatingSummary", "Review", "User"]


@dataclass(frozen=True, slots=True)
class User:
    id: int
    username: str
    created_at: float
    categories: tuple[str, ...] = ()

    @property
    def shopper_id(self) -> str:
        """The stable id of this user in events and carts."""
        return f"u:{self.id}"


@dataclass(frozen=True, slots=True)
class Review:
    username: str
    item_id: str
    rating: int
    review: str
    updated_at: float


@dataclass(frozen=True, slots=True)
class RatingSummary:
    average: float | None
    count: int


@dataclass(frozen=True, slots=True)
class OrderLine:
    item_id: str
    quantity: int
    price: float


@dataclass(frozen=True)
class Order:
    id: int
    created_at: float
    lines: list[OrderLine]

    @property
    def total(self) -> float:
        return round(sum(line.quantity * line.price for line in self.lines), 2)
