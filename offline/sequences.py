"""Per-user item sequences of an interaction log, for the sequential model.

Order: by timestamp; events with equal timestamps keep their order in the log
(file order), the same tie rule as the leave-last-one-out protocol. A repeated
item keeps only its latest position, because that is what the state store hands
the online model at request time (``StateStore.recent_items``: newest first,
without repeats): training and serving then see sequences of the same kind.

>>> log = Interactions.from_records([("u", "a", 1, 1), ("u", "b", 1, 1), ("v", "c", 1, 0),
...                                  ("u", "a", 1, 2), ("u", "c", 1, 3)])
>>> user_sequences(log)
{'u': ['b', 'a', 'c'], 'v': ['c']}
>>> auto_max_len({f"u{n}": ["a"] * n for n in range(1, 101)})   # 95% of users fit
96
>>> training_windows([list("abcdefg"), list("xy")], max_len=3)
[['d', 'e', 'f', 'g'], ['a', 'b', 'c', 'd'], ['x', 'y']]
"""

from __future__ import annotations

import numpy as np

from core.scoring import Interactions

__all__ = ["auto_max_len", "has_order", "training_windows", "user_sequences"]

#: Sequence-length bounds of :func:`auto_max_len` (attention costs grow with its square).
MIN_LEN, MAX_LEN = 10, 200


def user_sequences(log: Interactions) -> dict[str, list[str]]:
    """Each user's items, oldest first, repeats collapsed to their latest position."""
    order = np.lexsort((np.arange(len(log)), log.timestamps, log.users))
    users, items = log.users[order].tolist(), log.items[order].tolist()
    out: dict[str, list[str]] = {}
    for user, item in zip(users, items, strict=True):
        out.setdefault(user, []).append(item)
    # dict.fromkeys on the reversed list keeps each item's latest occurrence.
    return {u: list(dict.fromkeys(reversed(seq)))[::-1] for u, seq in out.items()}


def auto_max_len(sequences: dict[str, list[str]], quantile: float = 0.95) -> int:
    """The sequence length the model attends over: the ``quantile`` of the users' lengths.

    Most users then keep their whole history; the long tail is cut to its latest
    items, which carry most of the signal for the next one.
    """
    lengths = np.array([len(s) for s in sequences.values()] or [1])
    return int(np.clip(np.ceil(np.quantile(lengths, quantile)), MIN_LEN, MAX_LEN))


def has_order(log: Interactions) -> bool:
    """False when every timestamp is equal: the log then carries no usable order."""
    return len(log) > 0 and bool(np.ptp(log.timestamps) > 0)


def training_windows(sequences: list[list[str]], max_len: int) -> list[list[str]]:
    """Training sequences that cover every transition of sequences longer than the model.

    The network attends over ``max_len`` items, so one training row holds
    ``max_len + 1`` items (``max_len`` next-item targets). Cutting a long history
    to its latest row would never train its older transitions; instead it is
    split into rows from the newest backwards, each sharing its first item with
    the last of the row before it, so every transition is a target exactly once.
    Sequences of fewer than two items hold no transition and are left out.
    """
    out: list[list[str]] = []
    for seq in sequences:
        end = len(seq)
        while end > 1:
            out.append(seq[max(0, end - max_len - 1):end])
            end -= max_len
    return out
