"""The storefront: server-rendered shop pages with a live recommendation panel.

Register ``bp`` on the app (``create_app`` does). Routes: ``/``, ``/signup``,
``/login``, ``/logout``, ``/profile``, ``/category/<name>``, ``/search``,
``/product/<id>``, ``/product/<id>/image.svg``, ``/product/<id>/rate``,
``/cart``, ``/cart/add``, ``/cart/update``, ``/checkout`` and the small JSON
routes ``/shop-api/trending`` and ``/shop-api/interests`` the panel polls.
"""

from __future__ import annotations

from . import account_views, shop_views
from .blueprint import bp

__all__ = ["account_views", "bp", "shop_views"]
