"""The prequential replay runs end to end on real services and scores every model."""

from __future__ import annotations

import numpy as np
import pytest

from cli.replay_eval import run_replay
from core.scoring import Interactions
from core.settings import Settings
from core.types import Item
from offline.datasets import Dataset

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_the_replay_scores_static_and_streaming_models_on_every_new_item_event(
    kafka_bootstrap: str, redis_url: str
) -> None:
    rng = np.random.default_rng(0)
    items = [Item(f"i{n}", f"{['red', 'blue', 'green'][n % 3]} mug {n}", f"c{n % 3}")
             for n in range(60)]
    records = [(f"u{rng.integers(40)}", f"i{rng.integers(60)}", 1.0, float(t))
               for t in range(900)]
    dataset = Dataset("tiny", Interactions.from_records(records), items)
    report = run_replay(dataset, stream_events=100, chunk=50, k=10, progress=False,
                        base=Settings(kafka_bootstrap=kafka_bootstrap, redis_url=redis_url))
    assert report["train_events"] == 800 and report["stream_events"] == 100
    assert set(report["models"]) == {"static_als", "static_ease", "static_served",
                                     "streaming_als", "streaming_hybrid"}
    scored = {m["events"] for m in report["models"].values()}
    assert len(scored) == 1 and 0 < scored.pop() <= 100  # every model scored the same events
    for metrics in report["models"].values():
        assert 0.0 <= metrics["ndcg@10"] <= metrics["hit_rate@10"] <= 1.0
