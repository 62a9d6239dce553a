"""Every online learner passes the shared learner contract; the processor runs them as one."""

from __future__ import annotations

import numpy as np
import pytest

from core.events import ItemViewed, Purchased
from core.ports import INTERACTION_TYPES, EventBatch, OnlineLearner, StateStore, StateUpdate
from core.settings import Settings
from infra.bootstrap import build_processor
from infra.memory_store import DecayedScores, InMemoryStateStore
from online_models.als_foldin import FoldInLearner
from online_models.blender import OnlineBlender
from online_models.covisitation import CovisitationLearner
from online_models.decay import decay_scale, decayed_weights
from online_models.popularity import PopularityLearner
from online_models.processor import StreamProcessor, learn_batch
from online_models.profile import ContentProfile, ProfileLearner
from online_models.rating_mf import OnlineRatingMF
from online_models.recent import HistoryLearner, PurchasesLearner, RecentItemsLearner
from tests.contracts.online_learner import (
    CATEGORY_OF,
    FOLDIN,
    HOUR,
    INDEX,
    OnlineLearnerContract,
    batch_of,
    contract_stream,
)


class TestRecentItemsLearner(OnlineLearnerContract):
    def make_learner(self) -> OnlineLearner:
        return RecentItemsLearner()


class TestPurchasesLearner(OnlineLearnerContract):
    def make_learner(self) -> OnlineLearner:
        return PurchasesLearner()


class TestHistoryLearner(OnlineLearnerContract):
    def make_learner(self) -> OnlineLearner:
        return HistoryLearner()


class TestPopularityLearner(OnlineLearnerContract):
    def make_learner(self) -> OnlineLearner:
        return PopularityLearner(CATEGORY_OF, half_life_s=HOUR)


class TestCovisitationLearner(OnlineLearnerContract):
    def make_learner(self) -> OnlineLearner:
        return CovisitationLearner(half_life_s=HOUR, window=2, direction="forward")


class TestProfileLearner(OnlineLearnerContract):
    def make_learner(self) -> OnlineLearner:
        return ProfileLearner(INDEX, ContentProfile(0.3))


class TestFoldInLearner(OnlineLearnerContract):
    def make_learner(self) -> OnlineLearner:
        return FoldInLearner(lambda: FOLDIN)


class TestOnlineRatingMF(OnlineLearnerContract):
    def make_learner(self) -> OnlineLearner:
        return OnlineRatingMF(n_factors=3, learning_rate=0.05)


class TestOnlineBlender(OnlineLearnerContract):
    def make_learner(self) -> OnlineLearner:
        return OnlineBlender(learning_rate=0.1, max_negatives=2)


def test_the_built_processor_runs_one_learner_per_state_part() -> None:
    store = InMemoryStateStore(half_life_s=HOUR)
    processor = build_processor(Settings(covisit_window=4), store, INDEX, {})
    kinds = {type(learner) for learner in processor.learners}
    assert {RecentItemsLearner, PurchasesLearner, HistoryLearner, PopularityLearner,
            CovisitationLearner, ProfileLearner, OnlineRatingMF, OnlineBlender} <= kinds
    covisit = next(x for x in processor.learners if isinstance(x, CovisitationLearner))
    assert covisit.window == 4
    # No two learners fill the same field, except the two that add popularity increments.
    shared = [f for f in {"recent", "purchased", "history", "profiles", "user_factors", "rating"}
              if sum(f in learner.writes for learner in processor.learners) > 1]
    assert shared == []


class CountingLearner:
    """A learner added from outside: counts the views of the batch."""

    reads = frozenset({"view"})
    writes = frozenset({"counters"})

    def __init__(self) -> None:
        self.calls = 0

    def learn_many(self, batch: EventBatch, store: StateStore) -> StateUpdate:
        self.calls += 1
        return StateUpdate(counters={"views.counted": len(batch.by_type.get("view", ()))})


def test_an_extra_learner_adds_its_part_to_the_same_update() -> None:
    store = InMemoryStateStore(half_life_s=HOUR)
    counting = CountingLearner()
    processor = StreamProcessor(store, INDEX, CATEGORY_OF, half_life_s=HOUR,
                                profile=ContentProfile(0.3), extra_learners=[counting])
    update = processor.apply([ItemViewed(user_id="u", item_id="bags-1", timestamp=1.0),
                              ItemViewed(user_id="u", item_id="mugs-1", timestamp=2.0)])
    assert update.counters["views.counted"] == 2
    assert store.counters()["views.counted"] == 2
    assert update.recent == {"u": ["bags-1", "mugs-1"]}  # the standard learners still ran


def test_a_learner_is_not_asked_about_a_batch_of_types_it_does_not_read() -> None:
    store = InMemoryStateStore(half_life_s=HOUR)
    counting = CountingLearner()
    learn_batch(store, [counting], [Purchased(user_id="u", item_id="a", timestamp=1.0)])
    assert counting.calls == 0
    learn_batch(store, [counting], [ItemViewed(user_id="u", item_id="a", timestamp=1.0)])
    assert counting.calls == 1


def test_two_learners_filling_the_same_key_are_a_wiring_error() -> None:
    store = InMemoryStateStore(half_life_s=HOUR)
    with pytest.raises(ValueError, match="two learners wrote recent"):
        learn_batch(store, [RecentItemsLearner(), RecentItemsLearner()],
                    [ItemViewed(user_id="u", item_id="a", timestamp=1.0)])


def test_popularity_and_co_visitation_increments_of_one_item_add_up() -> None:
    # Both learners write scopes of the same field; a learner that wrote a scope
    # another already wrote must add to it, not replace it.
    store = InMemoryStateStore(half_life_s=HOUR)
    events = [ItemViewed(user_id="u", item_id="a", timestamp=1.0)]
    twice = learn_batch(store, [PopularityLearner({}, HOUR), PopularityLearner({}, HOUR)],
                        events)
    assert twice.popularity == {"all": {"a": 2.0}}


def test_the_stores_and_the_learners_decay_by_the_same_function() -> None:
    # Written event by event into decayed scores, or pre-decayed to the batch's time by
    # the learners and written at once: the same popularity.
    stamps = [0.0, 1800.0, 7200.0]
    events = [ItemViewed(user_id="u", item_id="a", timestamp=t) for t in stamps]
    one_by_one = DecayedScores(half_life_s=HOUR)
    for t in stamps:
        one_by_one.add({"all": {"a": 1.0}}, at=t)
    at_once = DecayedScores(half_life_s=HOUR)
    batch = batch_of(events)
    at_once.add({"all": {"a": sum(decayed_weights(batch, HOUR))}}, at=batch.at)
    assert at_once.value("all", "a") == pytest.approx(one_by_one.value("all", "a"), rel=1e-12)
    assert one_by_one.value("all", "a") == pytest.approx(
        sum(decay_scale(np.array(stamps), stamps[-1], HOUR)), rel=1e-12)


def test_the_contract_stream_holds_every_event_type() -> None:
    stream_types = {e.event_type for e in contract_stream(10, seed=0)}
    assert stream_types == INTERACTION_TYPES
