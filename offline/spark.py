"""The one place a SparkSession is built (the optional ``spark`` extra).

No module-level session: a command opens one with :func:`spark_session` and it is
stopped when the block ends. A block opened while another session is active reuses
that session and leaves it running, so a test module can share one session and a
model's ``fit`` can run inside a command's session.

>>> spark_conf("local[2]")["spark.sql.shuffle.partitions"]
'4'
>>> spark_conf("spark://head:7077")["spark.driver.bindAddress"]
Traceback (most recent call last):
...
KeyError: 'spark.driver.bindAddress'
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING

from core.errors import ConfigurationError

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = ["DEFAULT_MASTER", "require_pyspark", "spark_conf", "spark_session"]

DEFAULT_MASTER = "local[*]"
_LOCAL_THREADS = re.compile(r"local\[(\d+)\]")


def require_pyspark() -> None:
    """Raise a clear error when the ``spark`` extra is not installed."""
    if importlib.util.find_spec("pyspark") is None:
        raise ConfigurationError(
            "the Spark engine needs the `spark` extra (pyspark and a Java 17+ runtime): "
            "pip install 'streamrec[spark]'"
        )


def spark_conf(master: str, driver_memory: str = "1g") -> dict[str, str]:
    """Settings for a batch-training session on ``master``.

    Local runs are small: no web UI, few shuffle partitions, loopback only (the
    machines have no route for the driver's default host name). A cluster keeps
    Spark's own defaults for shuffles and addresses.
    """
    conf = {
        "spark.ui.enabled": "false",
        "spark.ui.showConsoleProgress": "false",
        "spark.driver.memory": driver_memory,
        # DataFrames <-> Arrow without pandas in between (ids and factors only).
        "spark.sql.execution.arrow.pyspark.enabled": "true",
    }
    if master.startswith("local"):
        threads = _LOCAL_THREADS.fullmatch(master)
        conf |= {
            "spark.sql.shuffle.partitions": str(2 * int(threads.group(1))) if threads else "8",
            "spark.driver.bindAddress": "127.0.0.1",
            "spark.driver.host": "127.0.0.1",
        }
    return conf


@contextmanager
def spark_session(master: str = DEFAULT_MASTER, *, driver_memory: str = "1g",
                  app_name: str = "streamrec-train",
                  conf: Mapping[str, str] | None = None) -> Iterator[SparkSession]:
    """The active session, or a new one on ``master`` that is stopped on exit.

    ``conf`` adds or overrides Spark settings of a new session.
    """
    require_pyspark()
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:
        yield active
        return
    builder = SparkSession.builder.master(master).appName(app_name)
    for key, value in (spark_conf(master, driver_memory) | dict(conf or {})).items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    try:
        yield session
    finally:
        session.stop()
