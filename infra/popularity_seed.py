"""A fresh state starts from the shipped history's popularity, not from nothing.

Without it, the first visitors of ``streamrec demo`` see "Popular right now" lists of
items with score 0.0 and no sources, in item-id order, until the replay has fed
enough purchases. The seed is the decayed purchase popularity at the end of the
history (each purchase weighs what a live one does, halved every ``half_life_s`` of
history time before its end), written as of ``now``: it then decays like any other
weight and live events take over. Applied once per state: a blob records the
history's digest, and a state that has it is left alone (restarts, snapshots).

>>> import pandas as pd
>>> from infra.memory_store import InMemoryStateStore
>>> history = pd.DataFrame({"item_id": ["a", "a", "b"], "timestamp": [0, 100, 100]})
>>> store = InMemoryStateStore()
>>> seed_popularity(store, history, {"a": "Mugs"}, half_life_s=100.0, now=1_000.0,
...                 digest=b"h1")
True
>>> store.top_popular(2).ids, seed_popularity(store, history, {}, 100.0, 1_000.0, b"h1")
(['a', 'b'], False)
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from core.events import Purchased
from core.ports import ALL_ITEMS, StateStore, StateUpdate, category_scope
from offline.catalog import PURCHASES_FILE

__all__ = ["SEED_BLOB", "history_digest", "seed_popularity"]

#: The blob that marks a state as seeded (its value: the history's digest).
SEED_BLOB = "seed.popularity"


def history_digest(data_dir: Path) -> bytes:
    """SHA-256 of the shipped purchase history file (hex, as bytes)."""
    digest = hashlib.sha256()
    with open(Path(data_dir) / PURCHASES_FILE, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest().encode()


def _weights(purchases: pd.DataFrame, half_life_s: float) -> pd.Series:
    ts = purchases["timestamp"].to_numpy(dtype=np.float64)
    decay = np.exp2(-(ts.max() - ts) / half_life_s) * Purchased.weight
    return pd.Series(decay, index=purchases["item_id"].astype(str)).groupby(level=0).sum()


def seed_popularity(
    store: StateStore, purchases: pd.DataFrame, categories: Mapping[str, str],
    half_life_s: float, now: float, digest: bytes,
) -> bool:
    """Write the history's popularity (all items and per category) as of ``now``.

    ``purchases`` needs ``item_id`` and ``timestamp`` (Unix seconds). Returns False
    (and writes nothing) when this state was already seeded from ``digest``.
    """
    if purchases.empty or store.get_blob(SEED_BLOB) == digest:
        return False
    weights = {item: float(w) for item, w in _weights(purchases, half_life_s).items() if w > 0}
    scopes: dict[str, dict[str, float]] = {ALL_ITEMS: weights}
    for item, weight in weights.items():
        category = categories.get(item)
        if category:
            scopes.setdefault(category_scope(category), {})[item] = weight
    store.apply(StateUpdate(popularity=scopes, popularity_at=now, blobs={SEED_BLOB: digest}))
    return True
