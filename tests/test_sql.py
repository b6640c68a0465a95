"""Every statement of `app/sql/` prepares against the real PostgreSQL, with the parameters it declares.

A broken fragment fails here, in one small test, instead of in whichever endpoint happens to use it.
"""

from __future__ import annotations

import asyncpg
import pytest

from app.sql import all_statements

STATEMENTS = all_statements()


def test_there_are_statements_for_every_group() -> None:
    modules = {type(statement).__module__ for statement in STATEMENTS}
    assert modules == {"app.sql.statement"}
    groups = {name.split("_")[0] for name in (statement.name for statement in STATEMENTS)}
    assert {"insert", "touch", "delete", "revoke", "get", "list", "purge", "read"} <= groups


@pytest.mark.parametrize("statement", STATEMENTS, ids=lambda statement: statement.name)
async def test_statement_prepares_with_its_named_parameters(raw_db: asyncpg.Connection, statement) -> None:
    prepared = await raw_db.prepare(statement.sql)
    assert len(prepared.get_parameters()) == len(statement.params), statement.params
