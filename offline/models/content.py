"""Content-based scorer: TF-IDF over item text, user profile = mean of their items."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.preprocessing import normalize

from core.scoring import Interactions
from core.types import Item
from offline.models.base import FloatMatrix, MatrixScorer

__all__ = ["ContentScorer"]


class ContentScorer(MatrixScorer):
    """Cosine between an item's TF-IDF vector and the user's normalised profile.

    Items of the catalog that nobody interacted with are scored too (their
    text is known); items without text are left out. On a data set with no item
    text at all it can score nothing: ``skip_reason_`` says so.

    Parameters
    ----------
    ngram_range, min_df, max_features
        TF-IDF vocabulary settings (word n-grams).

    >>> from core.scoring import Interactions
    >>> items = [Item("a", "red tea cup"), Item("b", "red tea pot"), Item("c", "garden hose")]
    >>> model = ContentScorer()
    >>> model.fit(Interactions.from_records([("u", "a", 1, 0)]), items)
    >>> model.score("u", ["b", "c"]).top(1).ids
    ['b']
    """

    name = "content"

    def __init__(self, ngram_range: tuple[int, int] = (1, 2), min_df: int = 1,
                 max_features: int | None = 50_000) -> None:
        super().__init__()
        self.ngram_range = ngram_range
        self.min_df = min_df
        self.max_features = max_features
        self.item_vectors_: sp.csr_matrix = sp.csr_matrix((0, 0))
        self.has_text_: npt.NDArray[np.bool_] = np.zeros(0, dtype=bool)

    def _item_universe(self, train: Interactions, items: Sequence[Item]) -> list[str]:
        return sorted(set(np.unique(train.items).tolist()) | {i.item_id for i in items})

    def _fit(self, matrix: sp.csr_matrix, items: Sequence[Item]) -> None:
        text = {i.item_id: i.text for i in items}
        docs = [text.get(i, "") for i in self.item_ids_]
        self.has_text_ = np.array([bool(d.strip()) for d in docs], dtype=bool)
        if not self.has_text_.any():
            self.skip_reason_ = "no item text in this data set"
            self.item_vectors_ = sp.csr_matrix((len(docs), 1))
            return
        vectorizer = TfidfVectorizer(ngram_range=self.ngram_range, sublinear_tf=True,
                                     min_df=self.min_df, max_features=self.max_features)
        vectorizer.fit([d for d, ok in zip(docs, self.has_text_, strict=True) if ok])
        self.item_vectors_ = sp.csr_matrix(normalize(vectorizer.transform(docs)))

    def _score_rows(self, rows: npt.NDArray[np.int64]) -> FloatMatrix:
        assert self.matrix_ is not None
        history = (self.matrix_[rows] > 0).astype(np.float64)
        profiles = normalize(history @ self.item_vectors_)
        scores = np.asarray((profiles @ self.item_vectors_.T).toarray(), dtype=np.float64)
        scores[:, ~self.has_text_] = np.nan
        # a user none of whose items has text has no profile: nothing to score
        no_profile = np.asarray(abs(profiles).sum(axis=1)).ravel() == 0
        scores[no_profile] = np.nan
        return scores
