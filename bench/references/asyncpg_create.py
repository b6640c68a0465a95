"""Reference create: one INSERT per request through a raw asyncpg pool, id = secrets.token_urlsafe(32).

Run: BENCH_DATABASE_URL=postgresql://... uvicorn bench.references.asyncpg_create:app --workers 2
"""

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response

DSN = os.environ["BENCH_DATABASE_URL"]
TENANT = os.environ.get("BENCH_TENANT", "bench")
POOL_SIZE = int(os.environ.get("BENCH_POOL_SIZE", "20"))
IDLE = 1800
LIFETIME = 28800

# check_at (when the purge looks at the row) is the expiry: the service's schema needs it.
INSERT = """
INSERT INTO sessions (tenant, id, kind, metadata, version, idle_timeout_seconds, max_lifetime_seconds,
                      created_at, last_seen_at, expires_at, check_at)
VALUES ($1, $2, 'session', $3::jsonb, 1, $4::int, $5::int, now(), now(),
        now() + LEAST($4::int, $5::int) * interval '1 second',
        now() + LEAST($4::int, $5::int) * interval '1 second')
RETURNING created_at, expires_at
"""

pool: asyncpg.Pool


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    global pool
    pool = await asyncpg.create_pool(DSN, min_size=POOL_SIZE, max_size=POOL_SIZE)
    try:
        yield
    finally:
        await pool.close()


app = FastAPI(lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)


@app.post("/v1/sessions")
async def create(request: Request) -> Response:
    raw = await request.body()
    metadata = orjson.loads(raw).get("metadata", {}) if raw else {}
    session_id = secrets.token_urlsafe(32)
    row = await pool.fetchrow(INSERT, TENANT, session_id, orjson.dumps(metadata).decode(), IDLE, LIFETIME)
    body = orjson.dumps({"id": session_id, "created_at": row["created_at"], "expires_at": row["expires_at"]})
    return Response(content=body, status_code=201, media_type="application/json")
