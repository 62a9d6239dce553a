"""Business rules and request filters: ONE filter object, used by the pipeline and by the
degraded path (which cannot know what a user has seen, but applies everything else).

>>> from core.types import Item
>>> rules = CandidateFilter(Rules(excluded_categories=frozenset({"Gift"})))
>>> allowed = rules.allowed(RecRequest("u", 5, max_price=2.0, context_item="c"))
>>> [allowed(i) for i in (Item("a", "A", "Mugs", 1.0), Item("b", "B", "Gift", 1.0),
...                        Item("c", "C", "Mugs", 1.0), Item("d", "D", "Mugs", 9.0))]
[True, False, False, False]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from core.ports import RecRequest
from core.types import Item

__all__ = ["CandidateFilter", "Rules"]


@dataclass(frozen=True)
class Rules:
    """Business rules applied after blending."""

    exclude_purchased: bool = True
    excluded_categories: frozenset[str] = frozenset()
    #: At most this many items of one category in a list (0 = no cap).
    max_per_category: int = 0


class CandidateFilter:
    """Whether an item may be shown for a request: in stock, not of an excluded category,
    within the request's category and price range, not the item being viewed.

    What a user has seen or bought is excluded before scoring (it comes with their state);
    this object holds every rule that needs only the item and the request.
    """

    def __init__(self, rules: Rules | None = None) -> None:
        self.rules = rules or Rules()

    def __repr__(self) -> str:
        return f"CandidateFilter({self.rules!r})"

    def allowed(self, request: RecRequest | None) -> Callable[[Item], bool]:
        """The filter of one request (``None``: the rules alone)."""
        excluded = self.rules.excluded_categories
        if request is None:
            return lambda item: item.in_stock and item.category not in excluded
        category, lo, hi = request.category, request.min_price, request.max_price
        context = request.context_item

        def allowed(item: Item) -> bool:
            return (
                item.in_stock
                and item.category not in excluded
                and (category is None or item.category == category)
                and (lo is None or item.price >= lo)
                and (hi is None or item.price <= hi)
                and item.item_id != context
            )

        return allowed
