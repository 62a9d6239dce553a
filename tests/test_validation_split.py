"""The shared validation split: normal logs, tied timestamps, logs with no usable order."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from core.scoring import Interactions
from offline.evaluation.validation import has_usable_order, validation_split


def _pairs(log: Interactions) -> list[tuple[str, str]]:
    return sorted(zip(log.users.tolist(), log.items.tolist(), strict=True))


def _shuffled(log: Interactions, seed: int) -> Interactions:
    return log.subset(np.random.default_rng(seed).permutation(len(log)))


def test_leave_one_out_holds_out_each_users_last_event_when_times_are_distinct() -> None:
    log = Interactions.from_records(
        [("u", "a", 1, 1), ("u", "b", 1, 2), ("u", "c", 1, 3),
         ("v", "c", 1, 4), ("v", "a", 1, 9)])
    fit, holdout, info = validation_split(log, "leave-one-out")
    assert _pairs(holdout) == [("u", "c"), ("v", "a")]
    assert len(fit) == 3
    assert (info.rule, info.tied_users, info.unordered_users) == ("last-timestamp-group", 0, 0)


def test_temporal_holds_out_the_latest_tenth_and_a_tie_at_the_cut_whole() -> None:
    rows = [(f"u{n % 5}", f"i{n}", 1, float(n)) for n in range(100)]
    rows += [("u0", "late", 1, 95.0)]  # ties with an event at the cut
    fit, holdout, info = validation_split(Interactions.from_records(rows), "temporal")
    assert info.rule == "temporal-cut"
    assert fit.timestamps.max() < holdout.timestamps.min()
    assert {"i95", "late"} <= set(holdout.items.tolist())
    assert 9 <= len(holdout) <= 12


def test_a_tied_last_group_is_held_out_whole_whatever_the_file_order() -> None:
    # u bought a, b (one basket), then c, d, e in one basket at t=5
    rows = [("u", "a", 1, 1), ("u", "b", 1, 1), ("u", "c", 1, 5), ("u", "d", 1, 5),
            ("u", "e", 1, 5), ("v", "a", 1, 2), ("v", "c", 1, 3)]
    log = Interactions.from_records(rows)
    holdouts = {tuple(_pairs(validation_split(_shuffled(log, s), "leave-one-out").holdout))
                for s in range(6)}
    assert holdouts == {(("u", "c"), ("u", "d"), ("u", "e"), ("v", "c"))}
    info = validation_split(log, "leave-one-out").info
    assert info.tied_users == 1
    # no basket mate of a held-out item stays in the fitted history
    fit = validation_split(log, "leave-one-out").fit
    assert _pairs(fit) == [("u", "a"), ("u", "b"), ("v", "a")]


def test_a_user_whose_events_all_tie_gets_one_random_item_held_out() -> None:
    rows = [("u", "a", 1, 1), ("u", "b", 1, 2),            # ordered
            ("w", "x", 1, 7), ("w", "y", 1, 7), ("w", "z", 1, 7)]  # one basket only
    log = Interactions.from_records(rows)
    _, holdout, info = validation_split(log, "leave-one-out", seed=3)
    held_w = [i for u, i in _pairs(holdout) if u == "w"]
    assert len(held_w) == 1 and held_w[0] in {"x", "y", "z"}
    assert info.unordered_users == 1
    assert _pairs(validation_split(_shuffled(log, 1), "leave-one-out", seed=3).holdout) \
        == _pairs(holdout)


@pytest.mark.parametrize("protocol", ["temporal", "leave-one-out"])
def test_a_log_without_order_holds_out_one_random_item_per_user_and_says_so(
        protocol: str, caplog: pytest.LogCaptureFixture) -> None:
    rows = [(f"u{u}", f"i{(u + j) % 20}", 1, 0.0) for u in range(30) for j in range(4)]
    rows += [("solo", "i1", 1, 0.0)]  # a single item: nothing to hold out
    log = Interactions.from_records(rows)
    with caplog.at_level(logging.WARNING, logger="offline.evaluation.validation"):
        fit, holdout, info = validation_split(log, protocol, seed=0)
    assert info.rule == "random-item-per-user"
    assert "no usable order" in info.note and "no usable order" in caplog.text
    users = holdout.users.tolist()
    assert len(users) == len(set(users)) == 30
    assert "solo" in fit.users.tolist()
    # the seed fixes the draw, and the draw does not depend on the file order
    assert _pairs(validation_split(_shuffled(log, 2), protocol, seed=0).holdout) \
        == _pairs(holdout)
    assert _pairs(validation_split(log, protocol, seed=1).holdout) != _pairs(holdout)


def test_one_constant_timestamp_per_user_is_no_usable_order() -> None:
    per_user = Interactions.from_records(
        [(f"u{u}", f"i{j}", 1, float(u)) for u in range(5) for j in range(3)])
    assert not has_usable_order(per_user)
    assert validation_split(per_user, "temporal").info.rule == "random-item-per-user"


def test_kfold_validates_on_a_random_item_per_user_without_a_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    log = Interactions.from_records(
        [(f"u{u}", f"i{j}", 1, float(j)) for u in range(5) for j in range(3)])
    with caplog.at_level(logging.WARNING):
        _, holdout, info = validation_split(log, "kfold")
    assert info.rule == "random-item-per-user" and info.note == "" and not caplog.text
    assert len(holdout) == 5
