"""Request analytics reported by gateways after the requests finished (touch bodies carry them too)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from app.http.bodies import JSON_TYPES, json_response, require_json_body
from app.http.deps import BodyDep, ServiceDep, TenantDep
from app.http.openapi import BODY_PROBLEMS, COMMON_PROBLEMS, problem_responses, request_body
from app.schemas import AnalyticsBatch, AnalyticsRecorded

router = APIRouter(prefix="/v1", tags=["sessions"])


@router.post(
    "/analytics",
    response_model=AnalyticsRecorded,
    responses=problem_responses(*COMMON_PROBLEMS, *BODY_PROBLEMS, 413, 415, 422),
    openapi_extra=request_body(AnalyticsBatch, JSON_TYPES, required=True),
    summary="Report the outcomes of gateway requests in a batch (request analytics without a touch)",
)
async def report_requests(
    request: Request, service: ServiceDep, tenant: TenantDep, body: BodyDep
) -> Response:
    batch = require_json_body(request, body, AnalyticsBatch, "a JSON object with `requests`")
    return json_response({"recorded": service.record_requests(tenant, batch.requests)})
