"""Human reasons for recommended items, from the per-source scores the API returns.

``static/shop.js`` holds the same table for the live panel; keep them in step.

>>> reason({"content": 0.8, "popularity": 0.3})
'Similar to what you viewed'
>>> reason({"popularity": 0.9})
'Popular now'
>>> reason({})
'Picked for you'
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["REASONS", "reason"]

#: source name -> what a shopper reads; unknown sources read "Picked for you".
REASONS: dict[str, str] = {
    "content": "Similar to what you viewed",
    "popularity": "Popular now",
    "trending": "Trending now",
    "covisit": "Often viewed together",
    "co_visitation": "Often viewed together",
    "collaborative": "Shoppers like you chose this",
    "cf": "Shoppers like you chose this",
    "als": "Shoppers like you chose this",
    "rating": "Matches your ratings",
    "mf": "Matches your ratings",
    "interest": "Popular in a category you like",
}


def reason(sources: Mapping[str, float]) -> str:
    """The reason of the source that contributed most (ties: the first listed)."""
    if not sources:
        return "Picked for you"
    best = max(sources, key=lambda name: sources[name])
    return REASONS.get(best, "Picked for you")
