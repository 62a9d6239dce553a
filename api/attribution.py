"""Attribution: which source earned a click, cart or purchase of a recommended item.

Every list served is remembered for a day (``rec_id`` -> item -> leading source);
feedback events that carry the ``rec_id`` are then counted per source, beside the
items served per leading source, so click-through and conversion per source are
two counters apart (the per-variant counts come from the events' ``variant``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from api.metrics import FEEDBACK_TYPES, api_metrics
from api.recommender import Recommendation
from api.services import services
from core.errors import TemporaryFailure
from core.events import InteractionEvent
from online_models.blender import impression, lead_of

__all__ = ["IMPRESSION_TTL_S", "attribute", "remember"]

log = logging.getLogger(__name__)

#: How long a served list can earn attributed feedback.
IMPRESSION_TTL_S = 24 * 3600


def remember(rec: Recommendation) -> None:
    """Count the list's items per leading source and keep what was shown.

    Kept per item: rank, leading source and source scores -- for attribution here,
    and for the online blender, which learns from clicks on the list (consumers).
    """
    api_metrics().observe_lead_sources(r.lead_source for r in rec.items)
    shown = {r.item.item_id: impression(rank, r.lead_source, r.sources)
             for rank, r in enumerate(rec.items)}
    try:
        services().state.remember_impressions(rec.rec_id, shown, IMPRESSION_TTL_S)
    except TemporaryFailure as exc:  # attribution is best effort; the answer is not
        log.warning("impressions of %s not kept: %s", rec.rec_id, exc)


def attribute(events: Iterable[InteractionEvent]) -> None:
    """Count feedback events carrying a ``rec_id`` under the source that earned them."""
    metrics = api_metrics()
    for event in events:
        if event.rec_id is None or event.event_type not in FEEDBACK_TYPES:
            continue
        try:
            shown = services().state.impressions(event.rec_id).get(event.item_id)
        except TemporaryFailure:
            return
        if shown is not None:
            metrics.observe_attributed(lead_of(shown), event.event_type)
