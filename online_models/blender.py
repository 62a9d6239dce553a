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
import time
from collections.abc import Iterable, Mapping
from typing import NamedTuple

import orjson
from river import linear_model, optim

from core.ports import StateStore

__all__ = ["BLOB", "BlenderCache", "OnlineBlender", "Shown", "decode_shown", "encode_shown"]

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
    """

    def __init__(self, learning_rate: float = 0.05, max_negatives: int = 5) -> None:
        self.learning_rate = learning_rate
        self.max_negatives = max_negatives

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


class BlenderCache:
    """The online blender's latest model from the state store, re-read every few seconds."""

    def __init__(self, state: StateStore, max_age_s: float = 5.0) -> None:
        self.state = state
        self.max_age_s = max_age_s
        self._read_at = -float("inf")
        self._model: linear_model.LogisticRegression | None = None

    def current(self) -> linear_model.LogisticRegression | None:
        now = time.monotonic()
        if now - self._read_at >= self.max_age_s:
            self._read_at = now
            blob = self.state.get_blob(BLOB)
            if blob is not None:
                self._model = OnlineBlender.loads(blob)
        return self._model
