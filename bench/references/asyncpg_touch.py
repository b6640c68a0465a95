"""Reference touch: one UPDATE ... RETURNING per request through a raw asyncpg pool.

Every touch writes (no throttling); 404 when the row is missing or expired.
Run: BENCH_DATABASE_URL=postgresql://... uvicorn bench.references.asyncpg_touch:app --workers 2
"""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import orjson
from fastapi import FastAPI
from fastapi.responses import Response

DSN = os.environ["BENCH_DATABASE_URL"]
TENANT = os.environ.get("BENCH_TENANT", "bench")
POOL_SIZE = int(os.environ.get("BENCH_POOL_SIZE", "20"))

TOUCH = """
UPDATE sessions
   SET last_seen_at = now(),
       expires_at = LEAST(now() + make_interval(secs => idle_timeout_seconds),
                          created_at + make_interval(secs => max_lifetime_seconds))
 WHERE tenant = $1 AND id = $2 AND expires_at > now()
RETURNING id, expires_at
"""
NOT_FOUND = b'{"detail":"session not found"}'

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


@app.post("/v1/sessions/{session_id}/touch")
async def touch(session_id: str) -> Response:
    row = await pool.fetchrow(TOUCH, TENANT, session_id)
    if row is None:
        return Response(content=NOT_FOUND, status_code=404, media_type="application/json")
    body = orjson.dumps({"id": row["id"], "expires_at": row["expires_at"]})
    return Response(content=body, media_type="application/json")
