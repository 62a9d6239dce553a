"""Rating-prediction models: biased matrix factorisation, item kNN and a learned blend.

Every model here is fitted on explicit ratings (``Interactions.is_rating``) and
offers two ways to read it:

* :meth:`score` -- the :class:`core.scoring.Scorer` contract: predicted ratings
  for the items the model *can* score. An unknown user gets an empty result and
  unknown items are left out; nothing is invented.
* :meth:`predict` -- vectorised predictions for evaluation (RMSE/MAE), which
  needs a number for every test pair. There, an unknown user or item falls
  back to the baseline part of the model: global mean plus whichever biases
  are known. Use it for metrics, never to rank items for a user.

Both clip predictions to the rating range (given, or the range seen in training).

Models
------
* :class:`RiverBiasedMF` -- River's online ``BiasedMF``, trained for several
  shuffled epochs with ``learn_one``.
* :class:`SVDRegressor` -- Funk SVD with biases (Surprise's ``SVD``), trained
  by mini-batch SGD in NumPy.
* :class:`BiasedALS` -- the same model trained by alternating least squares
  with count-weighted regularisation.
* :class:`ItemKNNBaseline` -- item-item kNN on baseline residuals with shrunk
  Pearson-baseline similarities (Surprise's ``KNNBaseline``).
* :class:`RatingBlend` -- a linear blend of the models above whose weights are
  learned on a held-out slice of the training data only.
"""

from __future__ import annotations

import abc
import copy
from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from river import optim, reco

from core.errors import ConfigurationError, NotFound
from core.scoring import Interactions
from core.types import Item, ScoredItems

__all__ = [
    "BiasedALS",
    "ItemKNNBaseline",
    "RatingBlend",
    "RatingModel",
    "RiverBiasedMF",
    "SVDRegressor",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]


class RatingModel(abc.ABC):
    """Base of the rating models: id coding, clipping, ``score`` and ``predict``.

    Subclasses implement :meth:`_fit` on integer-coded ratings and
    :meth:`_predict_codes`, which receives ``-1`` for an unknown user or item
    and must then return the baseline estimate.
    """

    name: ClassVar[str]

    def __init__(self, rating_range: tuple[float, float] | None = None) -> None:
        self.rating_range = rating_range

    # -- the Scorer contract -------------------------------------------------

    def fit(self, train: Interactions, items: Sequence[Item] = ()) -> None:
        """Learn from the ratings in ``train`` (item content is not used)."""
        if not train.is_rating:
            raise ConfigurationError(f"{type(self).__name__} needs ratings (is_rating=True)")
        if len(train) == 0:
            raise ConfigurationError(f"{type(self).__name__} cannot be fitted on no ratings")
        values = np.asarray(train.values, dtype=np.float64)
        user_ids, users = np.unique(np.asarray(train.users, dtype=str), return_inverse=True)
        item_ids, items_ = np.unique(np.asarray(train.items, dtype=str), return_inverse=True)
        self.user_ids_: list[str] = user_ids.tolist()
        self.item_ids_: list[str] = item_ids.tolist()
        self._user_codes = {u: k for k, u in enumerate(self.user_ids_)}
        self._item_codes = {i: k for k, i in enumerate(self.item_ids_)}
        low, high = self.rating_range or (float(values.min()), float(values.max()))
        self._low, self._high = float(low), float(high)
        self.global_mean_ = float(values.mean())
        self._fit(users.astype(np.intp), items_.astype(np.intp), values)

    def score(self, user_id: str, item_ids: Sequence[str] | None = None) -> ScoredItems:
        """Predicted ratings of ``item_ids`` (all known items when None) for ``user_id``.

        An unknown user gets an empty result; unknown items are left out.
        """
        self._check_fitted()
        user = self._user_codes.get(str(user_id))
        if user is None:
            return ScoredItems.empty()
        if item_ids is None:
            ids = self.item_ids_
            codes = np.arange(len(ids), dtype=np.intp)
        else:
            ids = [i for i in map(str, item_ids) if i in self._item_codes]
            codes = np.array([self._item_codes[i] for i in ids], dtype=np.intp)
        if not ids:
            return ScoredItems.empty()
        users = np.full(len(codes), user, dtype=np.intp)
        return ScoredItems(list(ids), self._clip(self._predict_codes(users, codes)))

    def predict(self, users: npt.ArrayLike, items: npt.ArrayLike) -> FloatArray:
        """Predicted rating for each (user, item) pair, for RMSE/MAE.

        Unlike :meth:`score`, every pair gets a number: an unknown user or item
        is predicted from the global mean and whichever biases are known.
        """
        self._check_fitted()
        u = self._codes(users, self._user_codes)
        i = self._codes(items, self._item_codes)
        if u.shape != i.shape:
            raise ValueError("users and items must have one length")
        return self._clip(self._predict_codes(u, i))

    def score_many(self, user_ids: Sequence[str], item_ids: Sequence[str]) -> FloatArray:
        """Predicted ratings of shape ``(len(user_ids), len(item_ids))``.

        As in :meth:`score`, a pair with an unknown user or item cannot be
        scored: it holds NaN.
        """
        self._check_fitted()
        users = self._codes(np.asarray(user_ids, dtype=str), self._user_codes)
        items = self._codes(np.asarray(item_ids, dtype=str), self._item_codes)
        out = np.full((len(users), len(items)), np.nan)
        rows, cols = np.flatnonzero(users >= 0), np.flatnonzero(items >= 0)
        if rows.size and cols.size:
            out[np.ix_(rows, cols)] = self._clip(self._predict_block(users[rows], items[cols]))
        return out

    # -- for subclasses -------------------------------------------------------

    def _predict_block(self, users: IntArray, items: IntArray) -> FloatArray:
        """Unclipped predictions for every (user, item) of two code arrays."""
        pairs_u, pairs_i = np.repeat(users, len(items)), np.tile(items, len(users))
        return self._predict_codes(pairs_u, pairs_i).reshape(len(users), len(items))

    @abc.abstractmethod
    def _fit(self, users: IntArray, items: IntArray, ratings: FloatArray) -> None: ...

    @abc.abstractmethod
    def _predict_codes(self, users: IntArray, items: IntArray) -> FloatArray: ...

    @property
    def n_users_(self) -> int:
        return len(self.user_ids_)

    @property
    def n_items_(self) -> int:
        return len(self.item_ids_)

    def _clip(self, values: FloatArray) -> FloatArray:
        return np.clip(values, self._low, self._high)

    def _check_fitted(self) -> None:
        if not hasattr(self, "global_mean_"):
            raise NotFound(f"{type(self).__name__} is not fitted: call fit first")

    @staticmethod
    def _codes(ids: npt.ArrayLike, codes: dict[str, int]) -> IntArray:
        flat = np.asarray(ids).ravel()
        return np.fromiter((codes.get(str(x), -1) for x in flat), dtype=np.intp, count=len(flat))

    def __repr__(self) -> str:
        params = ", ".join(
            f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_") and k[-1] != "_"
        )
        return f"{type(self).__name__}({params})"


class _FactorModel(RatingModel):
    """Prediction for models of the form ``mu + b_u + b_i + p_u . q_i``."""

    user_bias_: FloatArray
    item_bias_: FloatArray
    user_factors_: FloatArray
    item_factors_: FloatArray

    def _predict_codes(self, users: IntArray, items: IntArray) -> FloatArray:
        known_u, known_i = users >= 0, items >= 0
        u, i = np.where(known_u, users, 0), np.where(known_i, items, 0)
        pred = (
            self.global_mean_
            + np.where(known_u, self.user_bias_[u], 0.0)
            + np.where(known_i, self.item_bias_[i], 0.0)
        )
        both = known_u & known_i
        dot = np.einsum("ij,ij->i", self.user_factors_[u], self.item_factors_[i])
        return np.asarray(pred + np.where(both, dot, 0.0), dtype=np.float64)

    def _predict_block(self, users: IntArray, items: IntArray) -> FloatArray:
        # Known codes only (see score_many): one matrix product.
        return np.asarray(
            self.global_mean_
            + self.user_bias_[users][:, None]
            + self.item_bias_[items][None, :]
            + self.user_factors_[users] @ self.item_factors_[items].T,
            dtype=np.float64,
        )


class RiverBiasedMF(_FactorModel):
    """River's online ``BiasedMF`` trained for several shuffled epochs.

    Each epoch feeds every training rating once through ``learn_one`` in a
    seeded random order; after training, the biases and factors are read out of
    the River model so that :meth:`predict` is vectorised. The defaults won a
    grid search on an inner validation split of MovieLens-100K fold 1's
    training part (``scripts/check_ml100k.py --tune``).

    Parameters
    ----------
    n_factors
        Length of the latent vectors.
    epochs
        Passes over the training ratings.
    learning_rate
        SGD step of biases and factors.
    l2_bias, l2_latent
        L2 penalties of biases and factors.
    init_std
        Standard deviation of the normal initialisation of the factors.
    rating_range
        ``(low, high)`` to clip predictions to; the training range when None.
    seed
        Seeds the factor initialisation and the epoch shuffles.

    Examples
    --------
    >>> import numpy as np
    >>> from core.scoring import Interactions
    >>> train = Interactions(np.array(["u1", "u1", "u2", "u2"]), np.array(["a", "b", "a", "c"]),
    ...                      np.array([5.0, 3.0, 4.0, 1.0]), np.zeros(4), is_rating=True)
    >>> model = RiverBiasedMF(n_factors=2, epochs=5, seed=0)
    >>> model.fit(train)
    >>> model.score("u1", ["a", "c", "unknown"]).ids
    ['a', 'c']
    >>> float(model.predict(np.array(["new user"]), np.array(["new item"]))[0])
    3.25
    """

    name = "river_biased_mf"

    def __init__(
        self,
        n_factors: int = 20,
        epochs: int = 20,
        learning_rate: float = 0.005,
        l2_bias: float = 0.02,
        l2_latent: float = 0.15,
        init_std: float = 0.1,
        rating_range: tuple[float, float] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(rating_range)
        self.n_factors = n_factors
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.l2_bias = l2_bias
        self.l2_latent = l2_latent
        self.init_std = init_std
        self.seed = seed

    def _fit(self, users: IntArray, items: IntArray, ratings: FloatArray) -> None:
        model = reco.BiasedMF(
            n_factors=self.n_factors,
            bias_optimizer=optim.SGD(self.learning_rate),
            latent_optimizer=optim.SGD(self.learning_rate),
            l2_bias=self.l2_bias,
            l2_latent=self.l2_latent,
            latent_initializer=optim.initializers.Normal(
                mu=0.0, sigma=self.init_std, seed=self.seed
            ),
            seed=self.seed,
        )
        rng = np.random.default_rng(self.seed)
        # River keys are the integer codes: cheaper to hash than the id strings.
        u_list, i_list, r_list = users.tolist(), items.tolist(), ratings.tolist()
        for _ in range(self.epochs):
            for k in rng.permutation(len(r_list)).tolist():
                model.learn_one(u_list[k], i_list[k], r_list[k])
        self.river_model_ = model
        # Every user and item of the training set has been seen, so these reads
        # never create a fresh entry in River's defaultdicts.
        self.user_bias_ = np.array([model.u_biases[u] for u in range(self.n_users_)], dtype=float)
        self.item_bias_ = np.array([model.i_biases[i] for i in range(self.n_items_)], dtype=float)
        self.user_factors_ = np.array([model.u_latents[u] for u in range(self.n_users_)])
        self.item_factors_ = np.array([model.i_latents[i] for i in range(self.n_items_)])
        # River's running mean saw each rating ``epochs`` times: the same mean.
        self.global_mean_ = float(model.global_mean.get())


class SVDRegressor(_FactorModel):
    """Funk SVD with biases, as Surprise's ``SVD``, trained by mini-batch SGD in NumPy.

    Predicts ``mu + b_u + b_i + p_u . q_i``. Each step sums the per-rating SGD
    gradients of a shuffled mini-batch (``np.add.at``); with batches much
    smaller than the number of users this behaves like plain per-rating SGD
    while running at NumPy speed. Defaults are Surprise's.

    Parameters
    ----------
    n_factors
        Length of the latent vectors.
    epochs
        Passes over the training ratings.
    learning_rate
        SGD step.
    regularization
        L2 penalty of biases and factors.
    init_std
        Standard deviation of the normal initialisation of the factors.
    batch_size
        Ratings per SGD step.
    rating_range
        ``(low, high)`` to clip predictions to; the training range when None.
    seed
        Seeds the initialisation and the shuffles.

    Examples
    --------
    >>> import numpy as np
    >>> from core.scoring import Interactions
    >>> train = Interactions(np.array(["u1", "u1", "u2", "u2"]), np.array(["a", "b", "a", "c"]),
    ...                      np.array([5.0, 3.0, 4.0, 1.0]), np.zeros(4), is_rating=True)
    >>> model = SVDRegressor(n_factors=2, seed=0)
    >>> model.fit(train)
    >>> model.score("u2").ids
    ['a', 'b', 'c']
    >>> model.score("new user").ids
    []
    """

    name = "svd"

    def __init__(
        self,
        n_factors: int = 100,
        epochs: int = 20,
        learning_rate: float = 0.005,
        regularization: float = 0.02,
        init_std: float = 0.1,
        batch_size: int = 256,
        rating_range: tuple[float, float] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(rating_range)
        self.n_factors = n_factors
        self.epochs = epochs
        self.learning_rate = learning_rate
        self.regularization = regularization
        self.init_std = init_std
        self.batch_size = batch_size
        self.seed = seed

    def _fit(self, users: IntArray, items: IntArray, ratings: FloatArray) -> None:
        rng = np.random.default_rng(self.seed)
        k, lr, reg = self.n_factors, self.learning_rate, self.regularization
        mu = self.global_mean_
        bu, bi = np.zeros(self.n_users_), np.zeros(self.n_items_)
        p = rng.normal(0.0, self.init_std, (self.n_users_, k))
        q = rng.normal(0.0, self.init_std, (self.n_items_, k))
        for _ in range(self.epochs):
            order = rng.permutation(len(ratings))
            for start in range(0, len(order), self.batch_size):
                batch = order[start : start + self.batch_size]
                u, i, r = users[batch], items[batch], ratings[batch]
                pu, qi = p[u], q[i]
                err = (r - (mu + bu[u] + bi[i] + np.einsum("ij,ij->i", pu, qi)))[:, None]
                np.add.at(bu, u, lr * (err[:, 0] - reg * bu[u]))
                np.add.at(bi, i, lr * (err[:, 0] - reg * bi[i]))
                np.add.at(p, u, lr * (err * qi - reg * pu))
                np.add.at(q, i, lr * (err * pu - reg * qi))
        self.user_bias_, self.item_bias_ = bu, bi
        self.user_factors_, self.item_factors_ = p, q


class BiasedALS(_FactorModel):
    """Biased matrix factorisation ``mu + b_u + b_i + p_u . q_i`` fitted by ALS.

    Each half-step solves one ridge regression per user (then per item) for
    the factors and the bias together, with the penalty scaled by the number
    of ratings of that user or item ("weighted-lambda" regularisation, Zhou et
    al. 2008), which suits the long tail of rating counts. The defaults come
    from a grid search on an inner validation split of MovieLens-100K fold 1's
    training part (``scripts/check_ml100k.py --tune``); 50 factors were kept
    over 100, which was 0.001 RMSE better but three times slower.

    Parameters
    ----------
    n_factors
        Length of the latent vectors.
    iterations
        Alternations (one user and one item half-step each).
    regularization
        Penalty on the factors, times the rating count.
    bias_regularization
        Penalty on the biases, times the rating count.
    init_std
        Standard deviation of the normal initialisation of the factors.
    rating_range
        ``(low, high)`` to clip predictions to; the training range when None.
    seed
        Seeds the initialisation.

    Examples
    --------
    >>> import numpy as np
    >>> from core.scoring import Interactions
    >>> train = Interactions(np.array(["u1", "u1", "u2", "u2"]), np.array(["a", "b", "a", "c"]),
    ...                      np.array([5.0, 3.0, 4.0, 1.0]), np.zeros(4), is_rating=True)
    >>> model = BiasedALS(n_factors=2, rating_range=(1.0, 5.0))
    >>> model.fit(train)
    >>> bool(np.all((model.predict(np.array(["u1", "u2"]), np.array(["c", "b"])) >= 1.0)))
    True
    """

    name = "biased_als"

    def __init__(
        self,
        n_factors: int = 50,
        iterations: int = 15,
        regularization: float = 0.1,
        bias_regularization: float = 0.01,
        init_std: float = 0.1,
        rating_range: tuple[float, float] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(rating_range)
        self.n_factors = n_factors
        self.iterations = iterations
        self.regularization = regularization
        self.bias_regularization = bias_regularization
        self.init_std = init_std
        self.seed = seed

    def _fit(self, users: IntArray, items: IntArray, ratings: FloatArray) -> None:
        rng = np.random.default_rng(self.seed)
        k = self.n_factors
        residual = ratings - self.global_mean_
        by_user = sp.csr_matrix((residual, (users, items)), shape=(self.n_users_, self.n_items_))
        by_item = by_user.T.tocsr()
        p = rng.normal(0.0, self.init_std, (self.n_users_, k))
        q = rng.normal(0.0, self.init_std, (self.n_items_, k))
        bu, bi = np.zeros(self.n_users_), np.zeros(self.n_items_)
        # Penalty per coordinate: factors, then the bias.
        penalty = np.r_[np.full(k, self.regularization), self.bias_regularization]
        for _ in range(self.iterations):
            p, bu = self._half_step(by_user, q, bi, penalty)
            q, bi = self._half_step(by_item, p, bu, penalty)
        self.user_bias_, self.item_bias_ = bu, bi
        self.user_factors_, self.item_factors_ = p, q

    @staticmethod
    def _half_step(
        rows: sp.csr_matrix, other: FloatArray, other_bias: FloatArray, penalty: FloatArray
    ) -> tuple[FloatArray, FloatArray]:
        """Solve ``r - mu - b_other = [x, b] . [y, 1]`` for every row by ridge regression."""
        n, k = rows.shape[0], other.shape[1]
        solution = np.zeros((n, k + 1))
        design_all = np.hstack([other, np.ones((other.shape[0], 1))])
        for row in range(n):
            lo, hi = rows.indptr[row], rows.indptr[row + 1]
            if lo == hi:
                continue
            cols = rows.indices[lo:hi]
            design = design_all[cols]
            target = rows.data[lo:hi] - other_bias[cols]
            gram = design.T @ design + np.diag(penalty * (hi - lo))
            solution[row] = np.linalg.solve(gram, design.T @ target)
        return solution[:, :k], solution[:, k]


class ItemKNNBaseline(RatingModel):
    """Item-item kNN on baseline residuals, as Surprise's ``KNNBaseline``.

    The baseline ``mu + b_u + b_i`` is fitted by regularised alternating
    averages; item similarities are Pearson correlations of the baseline
    residuals over common raters, shrunk by ``(n - 1) / (n - 1 + shrinkage)``.
    A prediction adds to the baseline the similarity-weighted mean residual of
    the ``k`` items the user rated that are most similar to the target
    (positive similarities only).
    The defaults are Surprise's; the tuning grid of ``scripts/check_ml100k.py``
    found nothing better by more than 0.001 RMSE.

    Parameters
    ----------
    k
        Neighbours per prediction.
    shrinkage
        Shrinks similarities computed from few common raters.
    user_reg, item_reg
        Penalties of the baseline biases.
    baseline_iterations
        Alternations of the baseline fit.
    rating_range
        ``(low, high)`` to clip predictions to; the training range when None.

    Examples
    --------
    >>> import numpy as np
    >>> from core.scoring import Interactions
    >>> train = Interactions(np.array(["u1", "u1", "u2", "u2"]), np.array(["a", "b", "a", "c"]),
    ...                      np.array([5.0, 3.0, 4.0, 1.0]), np.zeros(4), is_rating=True)
    >>> model = ItemKNNBaseline(k=5)
    >>> model.fit(train)
    >>> model.score("u1", ["c", "b", "unknown"]).ids
    ['c', 'b']
    """

    name = "item_knn_baseline"

    def __init__(
        self,
        k: int = 40,
        shrinkage: float = 100.0,
        user_reg: float = 15.0,
        item_reg: float = 10.0,
        baseline_iterations: int = 10,
        rating_range: tuple[float, float] | None = None,
    ) -> None:
        super().__init__(rating_range)
        self.k = k
        self.shrinkage = shrinkage
        self.user_reg = user_reg
        self.item_reg = item_reg
        self.baseline_iterations = baseline_iterations

    def _fit(self, users: IntArray, items: IntArray, ratings: FloatArray) -> None:
        nu, ni = self.n_users_, self.n_items_
        residual = ratings - self.global_mean_
        n_u = np.bincount(users, minlength=nu)
        n_i = np.bincount(items, minlength=ni)
        bu, bi = np.zeros(nu), np.zeros(ni)
        for _ in range(self.baseline_iterations):
            bi = np.bincount(items, residual - bu[users], minlength=ni) / (self.item_reg + n_i)
            bu = np.bincount(users, residual - bi[items], minlength=nu) / (self.user_reg + n_u)
        self.user_bias_, self.item_bias_ = bu, bi

        e = residual - bu[users] - bi[items]
        shape = (nu, ni)
        resid = sp.csr_matrix((e, (users, items)), shape=shape)
        rated = sp.csr_matrix((np.ones_like(e), (users, items)), shape=shape)
        squares = resid.multiply(resid).tocsr()
        common = (rated.T @ rated).toarray()
        dot = (resid.T @ resid).toarray()
        # sq[i, j]: sum of e_ui^2 over the users who rated both i and j.
        sq = (squares.T @ rated).toarray()
        denom = np.sqrt(sq * sq.T)
        sim = np.divide(dot, denom, out=np.zeros_like(dot), where=denom > 0)
        sim *= np.maximum(common - 1.0, 0.0) / (common - 1.0 + self.shrinkage)
        np.fill_diagonal(sim, 0.0)
        self.similarity_ = sim
        self._residuals = resid

    def _baseline(self, users: IntArray, items: IntArray) -> FloatArray:
        known_u, known_i = users >= 0, items >= 0
        return np.asarray(
            self.global_mean_
            + np.where(known_u, self.user_bias_[np.maximum(users, 0)], 0.0)
            + np.where(known_i, self.item_bias_[np.maximum(items, 0)], 0.0),
            dtype=np.float64,
        )

    def _predict_codes(self, users: IntArray, items: IntArray) -> FloatArray:
        pred = self._baseline(users, items)
        known = np.flatnonzero((users >= 0) & (items >= 0))
        if known.size == 0:
            return pred
        order = known[np.argsort(users[known], kind="stable")]
        groups = np.split(order, np.flatnonzero(np.diff(users[order])) + 1)
        indptr, indices, data = (
            self._residuals.indptr,
            self._residuals.indices,
            self._residuals.data,
        )
        for rows in groups:
            u = users[rows[0]]
            rated, e = indices[indptr[u] : indptr[u + 1]], data[indptr[u] : indptr[u + 1]]
            sims = self.similarity_[np.ix_(items[rows], rated)]
            if sims.shape[1] > self.k:
                top = np.argpartition(-sims, self.k - 1, axis=1)[:, : self.k]
                sims, e_top = np.take_along_axis(sims, top, axis=1), e[top]
            else:
                e_top = np.broadcast_to(e, sims.shape)
            weights = np.maximum(sims, 0.0)
            total = weights.sum(axis=1)
            offset = np.divide(
                (weights * e_top).sum(axis=1), total, out=np.zeros(len(rows)), where=total > 0
            )
            pred[rows] += offset
        return pred


class RatingBlend(RatingModel):
    """Linear blend of rating models, weighted by least squares on a held-out slice.

    ``fit`` holds out a seeded ``holdout`` fraction of the *training* ratings,
    fits a copy of each component on the rest, learns blend weights (with an
    intercept, lightly ridge-regularised) from the components' predictions on
    the held-out slice, then refits the components on all training ratings.
    The test data are never seen.

    Parameters
    ----------
    components
        Unfitted rating models to blend; :class:`BiasedALS` and
        :class:`ItemKNNBaseline` when None.
    holdout
        Fraction of the training ratings used to learn the weights.
    ridge
        L2 penalty on the blend weights.
    rating_range
        ``(low, high)`` to clip predictions to; the training range when None.
    seed
        Seeds the held-out slice.

    Examples
    --------
    >>> import numpy as np
    >>> from core.scoring import Interactions
    >>> rng = np.random.default_rng(0)
    >>> users = rng.integers(0, 30, 600).astype(str)
    >>> items = rng.integers(0, 20, 600).astype(str)
    >>> train = Interactions(users, items, rng.integers(1, 6, 600).astype(float),
    ...                      np.zeros(600), is_rating=True)
    >>> blend = RatingBlend([SVDRegressor(n_factors=4), ItemKNNBaseline(k=5)])
    >>> blend.fit(train)
    >>> blend.weights_.shape
    (3,)
    >>> len(blend.score("3"))
    20
    """

    name = "rating_blend"

    def __init__(
        self,
        components: Sequence[RatingModel] | None = None,
        holdout: float = 0.1,
        ridge: float = 1.0,
        rating_range: tuple[float, float] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(rating_range)
        self.components = components
        self.holdout = holdout
        self.ridge = ridge
        self.seed = seed

    def _prototypes(self) -> list[RatingModel]:
        if self.components is None:
            return [BiasedALS(), ItemKNNBaseline()]
        if not self.components:
            raise ConfigurationError("RatingBlend needs at least one component")
        return list(self.components)

    def _fit(self, users: IntArray, items: IntArray, ratings: FloatArray) -> None:
        rng = np.random.default_rng(self.seed)
        held = rng.random(len(ratings)) < self.holdout
        if held.all() or not held.any():
            raise ConfigurationError("RatingBlend needs ratings on both sides of the holdout")
        u_ids, i_ids = np.asarray(self.user_ids_), np.asarray(self.item_ids_)

        def interactions(mask: npt.NDArray[np.bool_]) -> Interactions:
            n = int(mask.sum())
            return Interactions(
                u_ids[users[mask]], i_ids[items[mask]], ratings[mask], np.zeros(n), is_rating=True
            )

        rating_range = (self._low, self._high)
        fit_part, held_part = interactions(~held), interactions(held)
        features = []
        for prototype in self._prototypes():
            model = copy.deepcopy(prototype)
            model.rating_range = rating_range
            model.fit(fit_part)
            features.append(model.predict(held_part.users, held_part.items))
        x = np.column_stack([np.ones(int(held.sum())), *features])
        penalty = np.full(x.shape[1], self.ridge)
        penalty[0] = 0.0  # never shrink the intercept
        self.weights_ = np.linalg.solve(x.T @ x + np.diag(penalty), x.T @ ratings[held])

        self.models_: list[RatingModel] = []
        full = interactions(np.ones(len(ratings), dtype=bool))
        for prototype in self._prototypes():
            model = copy.deepcopy(prototype)
            model.rating_range = rating_range
            model.fit(full)
            self.models_.append(model)

    # Components were fitted on the same ratings, so they share the codes.
    def _predict_codes(self, users: IntArray, items: IntArray) -> FloatArray:
        parts = [m._clip(m._predict_codes(users, items)) for m in self.models_]
        return self._combine(parts)

    def _predict_block(self, users: IntArray, items: IntArray) -> FloatArray:
        parts = [m._clip(m._predict_block(users, items)) for m in self.models_]
        return self._combine(parts)

    def _combine(self, parts: list[FloatArray]) -> FloatArray:
        pred = np.full(parts[0].shape, self.weights_[0])
        for weight, part in zip(self.weights_[1:], parts, strict=True):
            pred += weight * part
        return pred
