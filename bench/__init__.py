"""Reproducible benchmarks of safepoint against pickle, joblib and skops.

Run ``python -m bench.run --scale 1`` for the table in docs/benchmarks.md, or
``python -m bench.run --scale 0.1`` for a quick run. See bench/README.md.
"""
