"""Versioned, frozen event schemas: the only shape events take inside streamrec.

Interaction events travel on the ``interactions`` topic keyed by user id;
catalog events on the ``catalog`` topic keyed by item id. Every event carries
``schema_version`` so that readers can refuse what they do not understand, and
an ``event_id`` that consumers use to apply each event exactly once.

>>> e = parse_interaction(b'{"event_type": "view", "user_id": "u1", "item_id": "85123A"}')
>>> type(e).__name__, e.user_id, e.schema_version
('ItemViewed', 'u1', 1)
>>> parse_interaction(b'{"event_type": "rating", "user_id": "u1", "item_id": "i", "rating": 9}')
Traceback (most recent call last):
...
core.errors.InvalidEvent: invalid interaction event: rating: Input should be less than or equal to 5
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
)

from core.errors import InvalidEvent

if TYPE_CHECKING:
    from core.settings import Settings

__all__ = [
    "EVENT_WEIGHTS",
    "SCHEMA_VERSION",
    "AddedToCart",
    "CatalogEvent",
    "EventTimeWindow",
    "Interaction",
    "InteractionEvent",
    "ItemClicked",
    "ItemUpserted",
    "ItemViewed",
    "Purchased",
    "Rated",
    "dump_event",
    "field_errors",
    "parse_catalog_event",
    "parse_interaction",
    "parse_interactions",
]

SCHEMA_VERSION: Literal[1] = 1

#: Ids hold no whitespace, control (NUL, ESC, DEL, C1) or format characters (bidi
#: overrides, zero-width): they end up in keys, SQL rows and operator pages, and
#: PostgreSQL refuses NUL outright.
_ID_PATTERN = r"^[^\s\p{Cc}\p{Cf}]+$"
#: Names (a variant): spaces allowed, control and format characters not.
_NAME_PATTERN = r"^[^\p{Cc}\p{Cf}]*$"
#: Free text (a review, a product description): line breaks and tabs allowed, other
#: control characters (NUL above all) not.
_TEXT_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"
_PATTERN_MESSAGES = {
    _ID_PATTERN: "must not contain whitespace, control or format characters",
    _NAME_PATTERN: "must not contain control or format characters",
    _TEXT_PATTERN: "must not contain control characters other than tab and line breaks",
}

_Id = Annotated[str, Field(min_length=1, max_length=128, pattern=_ID_PATTERN)]


#: 2100-01-01: later Unix timestamps are refused (and overflow some platforms).
_MAX_EPOCH_S = 4_102_444_800


def _new_event_id() -> str:
    return uuid.uuid4().hex


def _now() -> datetime:
    return datetime.now(UTC)


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    schema_version: Literal[1] = SCHEMA_VERSION
    event_id: _Id = Field(default_factory=_new_event_id)
    timestamp: AwareDatetime = Field(default_factory=_now)

    @field_validator("timestamp", mode="before")
    @classmethod
    def _epoch_seconds(cls, value: Any) -> Any:
        # Unix seconds are accepted (and normalised to UTC) besides ISO 8601 strings.
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not 0 <= value <= _MAX_EPOCH_S:  # also refuses nan and inf
                raise ValueError("a Unix timestamp must lie between 1970 and 2100")
            return datetime.fromtimestamp(value, UTC)
        return value

    @property
    def ts(self) -> float:
        """Event time as Unix seconds."""
        return self.timestamp.timestamp()


class InteractionEvent(_Event):
    """Fields shared by every shopper interaction."""

    event_type: str
    user_id: _Id
    item_id: _Id
    session_id: _Id | None = None
    rec_id: _Id | None = None
    variant: Annotated[str, Field(max_length=64, pattern=_NAME_PATTERN)] | None = None

    #: Implicit-feedback strength of this kind of event (view < click < cart < purchase).
    weight: ClassVar[float] = 1.0


class ItemViewed(InteractionEvent):
    event_type: Literal["view"] = "view"
    weight: ClassVar[float] = 1.0


class ItemClicked(InteractionEvent):
    event_type: Literal["click"] = "click"
    weight: ClassVar[float] = 2.0


class AddedToCart(InteractionEvent):
    event_type: Literal["add_to_cart"] = "add_to_cart"
    quantity: Annotated[int, Field(ge=1, le=10_000)] = 1
    weight: ClassVar[float] = 4.0


class Purchased(InteractionEvent):
    event_type: Literal["purchase"] = "purchase"
    quantity: Annotated[int, Field(ge=1, le=100_000)] = 1
    price: Annotated[float, Field(ge=0)] | None = None
    weight: ClassVar[float] = 8.0


class Rated(InteractionEvent):
    event_type: Literal["rating"] = "rating"
    rating: Annotated[float, Field(ge=1, le=5)]
    review: Annotated[str, Field(max_length=5_000, pattern=_TEXT_PATTERN)] | None = None

    @property
    def implicit_weight(self) -> float:
        """A rating's implicit strength: a 5 counts like a purchase, a 1 barely."""
        return (self.rating - 1.0) / 4.0 * Purchased.weight


Interaction = Annotated[
    ItemViewed | ItemClicked | AddedToCart | Purchased | Rated,
    Field(discriminator="event_type"),
]

EVENT_WEIGHTS: dict[str, float] = {
    cls.model_fields["event_type"].default: cls.weight
    for cls in (ItemViewed, ItemClicked, AddedToCart, Purchased, Rated)
}


class ItemUpserted(_Event):
    """A product was added or changed (catalog topic, keyed by item id)."""

    event_type: Literal["item_upsert"] = "item_upsert"
    item_id: _Id
    name: Annotated[str, Field(min_length=1, max_length=500, pattern=_TEXT_PATTERN)]
    category: Annotated[str, Field(max_length=200, pattern=_TEXT_PATTERN)] = ""
    description: Annotated[str, Field(max_length=10_000, pattern=_TEXT_PATTERN)] = ""
    price: Annotated[float, Field(ge=0)] = 0.0
    in_stock: bool = True


CatalogEvent = ItemUpserted

_interaction_adapter: TypeAdapter[Any] = TypeAdapter(Interaction)  # type: ignore[arg-type, unused-ignore]
_interactions_adapter: TypeAdapter[Any] = TypeAdapter(list[Interaction])


_EVENT_TAGS = frozenset(EVENT_WEIGHTS)


def _field_path(loc: tuple[int | str, ...]) -> str:
    # Pydantic puts the union tag in the location ("rating.rating"); users know no tags.
    parts = [
        str(p)
        for i, p in enumerate(loc)
        if not (p in _EVENT_TAGS and (i == 0 or isinstance(loc[i - 1], int)))
    ]
    return ".".join(parts) or "(body)"


def field_errors(exc: ValidationError) -> list[dict[str, str]]:
    """Field errors of a validation failure, in a stable JSON-friendly shape."""
    return [
        {
            "field": _field_path(err["loc"]),
            "message": _message(err),
            "type": err["type"],
        }
        for err in exc.errors(include_url=False)
    ]


def _message(err: Any) -> str:
    # "String should match pattern '^[^\s\p{Cc}...'" tells a client nothing.
    if err["type"] == "string_pattern_mismatch":
        pattern = (err.get("ctx") or {}).get("pattern")
        if pattern in _PATTERN_MESSAGES:
            return _PATTERN_MESSAGES[pattern]
    return str(err["msg"])


def _invalid(kind: str, exc: ValidationError) -> InvalidEvent:
    errors = field_errors(exc)
    summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:3])
    return InvalidEvent(f"invalid {kind} event: {summary}", details=errors)


def parse_interaction(data: bytes | str | dict[str, Any]) -> InteractionEvent:
    """Validate one interaction from JSON bytes/str or a dict; raise InvalidEvent."""
    try:
        if isinstance(data, dict):
            return _interaction_adapter.validate_python(data)
        return _interaction_adapter.validate_json(data)
    except ValidationError as exc:
        raise _invalid("interaction", exc) from exc


def parse_interactions(data: list[dict[str, Any]]) -> list[InteractionEvent]:
    """Validate a batch; the whole batch is refused when any event is invalid."""
    try:
        return _interactions_adapter.validate_python(data)
    except ValidationError as exc:
        raise _invalid("interaction", exc) from exc


def parse_catalog_event(data: bytes | str | dict[str, Any]) -> ItemUpserted:
    """Validate one catalog event; raise InvalidEvent."""
    try:
        if isinstance(data, dict):
            return ItemUpserted.model_validate(data)
        return ItemUpserted.model_validate_json(data)
    except ValidationError as exc:
        raise _invalid("catalog", exc) from exc


@dataclass(frozen=True, slots=True)
class EventTimeWindow:
    """The event times accepted around a clock: an event's timestamp is client input.

    >>> window = EventTimeWindow(max_future_s=300, max_age_s=3600)
    >>> window.problem(1_000_100.0, now=1_000_000.0) is None
    True
    >>> window.problem(1_000_400.0, now=1_000_000.0)
    'timestamp lies 400 s after the server clock (at most 300 s allowed)'
    >>> window.latest(now=1_000_000.0)
    1000300.0
    """

    max_future_s: float = 300.0
    max_age_s: float = 2 * 365 * 24 * 3600.0

    @classmethod
    def from_settings(cls, settings: Settings) -> EventTimeWindow:
        return cls(settings.event_max_future_s, settings.event_max_age_s)

    def latest(self, now: float | None = None) -> float:
        """The latest event time that may enter shared state at ``now``."""
        return (time.time() if now is None else now) + self.max_future_s

    def problem(self, ts: float, now: float | None = None) -> str | None:
        """Why an event at ``ts`` is refused at ``now`` (None: it is accepted)."""
        now = time.time() if now is None else now
        if ts > now + self.max_future_s:
            return (f"timestamp lies {ts - now:.0f} s after the server clock "
                    f"(at most {self.max_future_s:.0f} s allowed)")
        if ts < now - self.max_age_s:
            return (f"timestamp lies {now - ts:.0f} s before the server clock "
                    f"(at most {self.max_age_s:.0f} s allowed)")
        return None

    def check(self, events: Sequence[_Event], now: float | None = None) -> None:
        """Raise :class:`InvalidEvent` (422) when any of ``events`` lies outside the window."""
        now = time.time() if now is None else now
        errors = [
            {"field": f"{n}.timestamp" if len(events) > 1 else "timestamp",
             "message": problem, "type": "time_window"}
            for n, event in enumerate(events)
            if (problem := self.problem(event.ts, now)) is not None
        ]
        if errors:
            summary = "; ".join(f"{e['field']}: {e['message']}" for e in errors[:3])
            raise InvalidEvent(f"invalid interaction event: {summary}", details=errors)


def dump_event(event: _Event) -> bytes:
    """The wire form of an event (JSON, UTF-8)."""
    return event.model_dump_json().encode()
