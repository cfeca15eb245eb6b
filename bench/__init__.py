"""poolhub benchmarks: every performance figure beside its baselines, measured in the same run.

`make bench` (or `python -m bench`) starts a private stack on 127.0.0.1, runs the figures and
writes BENCHMARKS.md. `BENCH_QUICK=1` is a short smoke run with smaller sizes.
"""
