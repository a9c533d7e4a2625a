"""Benchmarks of rpo-bench: `python -m benchmarks` runs them all (see benchmarks/README.md)."""
