"""The online rating model: River BiasedMF learning the rating stream through the state."""

from __future__ import annotations

import numpy as np

from core.events import ItemViewed, Rated
from core.ports import RatingParams
from infra.memory_store import InMemoryStateStore
from online_models.processor import StreamProcessor
from online_models.profile import ContentProfile
from online_models.rating_mf import OnlineRatingMF
from tests.fakes import toy_catalog, toy_index


def rating(user: str, item: str, value: float, ts: float, event_id: str | None = None) -> Rated:
    extra = {"event_id": event_id} if event_id else {}
    return Rated(user_id=user, item_id=item, rating=value, timestamp=ts, **extra)  # type: ignore[arg-type]


def processor(store: InMemoryStateStore) -> StreamProcessor:
    catalog = toy_catalog()
    return StreamProcessor(store, toy_index(catalog), {}, half_life_s=3600.0,
                           profile=ContentProfile(0.3), rating_model=OnlineRatingMF(n_factors=4))


def test_predictions_follow_the_ratings_the_stream_taught() -> None:
    store = InMemoryStateStore()
    proc = processor(store)
    rng = np.random.default_rng(0)
    t = 0.0
    for _ in range(40):  # a rolling stream: mugs loved, bags disliked, by many users
        batch = []
        for u in rng.integers(0, 30, 10):
            t += 1
            batch.append(rating(f"u{u}", f"mugs-{t % 5:.0f}", 5, t))
            batch.append(rating(f"u{u}", f"bags-{t % 5:.0f}", 1, t + 0.5))
        proc.apply(batch)
    params = store.get_rating_params(["u1"], ["mugs-1", "bags-1"])
    assert OnlineRatingMF.predict(params, "u1", "mugs-1") > 4.0
    assert OnlineRatingMF.predict(params, "u1", "bags-1") < 2.0
    assert params.n == 800 and 2.9 < params.mean < 3.1


def test_a_redelivered_rating_is_not_learnt_twice() -> None:
    store = InMemoryStateStore()
    proc = processor(store)
    batch = [rating("u", "mugs-1", 5, 1.0, event_id="r1"),
             ItemViewed(user_id="u", item_id="mugs-2")]
    proc.apply(batch)
    first = store.get_rating_params(["u"], ["mugs-1"])
    proc.apply(batch)
    again = store.get_rating_params(["u"], ["mugs-1"])
    assert again.n == first.n == 1
    np.testing.assert_array_equal(again.users["u"], first.users["u"])


def test_unknown_users_and_items_are_predicted_from_what_is_known() -> None:
    params = RatingParams(n=10, mean=3.5, items={"a": np.array([0.5, 0, 0], np.float32)})
    assert OnlineRatingMF.predict(params, "nobody", "a") == 4.0
    assert OnlineRatingMF.predict(params, "nobody", "zzz") == 3.5
