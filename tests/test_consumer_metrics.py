"""The consumers' batch histogram and GC tuning."""

from __future__ import annotations

import gc

import numpy as np
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from consumers.app import GC_YOUNG_THRESHOLD, tuned_gc
from consumers.metrics import FRESHNESS_BUCKETS, BatchHistogram


def test_batch_histogram_exposes_what_a_prometheus_histogram_would() -> None:
    values = [0.0, 0.005, 0.0051, 0.2, 0.25, 3.0, 100.0,
              *np.random.default_rng(0).exponential(0.05, 500).tolist()]
    theirs, mine = CollectorRegistry(), CollectorRegistry()
    reference = Histogram("streamrec_freshness_seconds", "doc", buckets=FRESHNESS_BUCKETS,
                          registry=theirs)
    for value in values:
        reference.observe(value)
    batch = BatchHistogram("streamrec_freshness_seconds", "doc", FRESHNESS_BUCKETS, mine)
    batch.observe_many(values[:100])
    batch.observe_many(values[100:-1])
    batch.observe(values[-1])
    expected = [line for line in generate_latest(theirs).decode().splitlines()
                if "_created" not in line]
    got = generate_latest(mine).decode().splitlines()
    # Same series and counts; the sum only to float rounding (it is added per batch).
    assert [line.rsplit(" ", 1)[0] for line in got] == [
        line.rsplit(" ", 1)[0] for line in expected]
    assert [line for line in got if "_sum" not in line] == [
        line for line in expected if "_sum" not in line]


def test_tuned_gc_collects_less_inside_and_restores_the_settings_after() -> None:
    before = gc.get_threshold()
    with tuned_gc():
        assert gc.get_threshold()[0] == GC_YOUNG_THRESHOLD
        assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
