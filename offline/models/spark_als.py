"""Implicit-feedback ALS on Spark MLlib: the ``als`` model, trained where the data lives.

The fitted model is an :class:`~offline.models.als.ALSScorer` (numpy factors, our
string ids), so it is published, served and folded in exactly like the
single-process ALS; only ``fit`` differs. Spark is imported inside ``fit``: a
published model unpickles without pyspark.

Confidence: Spark weighs an event ``1 + alpha * r`` (Hu, Koren & Volinsky); with
``r = log1p(summed weight)`` that is the single-process ALS's
``alpha * log1p(count)`` plus one. Spark scales the regularisation by each
user's (and item's) number of interactions (ALS-WR), so ``reg_param`` is not on
the scale of ``ALSScorer.regularization``: see docs/evaluation.md for how the
default was chosen. The online fold-in (``infra/models.py``) solves with
``regularization`` = ``reg_param`` unscaled: a new shopper's short history gets
less shrinkage than Spark gives a user with many items.

>>> SparkALSScorer(factors=8).name
'spark_als'
>>> SparkALSScorer(master="local[2]")  # doctest: +ELLIPSIS
SparkALSScorer(factors=64, ..., master='local[2]')
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from core.errors import DataNotFound
from core.scoring import Interactions
from core.types import Item
from offline.models.als import ALSScorer
from offline.parquet_log import interaction_table
from offline.spark import DEFAULT_MASTER, spark_session

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import DataFrame

__all__ = ["SparkALSScorer"]


class SparkALSScorer(ALSScorer):
    """:class:`pyspark.ml.recommendation.ALS` with ``implicitPrefs=True``.

    Parameters
    ----------
    factors, alpha, iterations, random_state
        As in :class:`~offline.models.als.ALSScorer` (rank, alpha, maxIter, seed).
    reg_param
        Spark's ``regParam`` (multiplied by each row's interaction count).
    master
        Where ``fit`` runs when no session is active (a command's session wins).
    """

    name = "spark_als"

    def __init__(self, factors: int = 64, reg_param: float = 0.01, alpha: float = 10.0,
                 iterations: int = 15, random_state: int = 0,
                 master: str = DEFAULT_MASTER) -> None:
        # ``regularization`` is what the fold-in solves with: the unscaled lambda.
        super().__init__(factors=factors, regularization=reg_param, alpha=alpha,
                         iterations=iterations, random_state=random_state)
        self.reg_param = reg_param
        self.master = master

    def fit(self, train: Interactions, items: Sequence[Item] = ()) -> None:
        with spark_session(self.master) as session:
            frame = session.createDataFrame(
                interaction_table(train.users, train.items, train.values))
            self.fit_frame(frame)

    def fit_parquet(self, path: str) -> int:
        """Fit on a Parquet export (a folder the executors can read); return the events used."""
        with spark_session(self.master) as session:
            frame = session.read.parquet(path)
            missing = {"user_id", "item_id", "weight"} - set(frame.columns)
            if missing:
                raise DataNotFound(f"{path} lacks the columns {sorted(missing)}")
            return self.fit_frame(frame)

    def fit_frame(self, events: DataFrame) -> int:
        """Fit on a DataFrame of ``user_id``, ``item_id``, ``weight`` rows (one per event).

        Returns how many events the model learnt from (those of positive summed pairs).
        """
        from pyspark.ml.feature import StringIndexer
        from pyspark.ml.recommendation import ALS
        from pyspark.sql import functions as F

        summed = (events.groupBy("user_id", "item_id")
                  .agg(F.sum("weight").alias("weight"), F.count("*").alias("events"))
                  .where(F.col("weight") > 0))
        # Spark ALS wants integer ids; alphabetical indices keep our (sorted) id order.
        indexer = StringIndexer(inputCols=["user_id", "item_id"], outputCols=["u", "i"],
                                stringOrderType="alphabetAsc").fit(summed)
        user_ids, item_ids = (list(labels) for labels in indexer.labelsArray)
        if not user_ids:
            raise DataNotFound("no events with a positive weight to train on")
        triples = (indexer.transform(summed)
                   .select(F.col("u").cast("int").alias("u"), F.col("i").cast("int").alias("i"),
                           "weight", "events", F.log1p("weight").alias("r"))
                   .cache())
        try:
            blocks = max(1, events.sparkSession.sparkContext.defaultParallelism)
            model = ALS(rank=self.factors, maxIter=self.iterations, regParam=self.reg_param,
                        alpha=self.alpha, implicitPrefs=True, nonnegative=False,
                        userCol="u", itemCol="i", ratingCol="r", seed=self.random_state,
                        numUserBlocks=blocks, numItemBlocks=blocks).fit(triples)
            pairs = triples.select("u", "i", "weight", "events").toArrow()
            matrix = _csr(pairs, (len(user_ids), len(item_ids)))
            user_factors = _dense(model.userFactors.toArrow(), len(user_ids), self.factors)
            item_factors = _dense(model.itemFactors.toArrow(), len(item_ids), self.factors)
        finally:
            triples.unpersist()
        self.user_ids_, self.item_ids_ = user_ids, item_ids
        self.user_index_ = {u: n for n, u in enumerate(user_ids)}
        self.item_index_ = {it: n for n, it in enumerate(item_ids)}
        self.matrix_ = matrix
        self.user_factors_, self.item_factors_ = user_factors, item_factors
        return int(pairs.column("events").to_numpy().sum())


def _csr(table: pa.Table, shape: tuple[int, int]) -> sp.csr_matrix:
    rows = table.column("u").to_numpy()
    cols = table.column("i").to_numpy()
    return sp.csr_matrix((table.column("weight").to_numpy(), (rows, cols)), shape=shape,
                         dtype=np.float64)


def _dense(table: pa.Table, n: int, rank: int) -> npt.NDArray[np.float64]:
    """Spark's (id, features) rows as an (n, rank) matrix in id order."""
    ids = table.column("id").to_numpy()
    features = table.column("features").combine_chunks().flatten().to_numpy()
    out = np.zeros((n, rank))
    out[ids] = features.reshape(len(ids), rank)
    return out
