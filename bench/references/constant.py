"""HTTP ceiling: FastAPI endpoint POST /v1/sessions/{id}/touch returning a constant JSON body.

Run: uvicorn bench.references.constant:app --workers 2 --loop uvloop --http httptools
"""

from fastapi import FastAPI
from fastapi.responses import Response

BODY = b'{"id":"constant","expires_at":"2030-01-01T00:00:00+00:00"}'

app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)


@app.post("/v1/sessions/{session_id}/touch")
async def touch(session_id: str) -> Response:
    return Response(content=BODY, media_type="application/json")
