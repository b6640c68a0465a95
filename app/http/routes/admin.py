"""Admin routes: figures across tenants and an on-demand purge (admin keys only)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from app.http.bodies import json_response
from app.http.deps import AdminDep, BrokerDep
from app.http.openapi import COMMON_PROBLEMS, problem_responses
from app.http.routes.collection import WindowQuery, query_filters
from app.purge import purge_once, record
from app.schemas import AdminStats, PurgeRun

router = APIRouter(prefix="/v1/admin", tags=["admin"])


@router.get(
    "/stats",
    response_model=AdminStats,
    responses=problem_responses(*COMMON_PROBLEMS, 422),
    summary="Admin: live sessions and totals of every tenant; with window_seconds, a recent window each",
)
async def get_admin_stats(
    request: Request, broker: BrokerDep, admin: AdminDep, window_seconds: WindowQuery = None
) -> Response:
    query_filters(request, {"window_seconds"}, {})
    return json_response(await broker.runtime.stats.of_all_tenants(window_seconds))


@router.post(
    "/purge",
    response_model=PurgeRun,
    responses=problem_responses(*COMMON_PROBLEMS),
    summary="Admin: run a purge now (skipped if another replica is purging)",
)
async def run_purge(broker: BrokerDep, admin: AdminDep) -> Response:
    result = await purge_once(broker.runtime.db, broker.settings)
    record(result)
    return json_response(result.summary())
