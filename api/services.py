"""What the API needs from the outside, built by bootstrap and kept on the app."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from flask import current_app

from api.recommender import Recommender
from core.ports import EventPublisher, StateStore, VectorIndex
from core.settings import Settings
from core.types import Item

__all__ = ["ApiServices", "services"]


@dataclass
class ApiServices:
    settings: Settings
    state: StateStore
    index: VectorIndex
    catalog: Mapping[str, Item]
    publisher: EventPublisher
    recommender: Recommender
    health_checks: dict[str, Callable[[], bool]] = field(default_factory=dict)
    closers: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        for close in reversed(self.closers):
            close()
        self.closers.clear()


def services() -> ApiServices:
    """The services of the current app."""
    found: ApiServices = current_app.extensions["streamrec"]
    return found
