"""The contract every :class:`core.ports.OnlineLearner` passes (River's estimator checks).

Use it as a mixin::

    class TestMyLearner(OnlineLearnerContract):
        def make_learner(self) -> OnlineLearner:
            return MyLearner(...)

Each check runs the learner on the same small stream of every event type (clicks
on a remembered list, ratings, purchases, an item without an embedding) after a
warm-up that leaves every kind of state in the store, so learners that read state
read real state.
"""

from __future__ import annotations

import doctest
import inspect
from collections.abc import Sequence
from dataclasses import fields
from typing import Any

import numpy as np
import pytest

from core.events import AddedToCart, InteractionEvent, ItemClicked, ItemViewed, Purchased, Rated
from core.ports import (
    ALL_ITEMS,
    INTERACTION_TYPES,
    EventBatch,
    OnlineLearner,
    StateStore,
    StateUpdate,
    category_scope,
    covisit_scope,
)
from infra.memory_store import InMemoryStateStore
from online_models.als_foldin import ALSFoldIn
from online_models.blender import BLOB, OnlineBlender, Shown, encode_shown
from online_models.processor import StreamProcessor, implicit_weight, learn_batch
from online_models.profile import ContentProfile
from online_models.rating_mf import OnlineRatingMF
from tests.fakes import CATEGORIES, toy_catalog, toy_index

HOUR = 3600.0
#: The served list the stream's clicks point at (remembered in the store).
REC_ID = "rec-1"
CATALOG = toy_catalog()
INDEX = toy_index(CATALOG)
CATEGORY_OF = {item_id: item.category for item_id, item in CATALOG.items()}
ITEMS = [*CATALOG, "not-in-catalog"]
USERS = [f"u{n}" for n in range(8)]
STATE_FIELDS = frozenset(f.name for f in fields(StateUpdate))


def toy_foldin() -> ALSFoldIn:
    """An ALS model that knows two thirds of the catalog (the rest is folded in)."""
    known = list(CATALOG)[:20]
    rng = np.random.default_rng(7)
    return ALSFoldIn(known, rng.normal(size=(len(known), 4)), regularization=0.1, alpha=10.0,
                     version="v1", user_gram=np.eye(4) * 3.0)


FOLDIN = toy_foldin()


def contract_stream(n: int, seed: int, start: float = 1_000_000.0) -> list[InteractionEvent]:
    """``n`` events of every type, in time order, with distinct deterministic ids."""
    rng = np.random.default_rng(seed)
    kinds = (ItemViewed, ItemClicked, AddedToCart, Purchased, Rated)
    events: list[InteractionEvent] = []
    for k in range(n):
        kind = kinds[k % len(kinds)]
        extra: dict[str, Any] = {}
        if kind is Rated:
            extra["rating"] = int(rng.integers(1, 6))
        if kind is ItemClicked:
            extra["rec_id"] = REC_ID
        events.append(kind(user_id=USERS[int(rng.integers(len(USERS)))],
                           item_id=ITEMS[int(rng.integers(len(ITEMS)))],
                           timestamp=start + 60.0 * k, event_id=f"s{seed}-e{k}", **extra))
    return events


def batch_of(events: Sequence[InteractionEvent]) -> EventBatch:
    """Events (distinct, in time order) as the processor hands them to a learner."""
    return EventBatch(events, [e.ts for e in events], [implicit_weight(e) for e in events])


def warm_store() -> InMemoryStateStore:
    """A store holding every kind of state, learnt by the standard learners."""
    store = InMemoryStateStore(half_life_s=HOUR)
    shown = [(item, Shown(rank, "content", {"content": 1.0 - rank / 10}))
             for rank, item in enumerate(ITEMS[::4])]
    store.remember_impressions({REC_ID: encode_shown(shown)}, ttl_s=24 * 3600)
    StreamProcessor(store, INDEX, CATEGORY_OF, half_life_s=HOUR, profile=ContentProfile(0.3),
                    collaborative=lambda: FOLDIN, rating_model=OnlineRatingMF(n_factors=3),
                    blender=OnlineBlender()).apply(contract_stream(100, seed=1))
    return store


def observed_state(store: StateStore) -> dict[str, Any]:
    """Everything a reader can see of the contract stream's users and items."""
    scopes = [ALL_ITEMS, *(category_scope(c) for c in CATEGORIES),
              *(covisit_scope(i) for i in ITEMS)]
    rating = store.get_rating_params(USERS, ITEMS)
    return {
        "counters": {k: v for k, v in store.counters().items() if k != "events.duplicate"},
        "recent": store.recent_items_many(USERS, 50),
        "popularity": {s: p.as_dict() for s, p in store.top_popular_many(scopes, 1000).items()},
        "profiles": store.get_profiles(USERS),
        "histories": store.get_histories(USERS),
        "purchased": {u: store.purchased_items(u) for u in USERS},
        "item_histories": store.get_item_histories(ITEMS),
        "item_factors": store.get_item_factors(FOLDIN.version),
        "user_factors": store.get_user_factors(USERS, FOLDIN.version),
        "rating": (rating.n, rating.mean, rating.users, rating.items),
        "blob": store.get_blob(BLOB),
        "last_event_ts": store.last_event_ts(),
    }


def assert_same(a: Any, b: Any, path: str = "") -> None:
    """Exact equality through dicts, lists, tuples, sets, dataclasses and arrays."""
    if isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype, path
        np.testing.assert_array_equal(a, b, err_msg=path)
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), path
        for key in a:
            assert_same(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list | tuple):
        assert type(a) is type(b) and len(a) == len(b), path
        for n, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{path}[{n}]")
    elif hasattr(a, "__dataclass_fields__"):
        assert type(a) is type(b), path
        for spec in fields(a):
            assert_same(getattr(a, spec.name), getattr(b, spec.name), f"{path}.{spec.name}")
    else:
        assert a == b, path


def filled_fields(part: StateUpdate) -> set[str]:
    """The fields of ``part`` not left at their defaults."""
    empty = StateUpdate()
    return {spec.name for spec in fields(StateUpdate)
            if not _equal(getattr(part, spec.name), getattr(empty, spec.name))}


def _equal(a: Any, b: Any) -> bool:
    try:
        assert_same(a, b)
    except AssertionError:
        return False
    return True


class ReadOnlyStore:
    """A store a learner may read and must not write: writes fail the test."""

    WRITES = frozenset({"apply", "clear", "remember_impressions"})

    def __init__(self, store: StateStore) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        if name in self.WRITES:
            raise AssertionError(f"a learner called store.{name}: learners only read")
        return getattr(self._store, name)


def clone(learner: OnlineLearner) -> OnlineLearner:
    """A new learner built from the hyperparameters in ``learner``'s signature (River's)."""
    params = inspect.signature(type(learner)).parameters
    return type(learner)(**{name: getattr(learner, name) for name in params})


class OnlineLearnerContract:
    """Behaviour shared by every online learner; subclasses implement :meth:`make_learner`."""

    def make_learner(self) -> OnlineLearner:
        raise NotImplementedError

    @pytest.fixture
    def store(self) -> InMemoryStateStore:
        return warm_store()

    @pytest.fixture
    def events(self) -> list[InteractionEvent]:
        return contract_stream(60, seed=2, start=2_000_000.0)

    def test_is_an_online_learner_declaring_what_it_reads_and_writes(self) -> None:
        learner = self.make_learner()
        assert isinstance(learner, OnlineLearner)
        assert learner.reads and learner.reads <= INTERACTION_TYPES
        assert learner.writes and learner.writes <= STATE_FIELDS
        assert "event_ids" not in learner.writes  # the processor marks what was applied

    def test_learning_an_empty_batch_changes_nothing(self, store: StateStore) -> None:
        part = self.make_learner().learn_many(batch_of([]), ReadOnlyStore(store))
        assert filled_fields(part) == set()

    def test_a_batch_of_types_it_does_not_read_leaves_its_part_empty(
        self, store: StateStore, events: list[InteractionEvent]
    ) -> None:
        learner = self.make_learner()
        others = [e for e in events if e.event_type not in learner.reads]
        if learner.reads == INTERACTION_TYPES:
            pytest.skip("reads every event type")
        assert others
        part = learner.learn_many(batch_of(others), ReadOnlyStore(store))
        assert filled_fields(part) == set()

    def test_its_part_fills_only_the_fields_it_declares(
        self, store: StateStore, events: list[InteractionEvent]
    ) -> None:
        learner = self.make_learner()
        part = learner.learn_many(batch_of(events), ReadOnlyStore(store))
        filled = filled_fields(part)
        assert filled, "learnt nothing from a stream of every event type"
        assert filled <= learner.writes

    def test_learning_reads_the_store_and_never_writes_it(
        self, store: StateStore, events: list[InteractionEvent]
    ) -> None:
        before = observed_state(store)
        self.make_learner().learn_many(batch_of(events), ReadOnlyStore(store))
        assert_same(observed_state(store), before)

    def test_every_init_argument_is_kept_as_a_same_named_attribute(self) -> None:
        learner = self.make_learner()
        for name, param in inspect.signature(type(learner)).parameters.items():
            assert param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY), name
            assert hasattr(learner, name), f"{type(learner).__name__}.{name} is not kept"

    def test_a_clone_from_the_signature_learns_the_same(
        self, events: list[InteractionEvent]
    ) -> None:
        learner = self.make_learner()
        twin = clone(learner)
        assert twin is not learner
        one = learner.learn_many(batch_of(events), warm_store())
        two = twin.learn_many(batch_of(events), warm_store())
        assert_same(one, two)

    def test_its_state_lives_in_the_store_not_in_the_learner(
        self, store: StateStore, events: list[InteractionEvent]
    ) -> None:
        # Consumers in several processes share one store: a learner that kept what it
        # learnt in itself would learn differently the second time from the same state.
        learner = self.make_learner()
        first = learner.learn_many(batch_of(events), ReadOnlyStore(store))
        again = learner.learn_many(batch_of(events), ReadOnlyStore(store))
        assert_same(again, first)

    def test_replaying_a_batch_through_the_processor_changes_nothing(
        self, store: StateStore, events: list[InteractionEvent]
    ) -> None:
        learners = [self.make_learner()]
        store.apply(learn_batch(store, learners, events))
        applied = observed_state(store)
        replay = learn_batch(store, learners, events)
        assert filled_fields(replay) == {"counters"}
        assert replay.counters == {"events.duplicate": len(events)}
        store.apply(replay)
        assert_same(observed_state(store), applied)

    def test_its_docstring_example_runs(self) -> None:
        cls = type(self.make_learner())
        tests = [t for t in doctest.DocTestFinder().find(cls, cls.__name__,
                                                          globs=vars(inspect.getmodule(cls)))
                 if t.name == cls.__name__ and t.examples]
        assert tests, f"{cls.__name__} has no example in its docstring"
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
        for test in tests:
            runner.run(test)
        assert runner.summarize(verbose=False).failed == 0
