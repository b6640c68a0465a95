"""The one error type of the bench."""

from __future__ import annotations


class BenchError(RuntimeError):
    """Something the bench started or asked for failed; the run records it and goes on or stops cleanly."""
