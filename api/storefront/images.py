"""Product pictures drawn as SVG: the data set has no photos.

Deterministic per product: the colour comes from a hash of the item id, the
shape from the category, the letters from the name. Every text is escaped.

>>> from core.types import Item
>>> svg = product_svg(Item("85123A", "White Hanging <Heart>", "Heart & Wicker"))
>>> svg.startswith("<svg") and "&lt;Heart&gt;" in svg and "WH" in svg
True
>>> svg == product_svg(Item("85123A", "White Hanging <Heart>", "Heart & Wicker"))
True
"""

from __future__ import annotations

import hashlib
import re

from markupsafe import escape

from core.types import Item

__all__ = ["initials", "product_svg"]


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def initials(name: str) -> str:
    """Up to two initials of the first words with letters.

    >>> initials("set of 3 cake tins"), initials("?")
    ('SO', '?')
    """
    words = [w for w in re.findall(r"[A-Za-z]+", name)]
    return "".join(w[0] for w in words[:2]).upper() or name[:1] or "?"


def _shape(kind: int, fill: str) -> str:
    shapes = (
        f'<circle cx="200" cy="170" r="95" fill="{fill}"/>',
        f'<rect x="110" y="80" width="180" height="180" rx="28" fill="{fill}"/>',
        f'<polygon points="200,65 305,170 200,275 95,170" fill="{fill}"/>',
        f'<polygon points="200,70 290,122 290,218 200,270 110,218 110,122" fill="{fill}"/>',
        f'<polygon points="200,62 226,140 308,140 242,188 266,268 200,220 134,268 158,188 '
        f'92,140 174,140" fill="{fill}"/>',
        f'<ellipse cx="200" cy="170" rx="120" ry="80" fill="{fill}"/>',
    )
    return shapes[kind % len(shapes)]


def product_svg(item: Item, size: int = 400) -> str:
    """An SVG picture of ``item`` (400 x 400 user units, scaled to ``size`` px)."""
    h = _hash(item.item_id)
    hue = h % 360
    background = f"hsl({hue}, 55%, 92%)"
    fill = f"hsl({hue}, 50%, 48%)"
    accent = f"hsl({(hue + 40) % 360}, 60%, 70%)"
    shape = _shape(_hash(item.category or item.item_id), fill)
    dots = "".join(
        f'<circle cx="{40 + ((h >> (4 * i)) % 320)}" cy="{30 + ((h >> (4 * i + 2)) % 40)}" '
        f'r="{4 + (h >> i) % 6}" fill="{accent}"/>'
        for i in range(5)
    )
    label = escape(item.category or "")
    name = escape(item.name)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 400 400" width="{size}" '
        f'height="{size}" role="img" aria-label="{name}">'
        f"<title>{name}</title>"
        f'<rect width="400" height="400" fill="{background}"/>'
        f"{dots}{shape}"
        f'<text x="200" y="170" dy="0.35em" text-anchor="middle" font-family="Helvetica, Arial, '
        f'sans-serif" font-size="72" font-weight="700" fill="#fff">{escape(initials(item.name))}'
        f"</text>"
        f'<text x="200" y="330" text-anchor="middle" font-family="Helvetica, Arial, sans-serif" '
        f'font-size="22" fill="hsl({hue}, 35%, 30%)">{label}</text>'
        f"</svg>"
    )
