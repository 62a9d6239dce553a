"""The live sources pass one contract; the pipeline is assembled from the registry."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt
import pytest

from core.errors import ConfigurationError
from core.ports import RecContext, RecRequest
from online_models.serving import registry
from online_models.serving.filters import CandidateFilter, Rules
from online_models.serving.pipeline import Recommender
from online_models.serving.sources import Source
from tests.contracts.source import SHOPPER, SourceContract, ToyWorld, toy_world


class TestCovisitSource(SourceContract):
    name = "covisit"


class TestContextSource(SourceContract):
    name = "context"
    context_item = "mugs-4"


class TestContentSource(SourceContract):
    name = "content"


class TestCollabSource(SourceContract):
    name = "collab"


class TestEaseSource(SourceContract):
    name = "ease"


class TestSequentialSource(SourceContract):
    name = "sequential"


class TestPopularitySource(SourceContract):
    name = "popularity"


class TestAllTimeSource(SourceContract):
    name = "alltime"


def _alltime(world: ToyWorld) -> Source:
    source = registry.SOURCES["alltime"](world.deps)
    assert source is not None
    return source


def test_alltime_proposes_best_sellers_unseen_and_leaves_newer_items_out() -> None:
    world = toy_world()
    ctx, _scored = world.recommender(_alltime(world)).candidates(
        RecRequest(SHOPPER, 5))
    source = _alltime(world)
    proposed = list(source.candidates(ctx))
    # The shopper saw mugs-1..3: the best sellers left are the other mugs, by id on ties.
    assert proposed[:3] == ["mugs-0", "mugs-4", "mugs-5"]
    assert not set(proposed) & ctx.excluded
    out = source.score(ctx, ["mugs-0", "bags-0", "candles-0"])
    assert out[0] == 1.0 and 0 < out[1] < 1 and np.isnan(out[2])  # candles: not in the log


def test_alltime_without_counts_in_the_model_version_proposes_and_scores_nothing() -> None:
    world = toy_world()
    world.deps.artifact = lambda name, load: None
    _ctx, scored = world.recommender(_alltime(world)).candidates(
        RecRequest(SHOPPER, 5))
    assert not np.any(scored.known[:, 0])


def test_every_registered_source_has_a_contract_test() -> None:
    tested = {cls.name for cls in SourceContract.__subclasses__()}
    assert tested == set(registry.SOURCES)


class _Cheapest(Source):
    """A source a shop might add: cheaper items score higher."""

    name = "cheapest"
    reason = "A bargain"

    def __init__(self, catalog: Mapping[str, object]) -> None:
        self.catalog = catalog

    def candidates(self, ctx: RecContext) -> Mapping[str, float]:
        return {"bags-0": 1.0}

    def score(self, ctx: RecContext, item_ids: Sequence[str]) -> npt.NDArray[np.float64]:
        return np.array([1.0 / (1.0 + self.catalog[i].price)  # type: ignore[attr-defined]
                         if i in self.catalog else np.nan for i in item_ids])


def test_a_new_source_needs_only_its_class_and_a_registry_line(monkeypatch, tmp_path) -> None:
    from core.settings import Settings
    from infra.bootstrap import build_recommender

    world = toy_world()
    monkeypatch.setitem(registry.SOURCES, "cheapest", lambda d: _Cheapest(d.catalog))
    settings = Settings(state_dir=tmp_path, sources=["cheapest", "covisit"],
                        blend_weights={"cheapest": 1.0}, ranked_variants=[])
    rec = build_recommender(settings, world.state, world.index, world.catalog)
    items = rec.recommend(SHOPPER, 3).items
    assert items[0].item.item_id == "bags-0"
    assert items[0].reason == "A bargain" and "cheapest" in items[0].sources


def test_a_blend_weight_naming_no_source_is_a_configuration_error() -> None:
    world = toy_world()
    sources = registry.build_sources(["covisit", "popularity"], world.deps)
    with pytest.raises(ConfigurationError, match="contnet"):
        Recommender(world.state, world.index, world.catalog, sources, {"contnet": 1.0},
                    known_sources=registry.SOURCES)
    with pytest.raises(ConfigurationError, match="unknown sources"):
        registry.build_sources(["covisit", "nope"], world.deps)


def test_a_weight_for_a_registered_but_disabled_source_weighs_nothing(world: ToyWorld | None
                                                                      = None) -> None:
    world = toy_world()
    sources = registry.build_sources(["popularity"], world.deps)
    rec = Recommender(world.state, world.index, world.catalog, sources,
                      {"popularity": 1.0, "content": 5.0}, known_sources=registry.SOURCES)
    assert rec.recommend(SHOPPER, 3).items


def test_an_absent_source_is_left_out_of_the_pipeline() -> None:
    world = toy_world()
    world.deps.neighbours = lambda: None
    rec = Recommender(world.state, world.index, world.catalog,
                      registry.build_sources(["ease", "popularity"], world.deps),
                      {"ease": 1.0, "popularity": 0.1}, known_sources=registry.SOURCES)
    items = rec.recommend(SHOPPER, 5).items
    assert items and all("ease" not in i.sources for i in items)


def test_the_degraded_path_and_the_pipeline_share_one_filter_object() -> None:
    from api.degraded import PopularFallback

    world = toy_world()
    rules = Rules(excluded_categories=frozenset({"Bags"}))
    rec = Recommender(world.state, world.index, world.catalog,
                      registry.build_sources(registry.DEFAULT_SOURCES, world.deps),
                      {"popularity": 1.0}, rules=rules, known_sources=registry.SOURCES)
    assert isinstance(rec.filter, CandidateFilter) and rec.filter.rules is rules
    fallback = PopularFallback(world.catalog)
    request = RecRequest(SHOPPER, 30, max_price=5.0)
    degraded = fallback.items(30, request, rec.filter)
    served = rec.run(request).items
    for item in [r.item for r in degraded + served]:
        assert item.category != "Bags" and item.price <= 5.0


def test_alltime_reads_the_counts_streamrec_train_ships_with_a_model_version(tmp_path) -> None:
    """``popularity``'s serving artifact is data only, the model provider reads it from the
    latest version, and a new version's counts replace the old ones."""
    from core.scoring import Interactions
    from infra.models import ModelProvider
    from offline.datasets import Dataset
    from offline.train import train
    from online_models.serving.popularity import COUNTS_FILE, ItemCounts

    first = Interactions.from_records([("u", "a", 1, 0), ("v", "a", 1, 1), ("v", "b", 1, 2)])
    provider = ModelProvider(tmp_path, min_interval_s=0.0)
    train(Dataset("t", first, []), tmp_path, ["trending"])  # decayed: the stream has those
    assert provider.artifact(COUNTS_FILE, ItemCounts.load) is None
    train(Dataset("t", first, []), tmp_path, ["popularity"])
    counts = provider.artifact(COUNTS_FILE, ItemCounts.load)
    assert counts is not None and counts.top(2, set()).ids == ["a", "b"]
    assert counts.users == 2
    npz = next(tmp_path.glob(f"*/{COUNTS_FILE}.npz")).read_bytes()
    assert b"pickle" not in npz
    second = Interactions.from_records([("u", "b", 1, 0), ("v", "b", 1, 1), ("w", "a", 1, 2)])
    train(Dataset("t", second, []), tmp_path, ["popularity"])
    again = provider.artifact(COUNTS_FILE, ItemCounts.load)
    assert again is not None and again.top(1, set()).ids == ["b"]
    assert provider.artifact("no_such_artifact", ItemCounts.load) is None


def test_the_sequential_network_runs_once_per_request() -> None:
    """Its forward pass is most of the source's cost: candidates and scores share it."""
    world = toy_world()
    model = world.deps.sequential()
    assert model is not None
    calls = []
    real_query = model.query

    def counted(recent: Sequence[str]) -> object:
        calls.append(list(recent))
        return real_query(recent)

    model.query = counted  # type: ignore[method-assign]
    sources = [registry.SOURCES[name](world.deps) for name in ("sequential", "alltime")]
    assert all(s is not None for s in sources)
    recommender = Recommender(world.state, world.index, world.catalog, sources,
                              {"sequential": 1.0, "alltime": 1.0},
                              known_sources=registry.SOURCES)
    _ctx, scored = recommender.candidates(RecRequest(SHOPPER, 5))
    col = scored.names.index("sequential")
    # It proposed items and scored those the other source proposed ...
    assert scored.known[:, col].all() and len(scored.ids) > 5
    assert len(calls) == 1  # ... from one forward pass
