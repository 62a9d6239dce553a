"""The online blender: learns from clicks on served lists how to weigh the sources.

A River logistic regression over an item's per-source scores predicts whether it
is clicked. Examples come from the stream: when a click carries the ``rec_id`` of
a list, the clicked item is a positive and the items shown above it, which the
shopper skipped, are negatives ("skip-above", Joachims 2002). The model is small
and travels as one pickled blob in the state store, written in the transaction of
the batch that taught it, so a redelivered click is never learnt twice.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Iterable, Mapping
from typing import NamedTuple

import orjson
from river import linear_model, optim

from core.ports import EventBatch, StateStore, StateUpdate

__all__ = ["BLOB", "OnlineBlender", "Shown", "decode_shown", "encode_shown"]

#: Name of the model's blob in the state store.
BLOB = "blender"


class Shown(NamedTuple):
    """One item of a served list, as remembered for attribution and learning."""

    rank: int
    lead: str
    sources: dict[str, float]


def encode_shown(items: Iterable[tuple[str, Shown]]) -> str:
    """A served list as one compact JSON object: item -> [rank, lead, sources].

    One encoding per list (not per item), by orjson: lists are written on every request.
    """
    return orjson.dumps({item: [s.rank, s.lead, s.sources] for item, s in items},
                        option=orjson.OPT_SERIALIZE_NUMPY).decode()


def decode_shown(raw: str | None) -> dict[str, Shown]:
    """What :func:`encode_shown` wrote (empty for None: the list expired or never was)."""
    if not raw:
        return {}
    return {item: Shown(int(rank), str(lead), dict(sources))
            for item, (rank, lead, sources) in json.loads(raw).items()}


class OnlineBlender:
    """Learns source weights from clicks.

    Parameters
    ----------
    learning_rate
        SGD step of the logistic regression.
    max_negatives
        At most this many skipped items (ranked above the click) per click.

    Examples
    --------
    >>> b = OnlineBlender()
    >>> shown = encode_shown([("a", Shown(0, "popularity", {"popularity": 1.0})),
    ...                       ("b", Shown(1, "content", {"content": 0.9}))])
    >>> model = b.new_model()
    >>> for _ in range(50):
    ...     _ = b.learn(model, shown, clicked="b")
    >>> b.score(model, {"content": 0.9}) > b.score(model, {"popularity": 1.0})
    True

    As an online learner of the stream, it learns the clicks that carry a ``rec_id``
    and keeps the model as one blob in the state store:

    >>> from core.events import ItemClicked
    >>> from infra.memory_store import InMemoryStateStore
    >>> store = InMemoryStateStore()
    >>> store.remember_impressions({"r1": shown}, ttl_s=60)
    >>> clicks = [ItemClicked(user_id="u", item_id="b", rec_id="r1", timestamp=1.0)]
    >>> part = b.learn_many(EventBatch(clicks, [1.0], [2.0]), store)
    >>> sorted(part.blobs), part.counters
    (['blender'], {'blender.examples': 2})
    """

    reads = frozenset({"click"})
    writes = frozenset({"blobs", "counters"})

    def __init__(self, learning_rate: float = 0.05, max_negatives: int = 5) -> None:
        self.learning_rate = learning_rate
        self.max_negatives = max_negatives

    def learn_many(self, batch: EventBatch, store: StateStore) -> StateUpdate:
        """Learn the batch's clicks on served lists, starting from the stored model."""
        part = StateUpdate()
        clicks = [e for e in batch.by_type.get("click", ()) if e.rec_id]
        if not clicks:
            return part
        blob = store.get_blob(BLOB)
        model = self.loads(blob) if blob is not None else self.new_model()
        learnt = 0
        for click in clicks:
            assert click.rec_id is not None
            learnt += self.learn(model, store.impressions(click.rec_id), click.item_id)
        if learnt:
            part.blobs[BLOB] = self.dumps(model)
            part.counters["blender.examples"] = learnt
        return part

    def new_model(self) -> linear_model.LogisticRegression:
        return linear_model.LogisticRegression(optimizer=optim.SGD(self.learning_rate))

    def learn(self, model: linear_model.LogisticRegression, shown: str | None,
              clicked: str) -> int:
        """Learn one click on a served list (as :func:`encode_shown` wrote it, None when
        unknown); return how many examples were learnt."""
        rows = decode_shown(shown)
        if clicked not in rows:
            return 0
        rank = rows[clicked].rank
        skipped = sorted((r.rank, item) for item, r in rows.items() if r.rank < rank)
        model.learn_one(rows[clicked].sources, True)
        for _, item in skipped[-self.max_negatives:]:
            model.learn_one(rows[item].sources, False)
        return 1 + min(len(skipped), self.max_negatives)

    @staticmethod
    def score(model: linear_model.LogisticRegression, sources: Mapping[str, float]) -> float:
        """Probability of a click given the item's source scores (scoring never learns)."""
        return float(model.predict_proba_one(dict(sources)).get(True, 0.0))

    @staticmethod
    def dumps(model: linear_model.LogisticRegression) -> bytes:
        return pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)

    @staticmethod
    def loads(blob: bytes) -> linear_model.LogisticRegression:
        # Only blobs this project wrote into its own state store are ever loaded.
        model: linear_model.LogisticRegression = pickle.loads(blob)
        return model
