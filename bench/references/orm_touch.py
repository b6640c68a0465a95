"""Reference touch, tutorial style: SQLAlchemy async ORM session per request, SELECT, set attributes, COMMIT.

Run: BENCH_DATABASE_URL=postgresql://... uvicorn bench.references.orm_touch:app --workers 2
"""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import FastAPI, HTTPException
from sqlalchemy import BigInteger, Integer, Text, select
from sqlalchemy.dialects.postgresql import JSONB, TIMESTAMP
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

DSN = os.environ["BENCH_DATABASE_URL"].replace("postgresql://", "postgresql+asyncpg://", 1)
TENANT = os.environ.get("BENCH_TENANT", "bench")
POOL_SIZE = int(os.environ.get("BENCH_POOL_SIZE", "20"))


class Base(DeclarativeBase):
    pass


class Session(Base):
    __tablename__ = "sessions"
    tenant: Mapped[str] = mapped_column(Text, primary_key=True)
    id: Mapped[str] = mapped_column(Text, primary_key=True)
    kind: Mapped[str] = mapped_column(Text)
    principal: Mapped[str | None] = mapped_column(Text)
    client_id: Mapped[str | None] = mapped_column(Text)
    owner: Mapped[str | None] = mapped_column(Text)
    protocol_version: Mapped[str | None] = mapped_column(Text)
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", JSONB)
    version: Mapped[int] = mapped_column(BigInteger)
    idle_timeout_seconds: Mapped[int] = mapped_column(Integer)
    max_lifetime_seconds: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(TIMESTAMP(timezone=True))
    last_seen_at: Mapped[datetime] = mapped_column(TIMESTAMP(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(TIMESTAMP(timezone=True))
    check_at: Mapped[datetime] = mapped_column(TIMESTAMP(timezone=True))


engine: AsyncEngine
SessionLocal: async_sessionmaker[AsyncSession]


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    global engine, SessionLocal
    engine = create_async_engine(DSN, pool_size=POOL_SIZE, max_overflow=0)
    SessionLocal = async_sessionmaker(engine, expire_on_commit=False)
    try:
        yield
    finally:
        await engine.dispose()


app = FastAPI(lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)


@app.post("/v1/sessions/{session_id}/touch")
async def touch(session_id: str) -> dict[str, Any]:
    async with SessionLocal() as db:
        row = (
            await db.execute(select(Session).where(Session.tenant == TENANT, Session.id == session_id))
        ).scalar_one_or_none()
        now = datetime.now(UTC)
        if row is None or row.expires_at <= now:
            raise HTTPException(status_code=404, detail="session not found")
        row.last_seen_at = now
        row.expires_at = min(
            now + timedelta(seconds=row.idle_timeout_seconds),
            row.created_at + timedelta(seconds=row.max_lifetime_seconds),
        )
        await db.commit()
        return {"id": row.id, "expires_at": row.expires_at}
