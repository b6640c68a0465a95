"""Group statements: concurrent requests share statements, but never across tenants (`group`) and never
twice for one row (`conflict`)."""

from __future__ import annotations

import asyncio

from app.batching import StatementBatcher


async def test_a_statement_holds_one_tenants_keys_only_and_each_row_once() -> None:
    statements: list[list[tuple[str, str]]] = []

    async def run(keys: list[tuple[str, str]]) -> list[str]:
        statements.append(keys)
        await asyncio.sleep(0.01)  # long enough for the others to queue behind it
        return [f"{tenant}/{row}" for tenant, row in keys]

    batcher: StatementBatcher[tuple[str, str], str] = StatementBatcher(
        run, conflict=lambda key: key, group=lambda key: key[0]
    )
    keys = [(tenant, f"row-{n}") for n in range(40) for tenant in ("alpha", "beta", "gamma")]
    answers = await asyncio.gather(*(batcher.submit(key) for key in keys))
    assert answers == [f"{tenant}/{row}" for tenant, row in keys]  # everyone got their own answer
    assert all(len({tenant for tenant, _ in statement}) == 1 for statement in statements)
    assert any(len(statement) > 1 for statement in statements)  # and statements were shared
    assert sum(len(statement) for statement in statements) == len(keys)
