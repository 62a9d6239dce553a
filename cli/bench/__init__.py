"""``streamrec bench``: ingest throughput and end-to-end freshness of the pipeline.

See ``docs/benchmarks.md`` for the figures measured and how to read them.
"""
