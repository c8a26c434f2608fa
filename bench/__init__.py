"""The listener benchmark: `python -m bench` (see docs/benchmarks.md)."""
