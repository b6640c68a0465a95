"""Benchmark of the session broker against reference peers (`python -m bench`, see bench/README.md)."""
