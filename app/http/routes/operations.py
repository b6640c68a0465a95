"""Probes and the scrape endpoint: liveness, readiness (database and schema), Prometheus metrics."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response

from app import metrics
from app.errors import DatabaseUnavailable
from app.http.deps import BrokerDep
from app.http.errors import response_for
from app.http.openapi import problem_responses
from app.repository import SessionRepository
from app.schemas import Health

READINESS_TIMEOUT_SECONDS = 2.0

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Response:
    """Liveness: the process answers. Never touches the database."""
    return Response(b'{"status":"ok"}', media_type="application/json")


@router.get("/readyz", response_model=Health, responses=problem_responses(503))
async def readyz(broker: BrokerDep) -> Response:
    """Readiness: the database answers and its schema is at this build's head revision."""
    retry_after = broker.settings.retry_after_seconds
    try:
        async with asyncio.timeout(READINESS_TIMEOUT_SECONDS), broker.runtime.db.connection() as connection:
            revision = await SessionRepository(connection).schema_revision()
    except (DatabaseUnavailable, TimeoutError) as error:
        detail = error.detail if isinstance(error, DatabaseUnavailable) else "database did not answer in time"
        return response_for(DatabaseUnavailable(detail, retry_after), retry_after)
    # Ready at our head, and also at a revision we do not know: that is a newer release's schema during a
    # rolling upgrade (migrations are additive, expand-then-contract), and refusing it would leave no
    # ready pod between the pre-upgrade migration and the new pods. An older known revision is not ready.
    if revision != broker.schema_head and revision in broker.known_revisions:
        detail = (
            f"schema is at revision {revision!r}, this build needs {broker.schema_head!r}; "
            "run `session-broker migrate`"
        )
        return response_for(DatabaseUnavailable(detail, retry_after), retry_after)
    if revision is None:
        detail = "schema is not installed; run `session-broker migrate`"
        return response_for(DatabaseUnavailable(detail, retry_after), retry_after)
    return Response(b'{"status":"ready"}', media_type="application/json")


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"description": "Prometheus text format", "content": {"text/plain": {}}}},
)
async def metrics_endpoint(broker: BrokerDep) -> Response:
    metrics.set_pool_stats(*broker.runtime.db.pool_stats())
    body, content_type = metrics.render_metrics()
    return Response(body, media_type=content_type)
