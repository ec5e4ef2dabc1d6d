"""Benchmarks of polyrlm itself; each module runs as a script and writes JSON."""
