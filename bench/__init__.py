"""Benchmarks: each runs our code and a reference on the same data and prints both.

Benchmarks are not tests: they measure, they do not assert. ``make bench`` runs all of them
with default sizes (``python -m bench.run_all``); each module also runs on its own, e.g.
``python -m bench.ingest_http --events 2000000``. Results are described in docs/benchmarks.md.
"""
