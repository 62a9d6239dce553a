"""Metric functions against examples computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from offline.evaluation.metrics import (
    average_precision_at_k,
    catalog_coverage,
    f1_at_k,
    hit_matrix,
    hit_rate_at_k,
    mae,
    ndcg_at_k,
    novelty,
    precision_at_k,
    recall_at_k,
    rmse,
)

# user 0: list [a, b, c, d], relevant {b, d, z} -> hits at ranks 2 and 4
# user 1: list [e, f, g, h], relevant {e}       -> hit at rank 1
# user 2: list [i, j, k, l], relevant {}        -> no relevant items
RECS = [["a", "b", "c", "d"], ["e", "f", "g", "h"], ["i", "j", "k", "l"]]
REL = [{"b", "d", "z"}, {"e"}, set()]
HITS = hit_matrix(RECS, REL, 4)
NREL = np.array([3, 1, 0])


def test_hit_matrix_marks_relevant_ranks() -> None:
    assert HITS.tolist() == [
        [False, True, False, True],
        [True, False, False, False],
        [False, False, False, False],
    ]


def test_precision_is_hits_over_k() -> None:
    assert precision_at_k(HITS).tolist() == [0.5, 0.25, 0.0]


def test_recall_is_hits_over_relevant_and_zero_without_relevant() -> None:
    assert recall_at_k(HITS, NREL) == pytest.approx([2 / 3, 1.0, 0.0])


def test_f1_is_harmonic_mean_of_precision_and_recall() -> None:
    # user 0: p = 1/2, r = 2/3 -> 2 * (1/3) / (7/6) = 4/7; user 1: p = 1/4, r = 1 -> 0.4
    assert f1_at_k(HITS, NREL) == pytest.approx([4 / 7, 0.4, 0.0])


def test_average_precision_divides_by_min_of_relevant_and_k() -> None:
    # user 0: (1/2 + 2/4) / min(3, 4) = 1/3; user 1: 1/1 / 1 = 1
    assert average_precision_at_k(HITS, NREL) == pytest.approx([1 / 3, 1.0, 0.0])


def test_ndcg_uses_log2_discount_and_ideal_of_min_relevant_k() -> None:
    dcg0 = 1 / math.log2(3) + 1 / math.log2(5)
    idcg0 = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert ndcg_at_k(HITS, NREL) == pytest.approx([dcg0 / idcg0, 1.0, 0.0])


def test_ndcg_is_one_for_a_perfect_list() -> None:
    hits = np.array([[True, True, False]])
    assert ndcg_at_k(hits, np.array([2]))[0] == pytest.approx(1.0)


def test_hit_rate_is_one_when_any_hit() -> None:
    assert hit_rate_at_k(HITS).tolist() == [1.0, 1.0, 0.0]


def test_metrics_at_smaller_k_use_the_prefix() -> None:
    hits2 = HITS[:, :2]
    assert precision_at_k(hits2).tolist() == [0.5, 0.5, 0.0]
    assert recall_at_k(hits2, NREL) == pytest.approx([1 / 3, 1.0, 0.0])


def test_catalog_coverage_counts_distinct_recommended_items() -> None:
    assert catalog_coverage(RECS, 24) == pytest.approx(12 / 24)
    assert catalog_coverage([["a"], ["a"]], 4) == pytest.approx(0.25)


def test_novelty_is_mean_self_information() -> None:
    # p = 1/2 -> 1 bit, p = 1/8 -> 3 bits
    assert novelty(np.array([0.5, 0.125])) == pytest.approx(2.0)


def test_rmse_and_mae_by_hand() -> None:
    truth, pred = [4.0, 3.0, 5.0, 1.0], [3.5, 3.0, 4.0, 3.0]
    # errors 0.5, 0, 1, 2 -> squares 0.25, 0, 1, 4
    assert rmse(truth, pred) == pytest.approx(math.sqrt(5.25 / 4))
    assert mae(truth, pred) == pytest.approx(3.5 / 4)
