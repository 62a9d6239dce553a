"""What the storefront computes once per app: search index, categories, co-purchases."""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

from core.types import Item
from infra.accounts import AccountStore, CoPurchases, load_co_purchases

from .search import ProductSearch

__all__ = ["StorefrontState"]

log = logging.getLogger(__name__)


class StorefrontState:
    """Lazily built, per-app storefront data (kept in ``app.extensions["storefront"]``).

    Each part is built on first use and rebuilt when the catalog's size changes
    (items arrive through catalog upserts).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._search: ProductSearch | None = None
        self._categories: list[tuple[str, int]] | None = None
        self._catalog_size = -1
        self._co_purchases: CoPurchases | None = None

    def _refresh(self, catalog: Mapping[str, Item]) -> None:
        if len(catalog) != self._catalog_size:
            self._search = None
            self._categories = None
            self._catalog_size = len(catalog)

    def search(self, catalog: Mapping[str, Item]) -> ProductSearch:
        with self._lock:
            self._refresh(catalog)
            if self._search is None:
                self._search = ProductSearch(list(catalog.values()))
            return self._search

    def categories(self, catalog: Mapping[str, Item]) -> list[tuple[str, int]]:
        """(category, number of items), by name."""
        with self._lock:
            self._refresh(catalog)
            if self._categories is None:
                counts = Counter(item.category for item in catalog.values() if item.category)
                self._categories = sorted(counts.items())
            return self._categories

    def co_purchases(self, data_dir: Path, catalog: Mapping[str, Item],
                     accounts: AccountStore | None) -> CoPurchases:
        """The shipped history's co-purchases plus every storefront order, built once."""
        with self._lock:
            if self._co_purchases is None:
                table = load_co_purchases(data_dir, keep=catalog.keys())
                if accounts is not None:
                    for basket in accounts.baskets():
                        table.add_basket(basket)
                log.info("co-purchases ready for %d items", len(table))
                self._co_purchases = table
            return self._co_purchases

    def record_basket(self, item_ids: list[str]) -> None:
        """Count a new order, when the table is built (a later build reads every order)."""
        with self._lock:
            if self._co_purchases is not None:
                self._co_purchases.add_basket(item_ids)
