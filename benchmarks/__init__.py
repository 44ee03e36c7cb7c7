"""Benchmarks of the paired design: `python -m benchmarks.run_all` prints the table that docs/BENCHMARKS.md shows."""
