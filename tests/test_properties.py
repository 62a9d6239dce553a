"""Properties (hypothesis): the event schema's round trip and refusals, and blending."""

from __future__ import annotations

import json
import string
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.errors import InvalidEvent
from core.events import (
    AddedToCart,
    InteractionEvent,
    ItemClicked,
    ItemViewed,
    Purchased,
    Rated,
    dump_event,
    parse_interaction,
)
from infra.memory_store import InMemoryStateStore
from online_models.processor import StreamProcessor
from online_models.profile import ContentProfile
from online_models.serving.filters import Rules
from online_models.serving.pipeline import Recommender
from tests.fakes import live_recommender, toy_catalog, toy_index

PROPERTY_SETTINGS = settings(max_examples=150, deadline=None,
                             suppress_health_check=[HealthCheck.too_slow])

# --- valid events --------------------------------------------------------------------------
# Ids hold no whitespace, control (Cc) or format (Cf) characters.
ids = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Zs", "Zl", "Zp", "Cc", "Cf")),
              min_size=1, max_size=128).filter(lambda s: not any(c.isspace() for c in s))
timestamps = st.floats(min_value=0, max_value=4_000_000_000, allow_nan=False)
optional_ids = st.none() | ids
common = {
    "user_id": ids, "item_id": ids, "timestamp": timestamps, "session_id": optional_ids,
    "rec_id": optional_ids,
    "variant": st.none() | st.text(alphabet=string.ascii_letters + "-_", max_size=64),
}
event_id = {"event_id": ids}

valid_events = st.one_of(
    st.builds(ItemViewed, **common, **event_id),
    st.builds(ItemClicked, **common, **event_id),
    st.builds(AddedToCart, **common, **event_id,
              quantity=st.integers(min_value=1, max_value=10_000)),
    st.builds(Purchased, **common, **event_id, quantity=st.integers(1, 100_000),
              price=st.none() | st.floats(min_value=0, max_value=1e9, allow_nan=False)),
    st.builds(Rated, **common, **event_id,
              rating=st.floats(min_value=1, max_value=5, allow_nan=False),
              # Free text: any character but controls other than tab and line breaks.
              review=st.none() | st.text(alphabet=st.characters(
                  blacklist_categories=("Cs", "Cc"), whitelist_characters="\t\n\r"),
                  max_size=300)),
)


@PROPERTY_SETTINGS
@given(valid_events)
def test_every_valid_event_survives_dump_then_parse_unchanged(event: InteractionEvent) -> None:
    parsed = parse_interaction(dump_event(event))
    assert type(parsed) is type(event)
    assert parsed == event
    assert parse_interaction(json.loads(dump_event(event))) == event  # dict input too


# --- invalid events ------------------------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=6,
)
not_a_string = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) \
    | st.lists(st.integers(), max_size=2) | st.dictionaries(st.text(max_size=3), st.integers(),
                                                           max_size=2)
bad_ids = st.one_of(
    not_a_string,
    st.just(""),
    st.text(min_size=129, max_size=200).filter(lambda s: s.strip() and len(s.strip()) > 128),
    st.builds(lambda a, b: f"{a} {b}", ids, ids),  # whitespace inside
)
bad_field = st.one_of(
    st.tuples(st.sampled_from(["user_id", "item_id"]), bad_ids),
    st.tuples(st.just("event_type"),
              st.text(max_size=20).filter(lambda s: s not in {
                  "view", "click", "add_to_cart", "purchase", "rating"}) | not_a_string),
    st.tuples(st.just("rating"), st.floats(max_value=0.999) | st.floats(min_value=5.001)
              | st.text(alphabet=string.ascii_letters, min_size=1, max_size=5)),
    st.tuples(st.just("schema_version"), st.integers().filter(lambda v: v != 1)),
    st.tuples(st.just("unknown_field"), json_values),
    st.tuples(st.just("timestamp"), st.text(alphabet=string.ascii_letters, min_size=1)
              | st.floats(min_value=1e12, allow_infinity=False)
              | st.floats(max_value=-1e12, allow_infinity=False)),
)


@PROPERTY_SETTINGS
@given(valid_events, bad_field)
def test_a_bad_field_value_always_gives_invalid_event_never_another_error(
    event: InteractionEvent, bad: tuple[str, Any],
) -> None:
    field, value = bad
    data = json.loads(dump_event(event))
    if field == "rating":
        data = {**data, "event_type": "rating"}
    data[field] = value
    with pytest.raises(InvalidEvent) as caught:
        parse_interaction(data)
    assert caught.value.details  # field errors for the 422 body
    with pytest.raises(InvalidEvent):
        parse_interaction(json.dumps(data).encode())


@PROPERTY_SETTINGS
@given(st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
def test_arbitrary_bytes_parse_to_an_event_or_invalid_event_only(raw: bytes) -> None:
    try:
        parsed = parse_interaction(raw)
    except InvalidEvent:
        return
    assert isinstance(parsed, InteractionEvent)


@pytest.mark.parametrize("timestamp", [1e20, -1e20, 1e300])
def test_an_out_of_range_epoch_timestamp_is_an_invalid_event_not_an_overflow(
    timestamp: float,
) -> None:
    with pytest.raises(InvalidEvent):
        parse_interaction({"event_type": "view", "user_id": "u", "item_id": "i",
                           "timestamp": timestamp})


# --- blending ------------------------------------------------------------------------------
CATALOG = toy_catalog()
INDEX = toy_index(CATALOG)
ITEMS = sorted(CATALOG)
USERS = ["u0", "u1", "u2", "u3"]
KINDS = (ItemViewed, ItemClicked, AddedToCart, Purchased)
WEIGHTS = {"content": 0.3, "collab": 0.25, "covisit": 0.15, "context": 0.2, "popularity": 0.1}

interactions = st.lists(
    st.tuples(st.sampled_from(KINDS), st.sampled_from(USERS), st.sampled_from(ITEMS)),
    max_size=40,
)
requests = st.fixed_dictionaries({
    "user": st.sampled_from([*USERS, "newcomer"]),
    "k": st.integers(min_value=1, max_value=40),
    "context_item": st.none() | st.sampled_from(ITEMS),
    "max_per_category": st.integers(min_value=0, max_value=4),
    "excluded": st.sets(st.sampled_from(["Candles", "Bags", "Mugs"]), max_size=1),
})


def recommender_after(history: list[tuple[type, str, str]], rules: Rules
                      ) -> tuple[Recommender, InMemoryStateStore]:
    state = InMemoryStateStore(recent_max=50, half_life_s=3600.0)
    processor = StreamProcessor(state, INDEX, {i: it.category for i, it in CATALOG.items()},
                                half_life_s=3600.0, profile=ContentProfile(0.3))
    processor.apply([kind(user_id=user, item_id=item, timestamp=1_000.0 + n)
                     for n, (kind, user, item) in enumerate(history)])
    return live_recommender(state, INDEX, CATALOG, WEIGHTS, 50, rules=rules), state


@PROPERTY_SETTINGS
@given(interactions, requests)
def test_blended_lists_are_ranked_bounded_filtered_and_deterministic(
    history: list[tuple[type, str, str]], req: dict[str, Any],
) -> None:
    rules = Rules(excluded_categories=frozenset(req["excluded"]),
                  max_per_category=req["max_per_category"])
    recommender, state = recommender_after(history, rules)
    user, k, context = req["user"], req["k"], req["context_item"]
    options = {"context_item": context} if context else {}
    rec = recommender.recommend(user, k, **options)
    items = rec.items

    assert len(items) <= k
    scores = [r.score for r in items]
    assert scores == sorted(scores, reverse=True)
    for r in items:
        assert set(r.sources) <= set(WEIGHTS)
        assert all(0.0 <= v <= 1.0 for v in r.sources.values()), r.sources
        assert r.item.category not in rules.excluded_categories
    seen = set(state.recent_items(user, 50)) | state.purchased_items(user)
    if context:
        seen.add(context)
    assert not seen & {r.item.item_id for r in items}
    assert len({r.item.item_id for r in items}) == len(items)
    if rules.max_per_category:
        per_category: dict[str, int] = {}
        for r in items:
            per_category[r.item.category] = per_category.get(r.item.category, 0) + 1
        assert max(per_category.values(), default=0) <= rules.max_per_category

    again = recommender.recommend(user, k, **options)
    assert [(r.item.item_id, r.score, r.sources, r.reason) for r in again.items] == \
        [(r.item.item_id, r.score, r.sources, r.reason) for r in items]
    rebuilt, _ = recommender_after(history, rules)  # same events from scratch: same list
    assert [r.item.item_id for r in rebuilt.recommend(user, k, **options).items] == \
        [r.item.item_id for r in items]
