"""Benchmarks and reproductions: scripts that measure, run with `python -m benchmarks.<name>`."""
