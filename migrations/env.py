"""Alembic environment: runs migrations over SQLAlchemy's async engine (asyncpg).

The database URL comes from the Alembic config attribute `database_url` (set by app/migrate.py) or,
for the bare `alembic` CLI, from the service's own settings, so both paths use the same database.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from app.db import sqlalchemy_url
from app.models import Base

config = context.config
target_metadata = Base.metadata


def _database_url() -> str:
    url = config.attributes.get("database_url")
    if url is None:
        from app.config import get_settings
        from app.embedded import start_embedded_if_needed

        url = start_embedded_if_needed(get_settings())
    return sqlalchemy_url(url)


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


def _connect_args() -> dict[str, int]:
    """Behind PgBouncer in transaction pooling mode, prepared statements must be off
    (docs/design.md, "Poolers")."""
    from app.config import get_settings

    if get_settings().db_prepared_statements:
        return {}
    return {"statement_cache_size": 0, "prepared_statement_cache_size": 0}


async def _run_async() -> None:
    engine = create_async_engine(_database_url(), poolclass=pool.NullPool, connect_args=_connect_args())
    async with engine.connect() as connection:
        await connection.run_sync(_run)
    await engine.dispose()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
    else:
        asyncio.run(_run_async())


if context.is_offline_mode():
    context.configure(url=_database_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
