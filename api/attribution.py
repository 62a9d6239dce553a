"""Attribution: which source earned a click, cart or purchase of a recommended item.

Every list served is remembered for a day (``rec_id`` -> item -> leading source);
feedback events that carry the ``rec_id`` are then counted per source, beside the
items served per leading source, so click-through and conversion per source are
two counters apart (the per-variant counts come from the events' ``variant``).

Lists are written by an :class:`api.impressions.ImpressionWriter` off the request
path (feedback handled in this process flushes its queue first).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence

from api.metrics import FEEDBACK_TYPES, api_metrics
from api.services import ApiServices, services
from core.errors import TemporaryFailure
from core.events import InteractionEvent
from online_models.blender import Shown, decode_shown
from online_models.serving.pipeline import Recommendation

__all__ = ["attribute", "remember", "written_before"]


def remember(rec: Recommendation) -> None:
    """Count the list's items per leading source and keep what was shown.

    Kept per item: rank, leading source and source scores -- for attribution here,
    and for the online blender, which learns from clicks on the list (consumers).
    Bounded, as anyone may ask for lists: the top ``impression_max_items`` only, and
    for ``anonymous_impression_ttl_s`` when nothing in the list was personal.
    """
    api_metrics().observe_lead_sources(r.lead_source for r in rec.items)
    svc = services()
    settings = svc.settings
    top = rec.items[:settings.impression_max_items]
    shown = [(r.item.item_id, Shown(rank, r.lead_source, r.sources))
             for rank, r in enumerate(top)]
    if shown:
        personal = any(source != "popularity" for r in top for source in r.sources)
        svc.impressions.add(rec.rec_id, shown, settings.impression_ttl_s if personal
                            else settings.anonymous_impression_ttl_s)


def written_before(events: Sequence[InteractionEvent], svc: ApiServices | None = None
                   ) -> list[InteractionEvent]:
    """``events``, once every list this process served is written, if any carries a ``rec_id``.

    Consumers learn from clicks on served lists: the list must be in the store before
    the click reaches them (best effort: Redis down loses attribution, not events).
    """
    if any(e.rec_id is not None for e in events):
        with contextlib.suppress(TemporaryFailure):
            (svc or services()).impressions.flush()
    return list(events)


def attribute(events: Iterable[InteractionEvent]) -> None:
    """Count feedback events carrying a ``rec_id`` under the source that earned them."""
    metrics = api_metrics()
    for event in events:
        if event.rec_id is None or event.event_type not in FEEDBACK_TYPES:
            continue
        try:
            shown = decode_shown(services().state.impressions(event.rec_id)).get(event.item_id)
        except TemporaryFailure:
            return
        if shown is not None:
            metrics.observe_attributed(shown.lead, event.event_type)
