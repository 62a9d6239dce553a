"""The online blender learns from clicks on served lists, and ranks the learned variant."""

from __future__ import annotations

from flask.testing import FlaskClient

from api import create_app
from core.events import ItemClicked, ItemViewed
from online_models.blender import BLOB, OnlineBlender
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
    model = OnlineBlender.loads(services.state.get_blob(BLOB) or b"")
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
