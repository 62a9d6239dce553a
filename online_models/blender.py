"""The online blender: learns from clicks on served lists how to weigh the sources.

A River logistic regression over an item's per-source scores predicts whether it
is clicked. Examples come from the stream: when a click carries the ``rec_id`` of
a list, the clicked item is a positive and the items shown above it, which the
shopper skipped, are negatives ("skip-above", Joachims 2002). The model is small
and travels as one blob in the state store, written in the transaction of the
batch that taught it, so a redelivered click is never learnt twice. The blob is
data only (JSON: weights, intercept, step count), never a pickle: whoever can
write to Redis must not be able to run code in the API and the consumers.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import orjson
from river import linear_model, optim

from core.ports import EventBatch, StateStore, StateUpdate

__all__ = ["BLOB", "BlenderCache", "BlenderStateError", "OnlineBlender", "Shown",
           "decode_shown", "encode_shown"]

log = logging.getLogger(__name__)

#: Name of the model's blob in the state store.
BLOB = "blender"
#: The ``format`` field of a blob this version writes and reads.
BLOB_FORMAT = "streamrec.blender/1"
#: Most features (sources) a blob may carry: a few are real, more means a forged blob.
MAX_FEATURES = 256


class BlenderStateError(ValueError):
    """A blender blob that is not data this project wrote (a pickle, junk, bad numbers)."""


def _finite(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BlenderStateError(f"{what} is not a finite number")
    return float(value)


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
        model = self.restore(blob)
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
        """The model's learnt numbers as JSON (what :meth:`loads` reads back)."""
        return orjson.dumps({
            "format": BLOB_FORMAT,
            "weights": {str(k): float(v) for k, v in model.weights.items()},
            "intercept": float(model.intercept),
            "n_iterations": int(model.optimizer.n_iterations),
        })

    def loads(self, blob: bytes) -> linear_model.LogisticRegression:
        """A model from :meth:`dumps`' JSON; :class:`BlenderStateError` for anything else.

        Parsed as JSON and checked field by field: no code path runs what the blob says.
        """
        try:
            data = orjson.loads(blob)
        except orjson.JSONDecodeError as exc:
            raise BlenderStateError("the blender blob is not JSON (an old pickle?)") from exc
        if not isinstance(data, dict) or data.get("format") != BLOB_FORMAT:
            raise BlenderStateError(f"the blender blob is not in the {BLOB_FORMAT} format")
        weights, steps = data.get("weights"), data.get("n_iterations")
        if not isinstance(weights, dict) or len(weights) > MAX_FEATURES:
            raise BlenderStateError(f"weights must be an object of at most {MAX_FEATURES}")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise BlenderStateError("n_iterations must be a count")
        model = self.new_model()
        for name, weight in weights.items():
            model._weights[name] = _finite(weight, f"weight {name!r}")
        model.intercept = _finite(data.get("intercept"), "intercept")
        model.optimizer.n_iterations = steps
        return model

    def restore(self, blob: bytes | None) -> linear_model.LogisticRegression:
        """The stored model, or a new one when there is none or it is refused (logged)."""
        if blob is None:
            return self.new_model()
        try:
            return self.loads(blob)
        except BlenderStateError as exc:
            log.error("stored blender model refused, starting a new one: %s", exc)
            return self.new_model()


class BlenderCache:
    """The online blender's latest model from the state store, re-read every few seconds.

    A blob that is not the blender's JSON is refused and logged (never unpickled); the
    last good model stays.
    """

    def __init__(self, state: StateStore, max_age_s: float = 5.0) -> None:
        self.state = state
        self.max_age_s = max_age_s
        self._read_at = -float("inf")
        self._model: linear_model.LogisticRegression | None = None
        self._blender = OnlineBlender()

    def current(self) -> linear_model.LogisticRegression | None:
        now = time.monotonic()
        if now - self._read_at >= self.max_age_s:
            self._read_at = now
            blob = self.state.get_blob(BLOB)
            if blob is not None:
                try:
                    self._model = self._blender.loads(blob)
                except BlenderStateError as exc:  # never unpickled: refused, and said so
                    log.error("stored blender model refused: %s", exc)
        return self._model
