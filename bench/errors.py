"""The one error type of the bench, and how a run that stopped early says so in its notes."""

from __future__ import annotations

from collections.abc import Iterable

# Prefixes of the notes a run that did not finish leaves in its result (`cut_short()`).
ERROR_NOTE = "ERROR"
INTERRUPTED_NOTE = "INTERRUPTED"


class BenchError(RuntimeError):
    """Something the bench started or asked for failed; the run records it and goes on or stops cleanly."""


def cut_short(notes: Iterable[str]) -> bool:
    """True when a run stopped on an error or an interrupt: its results are partial."""
    return any(ERROR_NOTE in note or INTERRUPTED_NOTE in note for note in notes)
