"""Online rating prediction: River's BiasedMF learning from the rating stream.

The model's parameters live in the state store (shared by every consumer and the
API), not in one process: for each batch the consumer loads the parameters of the
batch's users and items into a River ``BiasedMF``, lets River learn the ratings one
by one (``learn_one``), and writes the changed parameters back in the batch's
transaction -- so a redelivered batch (already applied, hence skipped) is never
learnt twice, and a restarted consumer continues from where the state is.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
from river import optim, reco, stats

from core.events import Rated
from core.ports import EventBatch, RatingParams, StateStore, StateUpdate

__all__ = ["OnlineRatingMF"]


class OnlineRatingMF:
    """Biased matrix factorisation learnt online with River.

    Parameters
    ----------
    n_factors, learning_rate, l2_bias, l2_latent
        As River's ``reco.BiasedMF`` (SGD for biases and latents).
    seed
        Seed of the latent initialisation of new users and items.

    Examples
    --------
    >>> mf = OnlineRatingMF(n_factors=2)
    >>> ratings = [Rated(user_id="u", item_id="a", rating=5, timestamp=1.0),
    ...            Rated(user_id="v", item_id="a", rating=4, timestamp=2.0)]
    >>> params = mf.learn(ratings, RatingParams())
    >>> round(params.mean, 2), sorted(params.users), sorted(params.items)
    (4.5, ['u', 'v'], ['a'])
    >>> 1.0 <= mf.predict(params, "u", "a") <= 5.0
    True

    As an online learner of the stream, its parameters live in the state store:

    >>> from infra.memory_store import InMemoryStateStore
    >>> part = mf.learn_many(EventBatch(ratings, [1.0, 2.0], [8.0, 6.0]), InMemoryStateStore())
    >>> round(part.rating.mean, 2)
    4.5
    """

    reads = frozenset({"rating"})
    writes = frozenset({"rating"})

    def __init__(
        self,
        n_factors: int = 10,
        learning_rate: float = 0.02,
        l2_bias: float = 0.02,
        l2_latent: float = 0.05,
        seed: int = 0,
    ) -> None:
        self.n_factors = n_factors
        self.learning_rate = learning_rate
        self.l2_bias = l2_bias
        self.l2_latent = l2_latent
        self.seed = seed

    def _river(self, params: RatingParams) -> reco.BiasedMF:
        model = reco.BiasedMF(
            n_factors=self.n_factors,
            bias_optimizer=optim.SGD(self.learning_rate),
            latent_optimizer=optim.SGD(self.learning_rate),
            l2_bias=self.l2_bias,
            l2_latent=self.l2_latent,
            latent_initializer=optim.initializers.Normal(mu=0.0, sigma=0.1, seed=self.seed),
            seed=self.seed,
        )
        model.global_mean = stats.Mean._from_state(n=params.n, mean=params.mean)
        for ids, biases, latents in ((params.users, model.u_biases, model.u_latents),
                                     (params.items, model.i_biases, model.i_latents)):
            for key, vector in ids.items():
                biases[key] = float(vector[0])
                latents[key] = np.asarray(vector[1:], dtype=np.float64)
        return model

    def learn_many(self, batch: EventBatch, store: StateStore) -> StateUpdate:
        """Learn the batch's ratings from the stored parameters of their users and items."""
        ratings = [e for e in batch.by_type.get("rating", ()) if isinstance(e, Rated)]
        if not ratings:
            return StateUpdate()
        params = store.get_rating_params([e.user_id for e in ratings],
                                         [e.item_id for e in ratings])
        return StateUpdate(rating=self.learn(ratings, params))

    def learn(self, ratings: Sequence[Rated], params: RatingParams) -> RatingParams:
        """Learn ``ratings`` (in time order) from ``params``; return the changed parameters."""
        model = self._river(params)
        for event in sorted(ratings, key=lambda e: e.ts):
            model.learn_one(event.user_id, event.item_id, float(event.rating))

        def packed(
            keys: set[str], biases: Mapping[Hashable, float],
            latents: Mapping[Hashable, np.ndarray],
        ) -> dict[str, np.ndarray]:
            return {k: np.concatenate(([biases[k]], latents[k])).astype(np.float32)
                    for k in keys}

        return RatingParams(
            n=float(model.global_mean.n),
            mean=float(model.global_mean.get()),
            users=packed({e.user_id for e in ratings}, model.u_biases, model.u_latents),
            items=packed({e.item_id for e in ratings}, model.i_biases, model.i_latents),
        )

    @staticmethod
    def predict(params: RatingParams, user_id: str, item_id: str) -> float:
        """Predicted rating in [1, 5]: mean + known biases + latent dot product."""
        prediction = params.mean
        user, item = params.users.get(user_id), params.items.get(item_id)
        if user is not None:
            prediction += float(user[0])
        if item is not None:
            prediction += float(item[0])
        if user is not None and item is not None:
            prediction += float(np.dot(user[1:], item[1:]))
        return float(np.clip(prediction, 1.0, 5.0))
