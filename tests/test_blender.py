"""The online blender learns from clicks on served lists, and ranks the learned variant."""

from __future__ import annotations

import json
import logging
import pickle
import time
from pathlib import Path

import pytest
import redis
from flask.testing import FlaskClient

from api import create_app
from core.events import ItemClicked, ItemViewed
from core.ports import StateUpdate
from online_models.blender import BLOB, BlenderStateError, OnlineBlender
from online_models.processor import StreamProcessor
from online_models.profile import ContentProfile
from online_models.serving.variants import VariantAssigner
from tests.fakes import toy_services


def test_clicks_on_served_lists_teach_the_blender_and_the_learned_variant_follows_it() -> None:
    services = toy_services()
    app = create_app(services.settings, services=services)
    client: FlaskClient = app.test_client()
    processor = StreamProcessor(services.state, services.index, {}, half_life_s=3600.0,
                                profile=ContentProfile(0.3), blender=OnlineBlender())
    # Popular mugs, ranked first by a popularity-heavy blend, while the shopper wants bags.
    services.recommender.weights = {"popularity": 1.0, "content": 0.1}
    processor.apply([ItemViewed(user_id=f"crowd{n}", item_id=f"mugs-{n % 3}",
                                timestamp=float(n)) for n in range(30)])
    processor.apply([ItemViewed(user_id="s", item_id="bags-0", timestamp=100.0)])

    for n in range(40):  # the shopper keeps clicking content matches, skipping popular mugs
        shown = client.get("/api/recommendations?user_id=s&k=8&variant=default").get_json()
        content_pick = next(i for i in shown["items"] if i["category"] == "Bags")
        services.impressions.flush()  # written in the background: a real click comes later
        processor.apply([ItemClicked(user_id=f"s{n}", item_id=content_pick["item_id"],
                                     rec_id=shown["rec_id"], timestamp=200.0 + n)])

    assert services.state.counters()["blender.examples"] > 40  # clicks and skipped items
    model = OnlineBlender().loads(services.state.get_blob(BLOB) or b"")
    assert model.weights.get("content", 0) > model.weights.get("popularity", 0)
    services.recommender.blender = lambda: model
    services.recommender.assigner = VariantAssigner({"default": 0.5, "learned": 0.5})
    services.recommender.learned_variants = frozenset({"learned"})
    learned = client.get("/api/recommendations?user_id=s&k=5&variant=learned").get_json()
    assert learned["variant"] == "learned"
    assert learned["items"][0]["category"] == "Bags"
    top = learned["items"][0]
    assert top["score"] == round(OnlineBlender.score(model, top["sources"]), 6)


def test_a_click_without_a_known_list_teaches_nothing() -> None:
    services = toy_services()
    processor = StreamProcessor(services.state, services.index, {}, half_life_s=3600.0,
                                profile=ContentProfile(0.3), blender=OnlineBlender())
    processor.apply([ItemClicked(user_id="u", item_id="bags-1", rec_id="expired",
                                 timestamp=1.0)])
    assert services.state.get_blob(BLOB) is None


def test_the_blender_travels_as_json_and_comes_back_scoring_the_same() -> None:
    blender = OnlineBlender()
    model = blender.new_model()
    for _ in range(20):
        model.learn_one({"content": 0.9, "popularity": 0.1}, True)
        model.learn_one({"content": 0.1, "popularity": 0.9}, False)
    blob = blender.dumps(model)
    assert json.loads(blob)["format"] == "streamrec.blender/1"  # data, not a pickle
    back = blender.loads(blob)
    assert back.weights == pytest.approx(model.weights)
    assert back.intercept == model.intercept
    assert back.optimizer.n_iterations == model.optimizer.n_iterations
    for sources in ({"content": 0.5}, {"popularity": 1.0, "covisit": 0.3}):
        assert OnlineBlender.score(back, sources) == OnlineBlender.score(model, sources)


class _Planted:
    """Unpickling this creates a file: the harmless stand-in for running any code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return open, (str(self.marker), "w")


@pytest.mark.parametrize("blob", [
    b"not json", b"[]", b'{"format": "streamrec.blender/1", "weights": {"a": "1"}, '
    b'"intercept": 0, "n_iterations": 1}',
    b'{"format": "streamrec.blender/1", "weights": {}, "intercept": NaN, "n_iterations": 1}',
    b'{"format": "other", "weights": {}, "intercept": 0, "n_iterations": 1}',
])
def test_a_blob_that_is_not_the_blender_format_is_refused(blob: bytes) -> None:
    with pytest.raises(BlenderStateError):
        OnlineBlender().loads(blob)


@pytest.mark.integration
def test_a_pickle_planted_in_redis_is_refused_and_logged_never_run(
    redis_client: redis.Redis, redis_prefix: str, tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from infra.redis_store import RedisStateStore
    from online_models.blender import BlenderCache

    marker = tmp_path / "ran"
    store = RedisStateStore(redis_client, prefix=redis_prefix)
    store.apply(StateUpdate(blobs={BLOB: pickle.dumps(_Planted(marker))}))
    services = toy_services()
    processor = StreamProcessor(store, services.index, {}, half_life_s=3600.0,
                                profile=ContentProfile(0.3), blender=OnlineBlender())
    with caplog.at_level(logging.ERROR):
        processor.apply([ItemClicked(user_id="u", item_id="bags-1", rec_id="r1",
                                     timestamp=time.time())])  # the consumer reads it
        assert BlenderCache(store).current() is None  # so does the API
    assert not marker.exists()
    refusals = [r for r in caplog.records if "blender model refused" in r.getMessage()]
    assert len(refusals) == 2
