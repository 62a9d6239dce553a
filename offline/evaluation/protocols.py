"""Split protocols: temporal (global time cut), leave-last-one-out, k-fold.

Every protocol yields :class:`Split` objects. Each test log keeps only users
known in the training log (a cold user cannot be personalised; that is a
separate question). For ranking, the harness treats a user's test items that
are not among their training items as relevant, and ranks every item except
the user's training items.

>>> log = Interactions.from_records(
...     [("u", "a", 1, 1), ("u", "b", 1, 2), ("u", "c", 1, 3), ("v", "a", 1, 4)])
>>> split = leave_one_out(log)
>>> split.train.items.tolist(), split.test.items.tolist()
(['a', 'b', 'a'], ['c'])
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from core.errors import ConfigurationError
from core.scoring import Interactions

__all__ = ["PROTOCOLS", "Split", "kfold", "leave_one_out", "splits", "temporal"]

PROTOCOLS = ("temporal", "leave-one-out", "kfold")


@dataclass(frozen=True)
class Split:
    """One train/test pair of a protocol."""

    name: str
    train: Interactions
    test: Interactions


def _known_users_only(train: Interactions, test: Interactions) -> Interactions:
    return test.subset(np.isin(test.users, np.unique(train.users)))


def temporal(log: Interactions, test_fraction: float = 0.2) -> Split:
    """Global cut by time: the last ``test_fraction`` of events (by time) is the test."""
    if not 0 < test_fraction < 1:
        raise ConfigurationError("test_fraction must lie in (0, 1)")
    cut = float(np.quantile(log.timestamps, 1 - test_fraction))
    before = log.timestamps < cut
    train = log.subset(before)
    return Split("temporal", train, _known_users_only(train, log.subset(~before)))


def _last_per_user(log: Interactions) -> npt.NDArray[np.bool_]:
    """Mask of each user's last event (by time, ties broken by log order)."""
    order = np.lexsort((np.arange(len(log)), log.timestamps, log.users))
    users_sorted = log.users[order]
    is_last = np.ones(len(order), dtype=bool)
    is_last[:-1] = users_sorted[:-1] != users_sorted[1:]
    mask = np.zeros(len(log), dtype=bool)
    mask[order[is_last]] = True
    return mask


def leave_one_out(log: Interactions) -> Split:
    """Each user's last event is the test; users with a single event stay in train."""
    last = _last_per_user(log)
    counts = dict(zip(*np.unique(log.users, return_counts=True), strict=True))
    single = np.array([counts[u] == 1 for u in log.users], dtype=bool)
    test_mask = last & ~single
    train = log.subset(~test_mask)
    return Split("leave-one-out", train, log.subset(test_mask))


def kfold(log: Interactions, n_folds: int = 5, random_state: int = 0) -> Iterator[Split]:
    """Random k-fold over events (the rating protocol of MovieLens benchmarks)."""
    if n_folds < 2:
        raise ConfigurationError("kfold needs at least 2 folds")
    rng = np.random.default_rng(random_state)
    fold = rng.permutation(len(log)) % n_folds
    for f in range(n_folds):
        train = log.subset(fold != f)
        yield Split(f"fold-{f + 1}", train, _known_users_only(train, log.subset(fold == f)))


def splits(log: Interactions, protocol: str, *, n_folds: int = 5,
           test_fraction: float = 0.2, random_state: int = 0) -> list[Split]:
    """The splits of a protocol by name."""
    if protocol == "temporal":
        return [temporal(log, test_fraction)]
    if protocol == "leave-one-out":
        return [leave_one_out(log)]
    if protocol == "kfold":
        return list(kfold(log, n_folds, random_state))
    raise ConfigurationError(f"unknown protocol {protocol!r}; choose one of {PROTOCOLS}")

