"""Customers also bought: item -> items bought in the same basket."""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy import sparse

from core.errors import DataNotFound

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["CoPurchases", "load_co_purchases"]


class CoPurchases:
    """Item -> items bought in the same basket, counted over baskets.

    Built once from the shipped purchase history (sparse basket x item product),
    then extended with every new order of the storefront.

    Parameters
    ----------
    top_n
        How many partners each item keeps from the history.

    Examples
    --------
    >>> co = CoPurchases()
    >>> co.add_basket(["a", "b", "c"])
    >>> co.add_basket(["a", "b"])
    >>> co.also_bought("a", 5)
    [('b', 2), ('c', 1)]
    """

    def __init__(self, top_n: int = 20) -> None:
        self.top_n = top_n
        self._base: dict[str, dict[str, int]] = {}
        self._live: dict[str, Counter[str]] = defaultdict(Counter)
        self._lock = threading.Lock()

    def fit_baskets(self, basket_ids: Sequence[str], item_ids: Sequence[str],
                    keep: Iterable[str] | None = None) -> None:
        """Count co-purchases over parallel arrays (basket of each line, item of each line)."""
        import pandas as pd

        lines = pd.DataFrame({"b": basket_ids, "i": item_ids})
        if keep is not None:
            lines = lines[lines["i"].isin(set(keep))]
        lines = lines.drop_duplicates()
        if lines.empty:
            self._base = {}
            return
        b_codes, _ = pd.factorize(lines["b"])
        i_codes, items = pd.factorize(lines["i"])
        ones = np.ones(len(lines), dtype=np.float32)
        matrix = sparse.csr_matrix((ones, (b_codes, i_codes)),
                                   shape=(int(b_codes.max()) + 1, len(items)))
        co = (matrix.T @ matrix).tocsr()
        co.setdiag(0)
        co.eliminate_zeros()
        base: dict[str, dict[str, int]] = {}
        for row in range(co.shape[0]):
            start, end = co.indptr[row], co.indptr[row + 1]
            if start == end:
                continue
            counts, cols = co.data[start:end], co.indices[start:end]
            best = np.argsort(-counts, kind="stable")[: self.top_n]
            base[str(items[row])] = {str(items[cols[j]]): int(counts[j]) for j in best}
        self._base = base

    def add_basket(self, item_ids: Iterable[str]) -> None:
        """Count one new basket."""
        unique = list(dict.fromkeys(item_ids))
        with self._lock:
            for a in unique:
                for b in unique:
                    if a != b:
                        self._live[a][b] += 1

    def also_bought(self, item_id: str, n: int) -> list[tuple[str, int]]:
        """Up to ``n`` partners of ``item_id`` with their counts, most frequent first."""
        with self._lock:
            merged = Counter(self._base.get(item_id, {}))
            merged.update(self._live.get(item_id, {}))
        return sorted(merged.items(), key=lambda kv: (-kv[1], kv[0]))[:n]

    def __len__(self) -> int:
        return len(self._base.keys() | self._live.keys())


def load_co_purchases(data_dir: Path, keep: Iterable[str] | None = None,
                      top_n: int = 20) -> CoPurchases:
    """Co-purchases of the shipped purchase history (baskets = invoices).

    Returns an empty table when the data set is not there.
    """
    from offline.catalog import load_purchases

    table = CoPurchases(top_n)
    try:
        frame: pd.DataFrame = load_purchases(data_dir)
    except DataNotFound:
        return table
    table.fit_baskets(frame["invoice"].to_numpy(), frame["item_id"].to_numpy(), keep)
    return table
