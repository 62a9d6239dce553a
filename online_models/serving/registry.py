"""Source names -> factories: the recommender's sources are configuration.

Adding a source = one class, one line in :data:`SOURCES` and its contract test
(``tests/contracts/source.py``). ``infra.bootstrap`` builds the enabled ones
(``STREAMREC_SOURCES``) from the process's :class:`SourceDeps`; a factory returns
None when the source cannot exist in this process (its model was never trained, an
optional dependency is missing) -- the source is then absent, said once in the log.

>>> sorted(SOURCES)[:3]
['alltime', 'collab', 'content']
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.errors import ConfigurationError
from core.ports import StateStore, VectorIndex
from core.types import Item
from online_models.neighbours import ItemNeighbours
from online_models.sequential import SequentialModel
from online_models.serving.popularity import COUNTS_FILE, ItemCounts, PopularitySnapshot
from online_models.serving.sources import (
    AllTimeSource,
    CollaborativeModels,
    CollabSource,
    ContentSource,
    ContextSource,
    CovisitSource,
    NeighboursSource,
    PopularitySource,
    SequentialSource,
    Source,
)

__all__ = ["DEFAULT_SOURCES", "SOURCES", "SourceDeps", "build_sources"]

log = logging.getLogger(__name__)

#: ``artifact(name, load)`` of :class:`infra.models.ModelProvider`.
Artifacts = Callable[[str, Callable[[Path], Any]], Any]


@dataclass
class SourceDeps:
    """What sources may be built from (one process's state, index, catalog and models)."""

    state: StateStore
    index: VectorIndex
    catalog: Mapping[str, Item]
    popularity: PopularitySnapshot
    #: The current ALS fold-in and an index over its item factors (None, None: no model).
    collaborative: CollaborativeModels = lambda: (None, None)
    #: The current EASE item neighbours (None: no EASE model was trained).
    neighbours: Callable[[], ItemNeighbours | None] = lambda: None
    #: The current sequential network (None: none was trained, e.g. without PyTorch).
    sequential: Callable[[], SequentialModel | None] = lambda: None
    #: ``artifact(name, load)``: the current model version's data-only artifact ``name``,
    #: read by ``load`` from its path (None: the version has none). What a new source
    #: reads from a model version, with no other change to the wiring.
    artifact: Artifacts = lambda name, load: None


def _alltime(deps: SourceDeps) -> Source:
    return AllTimeSource(lambda: deps.artifact(COUNTS_FILE, ItemCounts.load))


SOURCES: dict[str, Callable[[SourceDeps], Source | None]] = {
    "covisit": lambda d: CovisitSource(d.catalog),
    "context": lambda d: ContextSource(d.index),
    "content": lambda d: ContentSource(d.index),
    "collab": lambda d: CollabSource(d.collaborative),
    "popularity": lambda d: PopularitySource(d.catalog, d.popularity),
    "ease": lambda d: NeighboursSource(d.neighbours, "ease"),
    "sequential": lambda d: SequentialSource(d.sequential),
    "alltime": _alltime,
}

#: The order a response lists sources in (and ties of the leading source break by).
DEFAULT_SOURCES = ("covisit", "context", "content", "collab", "ease", "sequential", "popularity",
                   "alltime")


def build_sources(names: Sequence[str], deps: SourceDeps) -> list[Source]:
    """The named sources, in order; unknown names are a configuration error."""
    unknown = [n for n in names if n not in SOURCES]
    if unknown:
        raise ConfigurationError(f"unknown sources {unknown}; choose from {sorted(SOURCES)}")
    built = []
    for name in dict.fromkeys(names):
        source = SOURCES[name](deps)
        if source is None:
            log.info("source %r is absent in this process (its model is unavailable)", name)
            continue
        built.append(source)
    return built
