"""Content embeddings of catalog items: TF-IDF over their text, reduced by truncated SVD.

The vectors feed the item index (content candidates, "more like this") and the
user content profiles. A fitted embedder also embeds items it has never seen,
which is how a new product gets a vector the moment it is listed.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.preprocessing import normalize

from core.errors import DataNotFound, InvalidRequest
from core.types import Item

__all__ = ["ContentEmbedder"]

log = logging.getLogger(__name__)

_FORMAT = "streamrec.content-embedder/2"
#: The two vectorizers, as built by :meth:`ContentEmbedder.fit` and rebuilt by ``load``.
_WORD_SETTINGS: dict[str, Any] = {"ngram_range": (1, 2), "sublinear_tf": True,
                                  "token_pattern": r"(?u)\b\w+\b"}
_CHAR_SETTINGS: dict[str, Any] = {"analyzer": "char_wb", "ngram_range": (3, 5),
                                  "sublinear_tf": True}
#: Character n-grams weigh half as much as words: they catch plurals, typos and
#: compounds ("t-light" / "tlight") in new names without drowning the words.
_CHAR_WEIGHT = 0.5


class ContentEmbedder:
    """Embed items from their name, category and description.

    Word unigrams and bigrams plus character 3-5-grams (within words) are weighted
    by TF-IDF with sublinear term frequency, stacked, reduced by truncated SVD
    (LSA, exact ARPACK solver) and L2-normalised, so the inner product of two
    vectors is their cosine.

    Parameters
    ----------
    dim
        Width of the vectors. An SVD cannot have more components than the catalog
        has items or the vocabulary has terms, so a tiny catalog gets narrower
        vectors: the width actually used is ``dim_`` after :meth:`fit`
        (``min(dim, n_items, n_terms)``). Size the vector index from ``dim_``.
    random_state
        Seed of the randomised SVD; the same items and seed give the same vectors.

    Attributes
    ----------
    dim_
        The vector width after fitting.

    Notes
    -----
    Text that shares no word and no character n-gram with the fitted catalog
    embeds to the zero vector (nothing is known about it); callers check with
    ``np.linalg.norm`` and leave such items out of the index, which rejects zero
    vectors. Saved files are data only (JSON vocabularies plus NumPy arrays read with
    ``allow_pickle=False``): loading one never executes code.

    Examples
    --------
    >>> from core.types import Item
    >>> items = [
    ...     Item("m1", "Red Coffee Mug", "Kitchen"),
    ...     Item("m2", "Blue Tea Mug", "Kitchen"),
    ...     Item("s1", "Wool Winter Scarf", "Clothing"),
    ...     Item("s2", "Silk Summer Scarf", "Clothing"),
    ... ]
    >>> embedder = ContentEmbedder(dim=64)
    >>> vectors = embedder.fit_transform(items)
    >>> vectors.shape, vectors.dtype, embedder.dim_  # 64 capped by a 4-item catalog
    ((4, 4), dtype('float32'), 4)
    >>> new = embedder.transform([Item("m3", "Green Mug", "Kitchen")])
    >>> [items[i].item_id for i in np.argsort(-(vectors @ new[0]))[:2]]
    ['m2', 'm1']
    """

    def __init__(self, dim: int = 64, random_state: int = 0) -> None:
        if dim < 1:
            raise InvalidRequest(f"dim must be at least 1, got {dim}")
        self.dim = dim
        self.random_state = random_state
        self._words: TfidfVectorizer | None = None
        self._chars: TfidfVectorizer | None = None
        # The SVD's components (n_components x n_terms): transform is x @ components.T,
        # so this matrix is all of the SVD a saved embedder needs.
        self._components: npt.NDArray[np.float64] | None = None

    def __repr__(self) -> str:
        return f"ContentEmbedder(dim={self.dim}, random_state={self.random_state})"

    @property
    def dim_(self) -> int:
        """The width of the vectors :meth:`transform` returns (after :meth:`fit`)."""
        return int(self._fitted()[2].shape[0])

    @property
    def is_fitted(self) -> bool:
        return self._components is not None

    def fit(self, items: Sequence[Item]) -> None:
        """Learn the vocabulary, the IDF weights and the SVD from a catalog."""
        texts = _texts(items)
        if not texts:
            raise InvalidRequest("cannot fit a content embedder on an empty catalog")
        words = TfidfVectorizer(**_WORD_SETTINGS)
        chars = TfidfVectorizer(**_CHAR_SETTINGS)
        try:
            x = sp.hstack([words.fit_transform(texts),
                           _CHAR_WEIGHT * chars.fit_transform(texts)]).tocsr()
        except ValueError:  # every text empty (a log without an items file): no vocabulary
            log.warning("content embedder: none of the %d items has text; every item embeds "
                        "to the zero vector (no content candidates) until one does",
                        len(texts))
            self._words = self._chars = None
            self._components = np.zeros((1, 0))
            return
        n_components = min(self.dim, x.shape[0], x.shape[1])
        # ARPACK is exact and, at catalog sizes, faster than the randomised solver,
        # but needs n_components < min(x.shape); tiny catalogs fall back.
        algorithm = "arpack" if n_components < min(x.shape) else "randomized"
        svd = TruncatedSVD(n_components=n_components, algorithm=algorithm,
                           random_state=self.random_state)
        svd.fit(x)
        self._words, self._chars, self._components = words, chars, svd.components_

    def transform(self, items: Sequence[Item]) -> npt.NDArray[np.float32]:
        """Unit vectors of ``items`` (seen or new), one row each, shape ``(n, dim_)``."""
        words, chars, components = self._fitted()
        texts = _texts(items)
        if not texts or words is None or chars is None:  # none, or an empty vocabulary
            return np.zeros((len(texts), self.dim_), dtype=np.float32)
        x = sp.hstack([words.transform(texts), _CHAR_WEIGHT * chars.transform(texts)]).tocsr()
        return np.asarray(normalize(x @ components.T), dtype=np.float32)

    def fit_transform(self, items: Sequence[Item]) -> npt.NDArray[np.float32]:
        """:meth:`fit` on ``items``, then :meth:`transform` them."""
        self.fit(items)
        return self.transform(items)

    def save(self, path: Path) -> None:
        """Write the fitted embedder: ``path`` (JSON) and ``path`` with ``.npz`` (arrays).

        Data only: the vocabularies as term lists, the IDF weights and the SVD's
        components; each file is written atomically (write, then rename), arrays first,
        so a reader that finds the JSON finds its arrays.
        """
        words, chars, components = self._fitted()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = _arrays_path(path)
        tmp = arrays.with_name(arrays.name + ".tmp.npz")
        none = np.zeros(0)  # an empty vocabulary has no weights
        np.savez(tmp, word_idf=none if words is None else words.idf_,
                 char_idf=none if chars is None else chars.idf_, components=components)
        os.replace(tmp, arrays)
        config = {"format": _FORMAT, "dim": self.dim, "random_state": self.random_state,
                  "words": [] if words is None else _terms(words),
                  "chars": [] if chars is None else _terms(chars)}
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(config), encoding="utf-8")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> ContentEmbedder:
        """Read an embedder written by :meth:`save` (no code is executed).

        Raises
        ------
        core.errors.DataNotFound
            When ``path`` or its arrays do not exist or hold no saved embedder.
        """
        path, arrays = Path(path), _arrays_path(Path(path))
        if not path.is_file() or not arrays.is_file():
            raise DataNotFound(f"no content embedder at {path}", details={"path": str(path)})
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
            with np.load(arrays, allow_pickle=False) as data:
                word_idf, char_idf = data["word_idf"], data["char_idf"]
                components = np.asarray(data["components"], dtype=np.float64)
            if not isinstance(config, dict) or config.get("format") != _FORMAT:
                raise ValueError(f"not {_FORMAT}")
            embedder = cls(dim=int(config["dim"]), random_state=int(config["random_state"]))
            empty = config["words"] == [] and config["chars"] == []
            words = None if empty else _vectorizer(_WORD_SETTINGS, config["words"], word_idf)
            chars = None if empty else _vectorizer(_CHAR_SETTINGS, config["chars"], char_idf)
            if components.shape != (components.shape[0], len(config["words"])
                                    + len(config["chars"])):
                raise ValueError("the SVD does not match the vocabularies")
        except (OSError, KeyError, TypeError, ValueError, UnicodeDecodeError) as exc:
            raise DataNotFound(f"{path} is not a saved content embedder: {exc}") from exc
        embedder._words, embedder._chars, embedder._components = words, chars, components
        return embedder

    def _fitted(self) -> tuple[TfidfVectorizer | None, TfidfVectorizer | None,
                               npt.NDArray[np.float64]]:
        """The vectorizers (both None: the catalog had no text) and the SVD's components."""
        if self._components is None:
            raise InvalidRequest("the content embedder is not fitted: call fit(items) first")
        return self._words, self._chars, self._components


def _arrays_path(path: Path) -> Path:
    return path.with_name(path.stem + ".npz")


def _terms(vectorizer: TfidfVectorizer) -> list[str]:
    """The vocabulary as a list: the term of column ``j`` at position ``j``."""
    terms = [""] * len(vectorizer.vocabulary_)
    for term, column in vectorizer.vocabulary_.items():
        terms[column] = term
    return terms


def _vectorizer(settings: dict[str, Any], terms: list[str],
                idf: npt.NDArray[np.float64]) -> TfidfVectorizer:
    """A fitted TF-IDF vectorizer rebuilt from its vocabulary and IDF weights."""
    if (not isinstance(terms, list) or len(terms) != len(idf)
            or len(set(terms)) != len(terms) or not all(isinstance(t, str) for t in terms)):
        raise ValueError("a vocabulary does not match its IDF weights")
    vectorizer = TfidfVectorizer(**settings, vocabulary=terms)
    vectorizer.idf_ = np.asarray(idf, dtype=np.float64)
    return vectorizer


def _texts(items: Sequence[Item]) -> list[str]:
    return [item.text for item in items]
