"""The shared contract every recommendation source passes (LensKit's ScorerTests style).

Subclass :class:`SourceContract` in a ``Test...`` class and implement ``make_source``
(from the toy world :func:`toy_world` builds: a catalog, its content index, an in-memory
state store after a shopper's views and purchases, an ALS fold-in, EASE neighbours, a
sequential network, all-time item counts).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from core.events import ItemViewed, Purchased
from core.ports import CandidateScorer, CandidateSource, RecRequest
from core.types import Item
from index.faiss_index import ExactIndex
from infra.memory_store import InMemoryStateStore
from online_models.als_foldin import ALSFoldIn
from online_models.neighbours import ItemNeighbours
from online_models.processor import StreamProcessor
from online_models.profile import ContentProfile
from online_models.sequential import SequentialModel
from online_models.serving.pipeline import Recommender
from online_models.serving.popularity import COUNTS_FILE, ItemCounts, PopularitySnapshot
from online_models.serving.registry import SOURCES, SourceDeps
from online_models.serving.sources import Source
from tests.fakes import toy_catalog, toy_index

SHOPPER = "shopper"


@dataclass
class ToyWorld:
    catalog: dict[str, Item]
    index: ExactIndex
    state: InMemoryStateStore
    deps: SourceDeps

    def recommender(self, source: Source) -> Recommender:
        return Recommender(self.state, self.index, self.catalog, [source], {source.name: 1.0},
                           known_sources=SOURCES)


def toy_world() -> ToyWorld:
    catalog = toy_catalog()
    index = toy_index(catalog)
    state = InMemoryStateStore(recent_max=50, half_life_s=3600.0)
    ids = list(catalog)
    factors = np.array([[1.0, 0.0] if i.startswith("mugs") else [0.0, 1.0] for i in ids])
    foldin = ALSFoldIn(ids, factors, regularization=0.1, alpha=10.0, version="v1")
    factor_index = ExactIndex(2)
    factor_index.upsert(ids, factors.astype(np.float32))
    weights = np.zeros((len(ids), len(ids)))
    for a, x in enumerate(ids):
        for b, y in enumerate(ids):
            if a != b and x.split("-")[0] == y.split("-")[0]:
                weights[a, b] = 1.0 / (1 + abs(a - b))
    neighbours = ItemNeighbours.from_weights(ids, weights, k=5)
    sequential = SequentialModel.random(ids, dim=8, n_blocks=1, max_len=10)
    processor = StreamProcessor(state, index, {i: it.category for i, it in catalog.items()},
                                half_life_s=3600.0, profile=ContentProfile(0.3),
                                collaborative=lambda: foldin)
    events: list[Any] = []
    for n, item in enumerate(["mugs-1", "mugs-2", "mugs-3", "bags-1"]):
        events.append(ItemViewed(user_id=SHOPPER, item_id=item, timestamp=1_000.0 + n))
    for n, (user, item) in enumerate([("a", "mugs-1"), ("a", "mugs-5"), ("b", "mugs-2"),
                                      ("b", "mugs-5"), ("c", "candles-1")]):
        events.append(Purchased(user_id=user, item_id=item, timestamp=1_010.0 + n))
    processor.apply(events)
    # All-time counts of a trained log: mugs sold to most shoppers, candles never.
    counts = ItemCounts([i for i in ids if not i.startswith("candles")],
                        np.array([5.0 if i.startswith("mugs") else 1.0 for i in ids
                                  if not i.startswith("candles")]), users=10)
    artifacts = {COUNTS_FILE: counts}
    deps = SourceDeps(state, index, catalog, PopularitySnapshot(state, catalog, refresh_s=0),
                      collaborative=lambda: (foldin, factor_index),
                      neighbours=lambda: neighbours, sequential=lambda: sequential,
                      artifact=lambda name, load: artifacts.get(name))
    return ToyWorld(catalog, index, state, deps)


class SourceContract:
    """What every source guarantees, whatever it scores by."""

    #: The registry name of the source under test.
    name = ""
    #: A request context item (for sources that need one).
    context_item: str | None = None

    def make_source(self, world: ToyWorld) -> Source:
        source = SOURCES[self.name](world.deps)
        assert source is not None
        return source

    @pytest.fixture
    def world(self) -> ToyWorld:
        return toy_world()

    def _scored(self, world: ToyWorld, user: str = SHOPPER) -> tuple[Any, Any]:
        source = self.make_source(world)
        return world.recommender(source).candidates(
            RecRequest(user, 5, context_item=self.context_item))

    def test_it_is_registered_under_its_name_and_implements_both_ports(self, world: ToyWorld
                                                                       ) -> None:
        source = self.make_source(world)
        assert source.name == self.name and self.name in SOURCES
        assert isinstance(source, CandidateSource) and isinstance(source, CandidateScorer)

    def test_it_proposes_items_for_a_shopper_with_history(self, world: ToyWorld) -> None:
        _, scored = self._scored(world)
        assert scored.ids, "no candidate for a shopper with views"
        assert np.any(scored.known[:, 0]), "it scores none of its own candidates"

    def test_scores_lie_in_0_1_or_are_left_out(self, world: ToyWorld) -> None:
        _, scored = self._scored(world)
        values = scored.matrix[scored.known]
        assert np.all((values >= 0) & (values <= 1))

    def test_it_never_proposes_what_the_request_excludes(self, world: ToyWorld) -> None:
        ctx, scored = self._scored(world)
        source = self.make_source(world)
        proposed = source.candidates(ctx)
        assert not set(proposed) & ctx.excluded
        assert not set(scored.ids) & ctx.excluded

    def test_an_unknown_item_is_left_out_never_scored_0(self, world: ToyWorld) -> None:
        ctx, _ = self._scored(world)
        source = self.make_source(world)
        out = source.score(ctx, ["no-such-item"])
        assert out.shape == (1,) and math.isnan(out[0])

    def test_candidate_scores_agree_with_scoring_them_again(self, world: ToyWorld) -> None:
        ctx, _ = self._scored(world)
        source = self.make_source(world)
        proposed = {i: s for i, s in source.candidates(ctx).items() if not math.isnan(s)}
        if not proposed or not source.scores_beyond_candidates:
            return
        again = source.score(ctx, list(proposed))
        np.testing.assert_allclose(again, list(proposed.values()), atol=1e-5)

    def test_a_shopper_never_seen_gets_no_error_and_no_invented_scores(self, world: ToyWorld
                                                                       ) -> None:
        _, scored = self._scored(world, user="nobody-ever")
        values = scored.matrix[scored.known]
        assert np.all((values >= 0) & (values <= 1))
