"""Product search: TF-IDF ranking over names and categories, with a fallback for typos.

A query whose words match nothing is rewritten word by word to the closest
words of the catalog's vocabulary (``difflib``), and searched again; the
rewritten query is reported so the page can say "showing results for ...".

>>> from core.types import Item
>>> search = ProductSearch([Item("1", "White Hanging Heart T-Light Holder", "Light"),
...                         Item("2", "Vanilla Scented Candle", "Candle"),
...                         Item("3", "Set Of 3 Candle Holders", "Candle")])
>>> hits = search.search("candel")
>>> hits.corrected, sorted(hits.ids)
('candle', ['2', '3'])
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

from core.types import Item

__all__ = ["ProductSearch", "SearchHits"]

_WORD = re.compile(r"[a-z0-9]+")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


@dataclass(frozen=True)
class SearchHits:
    """Matching item ids, best first; ``corrected`` is the rewritten query, if any."""

    ids: list[str]
    scores: list[float] = field(default_factory=list)
    corrected: str | None = None


class ProductSearch:
    """Ranked search over a catalog (built once; rebuild for a changed catalog).

    Parameters
    ----------
    items
        The catalog.
    cutoff
        Least ``difflib`` similarity (0-1) for a word to replace a misspelled one.
    """

    def __init__(self, items: Iterable[Item], cutoff: float = 0.75) -> None:
        self.cutoff = cutoff
        self.ids: list[str] = []
        texts: list[str] = []
        for item in items:
            self.ids.append(item.item_id)
            # The name counts twice: a word in the name matters more than the category.
            texts.append(f"{item.name} {item.name} {item.category}")
        self.vectorizer = TfidfVectorizer(token_pattern=r"[a-z0-9]+", sublinear_tf=True)
        self.matrix = self.vectorizer.fit_transform(texts) if texts else None
        self.vocabulary = sorted(self.vectorizer.vocabulary_) if texts else []

    def __len__(self) -> int:
        return len(self.ids)

    def _rank(self, words: list[str]) -> SearchHits:
        if self.matrix is None or not words:
            return SearchHits([])
        query = self.vectorizer.transform([" ".join(words)])
        scores = np.asarray((self.matrix @ query.T).todense()).ravel()
        # Every query word that the vocabulary knows must appear (AND), so that
        # "red mug" does not list every red thing; ranking is by TF-IDF cosine.
        known = [self.vectorizer.vocabulary_[w] for w in words if w in self.vectorizer.vocabulary_]
        if known:
            present = np.asarray((self.matrix[:, known] > 0).sum(axis=1)).ravel()
            scores = np.where(present == len(set(known)), scores, 0.0)
        order = [i for i in np.argsort(-scores, kind="stable") if scores[i] > 0]
        return SearchHits([self.ids[i] for i in order], [float(scores[i]) for i in order])

    def correct(self, words: list[str]) -> list[str]:
        """Each word, or the closest vocabulary word when the word is unknown."""
        fixed = []
        for word in words:
            if word in self.vectorizer.vocabulary_ or not self.vocabulary:
                fixed.append(word)
                continue
            close = difflib.get_close_matches(word, self.vocabulary, n=1, cutoff=self.cutoff)
            fixed.append(close[0] if close else word)
        return fixed

    def search(self, query: str) -> SearchHits:
        """Items matching ``query``, best first; tolerant of misspelled words."""
        words = _words(query)
        if any(w not in self.vectorizer.vocabulary_ for w in words):
            fixed = self.correct(words)
            if fixed != words:
                retry = self._rank(fixed)
                if retry.ids:
                    return SearchHits(retry.ids, retry.scores, corrected=" ".join(fixed))
        return self._rank(words)
