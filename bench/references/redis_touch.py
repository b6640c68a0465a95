"""Reference touch on Redis: GETEX key EX <idle> (sliding TTL) via redis-py asyncio; 404 when missing.

Run: BENCH_REDIS_URL=redis://127.0.0.1:6379/0 uvicorn bench.references.redis_touch:app --workers 2
"""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

import orjson
import redis.asyncio as redis
from fastapi import FastAPI
from fastapi.responses import Response

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
PREFIX = os.environ.get("BENCH_REDIS_PREFIX", "sbbench:")
TENANT = os.environ.get("BENCH_TENANT", "bench")
POOL_SIZE = int(os.environ.get("BENCH_POOL_SIZE", "20"))
IDLE = 1800
NOT_FOUND = b'{"detail":"session not found"}'

client: redis.Redis


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    global client
    pool = redis.BlockingConnectionPool.from_url(URL, max_connections=POOL_SIZE, timeout=5)
    client = redis.Redis(connection_pool=pool)
    try:
        yield
    finally:
        await client.aclose()


app = FastAPI(lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)


@app.post("/v1/sessions/{session_id}/touch")
async def touch(session_id: str) -> Response:
    value = await client.getex(f"{PREFIX}{TENANT}:{session_id}", ex=IDLE)
    if value is None:
        return Response(content=NOT_FOUND, status_code=404, media_type="application/json")
    expires_at = datetime.now(UTC) + timedelta(seconds=IDLE)
    return Response(
        content=orjson.dumps({"id": session_id, "expires_at": expires_at}), media_type="application/json"
    )
