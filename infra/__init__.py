"""Adapters to the outside world and the one wiring place.

* :mod:`infra.embedded` -- Tansu broker and redis-server as child processes.
* :mod:`infra.kafka` -- topic setup, the sync event publisher, batch producing, lag.
* :mod:`infra.redis_store` -- the Redis StateStore; :mod:`infra.memory_store` its fake;
  :mod:`infra.redis_keys` its hash-tagged keys, :mod:`infra.redis_scripts` its Lua,
  :mod:`infra.redis_cluster` one Redis or Redis Cluster, detected, and per-node routing.
* :mod:`infra.sql` -- events archive and products on SQLite or PostgreSQL.
* :mod:`infra.bootstrap` -- builds all of them from a :class:`core.settings.Settings`.

Submodules are imported on demand: importing :mod:`infra` starts and loads nothing.
"""
