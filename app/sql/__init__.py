"""Every SQL statement the service sends, and nothing else (no imports from the rest of the app).

Grouped by what the statements do: `create`, `touch`, `change` (patch, rotate), `end` (delete, revoke,
evict), `read` (get, list, stats), `purge`, `fleet` (gauges, request analytics), `events`. Shared pieces
are in `fragments`. Each statement is a `Statement` with named placeholders; `all_statements()` lists
them for the test that prepares every one against the real PostgreSQL (`tests/test_sql.py`).
"""

from __future__ import annotations

import importlib
import pkgutil

from app.sql.statement import Statement


def all_statements() -> list[Statement]:
    """Every registered statement (importing each module of this package registers its statements)."""
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    return sorted(Statement.registry.values(), key=lambda statement: statement.name)


__all__ = ["Statement", "all_statements"]
