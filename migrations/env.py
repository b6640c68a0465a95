"""Alembic environment: runs migrations over SQLAlchemy's async engine (asyncpg).

The database URL comes from the Alembic config attribute `database_url` (set by app/migrate.py) or,
for the bare `alembic` CLI, from the service's own settings, so both paths use the same database.

SQLAlchemy never parses that URL: the engine gets its connections from asyncpg, which is handed the
service's DSN unchanged, exactly as the service's own pool is. So every URL the service accepts migrates
too, including multi-host failover URLs (`postgresql://u@h1:5432,h2:5432/db?target_session_attrs=
read-write`), which SQLAlchemy's URL parser rejects (it reads `5432,h2:5432` as one port).
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app.db import asyncpg_dsn
from app.models import Base

config = context.config
target_metadata = Base.metadata


def _database_url() -> str:
    url = config.attributes.get("database_url")
    if url is None:
        from app.config import get_settings
        from app.embedded import start_embedded_if_needed

        url = start_embedded_if_needed(get_settings())
    return asyncpg_dsn(url)


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


def _statement_caches_off() -> bool:
    """Behind PgBouncer in transaction pooling mode, prepared statements must be off (docs/design.md,
    "Poolers")."""
    from app.config import get_settings

    return not get_settings().db_prepared_statements


def _engine(dsn: str) -> AsyncEngine:
    """An async engine whose connections asyncpg opens from `dsn` as given."""
    caches_off = _statement_caches_off()

    async def connect() -> asyncpg.Connection:
        return await asyncpg.connect(dsn, **({"statement_cache_size": 0} if caches_off else {}))

    def creator() -> Any:
        # SQLAlchemy's adapter around the asyncpg connection, with its own statement cache off as well.
        return engine.sync_engine.dialect.dbapi.connect(  # type: ignore[union-attr]
            async_creator_fn=connect, **({"prepared_statement_cache_size": 0} if caches_off else {})
        )

    engine = create_async_engine("postgresql+asyncpg://", poolclass=pool.NullPool, creator=creator)
    return engine


async def _run_async() -> None:
    engine = _engine(_database_url())
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
    # SQL scripts need only the dialect, not a connection (nor a URL SQLAlchemy would have to parse).
    context.configure(dialect_name="postgresql", target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
