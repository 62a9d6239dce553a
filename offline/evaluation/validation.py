"""The one validation split every self-tuning model uses (EASE's lambda, the hybrid's
weights, the ranker's trees, the served pipeline's settings).

It is carved from the *training* part only, so tuning never sees the test split, and it
imitates the test protocol, with rules for logs whose order is partly or wholly unknown:

``temporal``
    A global cut by time: events strictly before the 90th percentile of the training
    timestamps are fitted on, the rest held out (like the test split, a timestamp tied at
    the cut is held out whole).
``leave-one-out``
    Each user's *last timestamp group* is held out: all of the user's events that share
    their newest timestamp. Events that share a timestamp are one basket or one session
    whose internal order the log does not know (the file order of a shop export says
    nothing). Holding out one of them would leave its basket mates in the fitted history,
    and predicting an item from its own basket is far easier than predicting the next
    visit, which is what the test asks (a temporal test never shares a timestamp with the
    training part; a leave-one-out test shares one only when the log ties). Validation
    then overrates co-occurrence sources and tunes them too high: on a shop log with tied
    timestamps, holding out the file's last row gave validation NDCG@10 0.083 against
    0.043 on test. A user whose every event shares one timestamp has no order: one of
    their items, drawn with the seed, is held out instead.
``kfold`` (or any log without a usable order)
    One random item per user (users with at least two distinct items), drawn with the
    seed. A log has no usable order when no user has events at two different timestamps
    (all timestamps equal, or one constant timestamp per user); this is logged.

>>> log = Interactions.from_records(
...     [("u", "a", 1, 1), ("u", "b", 1, 2), ("u", "c", 1, 3), ("u", "d", 1, 3),
...      ("v", "a", 1, 1), ("v", "b", 1, 5)])
>>> fit, holdout, info = validation_split(log, "leave-one-out")
>>> sorted(zip(holdout.users.tolist(), holdout.items.tolist()))
[('u', 'c'), ('u', 'd'), ('v', 'b')]
>>> info.rule, info.tied_users
('last-timestamp-group', 1)
>>> unordered = Interactions(log.users, log.items, log.values, log.timestamps * 0)
>>> fit, holdout, info = validation_split(unordered, "temporal", seed=0)
>>> info.rule, holdout.users.tolist()
('random-item-per-user', ['u', 'v'])
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
import pandas as pd

from core.scoring import Interactions

__all__ = ["VALIDATION_FRACTION", "ValidationInfo", "ValidationSplit", "has_usable_order",
           "validation_split"]

log = logging.getLogger(__name__)

#: Share of the training events (the latest) held out by the temporal rule.
VALIDATION_FRACTION = 0.1


@dataclass(frozen=True)
class ValidationInfo:
    """How the slice was carved (models report it next to what they tuned).

    ``rule`` is ``temporal-cut``, ``last-timestamp-group`` or ``random-item-per-user``;
    ``tied_users`` counts users whose held-out group held several events; ``unordered_users``
    those with no order at all (one of their items drawn at random); ``note`` says why a
    fallback was taken (empty when none was).
    """

    rule: str
    fit_events: int
    holdout_events: int
    holdout_users: int
    tied_users: int = 0
    unordered_users: int = 0
    note: str = ""

    def as_dict(self) -> dict[str, str | int]:
        return {k: v for k, v in vars(self).items() if v != ""}


class ValidationSplit(NamedTuple):
    """``(fit_part, holdout, info)``: the part models fit on, the held-out events."""

    fit: Interactions
    holdout: Interactions
    info: ValidationInfo


def has_usable_order(train: Interactions) -> bool:
    """True when some user has events at two different timestamps.

    >>> has_usable_order(Interactions.from_records([("u", "a", 1, 0), ("u", "b", 1, 0),
    ...                                             ("v", "a", 1, 7)]))
    False
    """
    if len(train) < 2:
        return False
    order = np.lexsort((train.timestamps, train.users))
    users, stamps = train.users[order], train.timestamps[order]
    same_user = users[1:] == users[:-1]
    return bool(np.any(same_user & (stamps[1:] != stamps[:-1])))


def _split(train: Interactions, held: npt.NDArray[np.bool_], info: ValidationInfo
           ) -> ValidationSplit:
    fit = train.subset(~held)
    holdout = train.subset(held)
    # like the test split: only users the fit part knows can be validated
    holdout = holdout.subset(np.isin(holdout.users, np.unique(fit.users)))
    info = ValidationInfo(**{**vars(info), "fit_events": len(fit),
                             "holdout_events": len(holdout),
                             "holdout_users": len(np.unique(holdout.users))})
    return ValidationSplit(fit, holdout, info)


def _random_item_mask(train: Interactions, users: npt.NDArray[np.bool_], seed: int
                      ) -> npt.NDArray[np.bool_]:
    """Hold out every event of one random distinct item of each selected user that has
    at least two distinct items (``users`` masks the events of the users to consider).

    Pairs are drawn in sorted order, so the draw does not depend on the file's row order.
    """
    frame = pd.DataFrame({"user": train.users, "item": train.items})[users]
    pairs = frame.drop_duplicates().sort_values(["user", "item"], kind="stable")
    pairs = pairs[pairs.groupby("user")["item"].transform("size") >= 2]
    pairs = pairs.assign(key=np.random.default_rng(seed).random(len(pairs)))
    chosen = pairs.sort_values(["user", "key"], kind="stable").groupby("user").head(1)
    keys = pd.MultiIndex.from_arrays([train.users, train.items])
    held = keys.isin(pd.MultiIndex.from_frame(chosen[["user", "item"]]))
    return np.asarray(held, dtype=bool) & users


def _random_per_user(train: Interactions, seed: int, note: str) -> ValidationSplit:
    if note:
        log.warning("validation split: %s; holding out one random item per user (seed %d)",
                    note, seed)
    held = _random_item_mask(train, np.ones(len(train), dtype=bool), seed)
    users = len(np.unique(train.users))
    return _split(train, held, ValidationInfo("random-item-per-user", 0, 0, 0,
                                              unordered_users=users, note=note))


def _temporal(train: Interactions) -> ValidationSplit:
    cut = float(np.quantile(train.timestamps, 1 - VALIDATION_FRACTION))
    return _split(train, train.timestamps >= cut, ValidationInfo("temporal-cut", 0, 0, 0))


def _last_group(train: Interactions, seed: int) -> ValidationSplit:
    order = np.lexsort((train.timestamps, train.users))
    users, stamps = train.users[order], train.timestamps[order]
    last_of_user = np.ones(len(order), dtype=bool)
    last_of_user[:-1] = users[:-1] != users[1:]
    newest = dict(zip(users[last_of_user].tolist(), stamps[last_of_user].tolist(),
                      strict=True))
    oldest = dict(zip(users[::-1].tolist(), stamps[::-1].tolist(), strict=True))
    newest_ts = np.array([newest[u] for u in train.users.tolist()])
    in_group = train.timestamps == newest_ts
    unordered = np.array([oldest[u] == newest[u] for u in train.users.tolist()], dtype=bool)
    held = in_group & ~unordered
    held |= _random_item_mask(train, unordered, seed)
    group_sizes = np.unique(train.users[held & ~unordered], return_counts=True)[1]
    info = ValidationInfo("last-timestamp-group", 0, 0, 0,
                          tied_users=int(np.sum(group_sizes > 1)),
                          unordered_users=len(np.unique(train.users[unordered])))
    return _split(train, held, info)


def validation_split(train: Interactions, protocol: str, seed: int = 0) -> ValidationSplit:
    """Carve a validation slice from a training log (see the module docstring).

    Parameters
    ----------
    train
        The training part of a test split (never the test part).
    protocol
        The test protocol to imitate: ``temporal``, ``leave-one-out`` or ``kfold``.
    seed
        Draws the random items of the fallbacks.
    """
    if not has_usable_order(train):
        return _random_per_user(train, seed, "the log carries no usable order (no user has "
                                             "events at two different timestamps)")
    if protocol == "temporal":
        return _temporal(train)
    if protocol == "leave-one-out":
        return _last_group(train, seed)
    return _random_per_user(train, seed, "")
