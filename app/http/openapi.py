"""OpenAPI helpers: problem responses per status, hand-parsed request bodies, and the
document builder behind `openapi.yaml` (`session-broker openapi` regenerates it; a test compares)."""

from __future__ import annotations

from typing import Any

import yaml
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from app.config import Settings
from app.errors import ALL_PROBLEMS, PROBLEM_CONTENT_TYPE
from app.schemas import DOCUMENT_MODELS, REQUEST_MODELS, ProblemDocument
from app.work_schemas import WORK_REQUEST_MODELS

_REF = "#/components/schemas/{model}"
# What every /v1 route can answer: a duplicated Authorization or Session-Principal, a missing or invalid
# key, the wrong kind of key, a request line and headers over the limit, the database unavailable.
COMMON_PROBLEMS = (400, 401, 403, 431, 503)
# And every route that reads a body: one that did not arrive in time.
BODY_PROBLEMS = (408,)


def _problem_types(status: int) -> list[str]:
    return [problem.type_uri() for problem in ALL_PROBLEMS if problem.status == status]


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries documenting each status as problem+json, listing its stable problem types."""
    responses: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        types = _problem_types(status)
        responses[status] = {
            "description": "Problem: " + ", ".join(f"`{uri}`" for uri in types),
            "content": {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": _REF.format(model="ProblemDocument")}}},
        }
        if status in (429, 503):
            responses[status]["headers"] = {
                "Retry-After": {
                    "description": "seconds to wait before retrying",
                    "schema": {"type": "integer"},
                }
            }
        if status == 401:
            responses[status]["headers"] = {
                "WWW-Authenticate": {"description": "Bearer challenge", "schema": {"type": "string"}}
            }
    return responses


def request_body(model: type[BaseModel], media_types: frozenset[str], *, required: bool) -> dict[str, Any]:
    """Describe a body the handler parses itself (strictly, for exact 415/422 answers)."""
    schema = {"$ref": _REF.format(model=model.__name__)}
    return {
        "requestBody": {
            "required": required,
            "content": {media_type: {"schema": schema} for media_type in sorted(media_types)},
        }
    }


def build_openapi(app: FastAPI, settings: Settings) -> dict[str, Any]:
    if app.openapi_schema is not None:
        return app.openapi_schema
    document = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
    )
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    models: tuple[type[BaseModel], ...] = (
        *REQUEST_MODELS,
        *WORK_REQUEST_MODELS,
        *DOCUMENT_MODELS,
        ProblemDocument,
    )
    for model in models:
        definition = model.model_json_schema(ref_template=_REF)
        for name, nested in definition.pop("$defs", {}).items():
            schemas.setdefault(name, nested)
        schemas[model.__name__] = definition
    for path_item in document.get("paths", {}).values():
        for operation in path_item.values():
            # An optional header or query parameter is absent, never JSON null: drop FastAPI's null branch.
            for parameter in operation.get("parameters", []):
                branches = parameter.get("schema", {}).get("anyOf")
                if branches and {"type": "null"} in branches and len(branches) == 2:
                    kept = next(branch for branch in branches if branch != {"type": "null"})
                    # What was said of the whole (title, a documented pattern) stays; a null default goes.
                    outer = {
                        k: v
                        for k, v in parameter["schema"].items()
                        if k not in ("anyOf", "default", "description")
                    }
                    parameter["schema"] = {**kept, **outer}
            # FastAPI documents its own 422 shape for every route with parameters; ours is problem+json.
            responses = operation.get("responses", {})
            error = responses.get("422")
            if error and "application/json" in error.get("content", {}):
                responses["422"] = problem_responses(422)[422]
    _document_bounds(schemas, settings)
    # The catalogue of stable problem types, including the generic ones (405, 406) no operation lists.
    document["info"]["x-problem-types"] = [
        {"type": problem.type_uri(), "status": problem.status, "title": problem.title}
        for problem in ALL_PROBLEMS
    ]
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    app.openapi_schema = document
    return document


def _document_bounds(schemas: dict[str, Any], settings: Settings) -> None:
    """Write the configured bounds into the schema, so the document states what this service accepts."""
    lease_ttl = (1, settings.max_lease_ttl_seconds)
    mark_ttl = (1, settings.max_in_flight_ttl_seconds)
    bounds = {
        ("SessionCreate", "idle_timeout_seconds"): (
            settings.min_idle_timeout_seconds,
            settings.max_idle_timeout_seconds,
        ),
        ("SessionCreate", "max_lifetime_seconds"): (
            settings.min_max_lifetime_seconds,
            settings.max_max_lifetime_seconds,
        ),
        ("LeaseAcquire", "ttl_seconds"): lease_ttl,
        ("LeaseRenew", "ttl_seconds"): lease_ttl,
        ("InFlightBegin", "ttl_seconds"): mark_ttl,
        ("InFlightRenew", "ttl_seconds"): mark_ttl,
        ("PendingRecord", "timeout_seconds"): (1, settings.max_pending_timeout_seconds),
    }
    for (model, name), (low, high) in bounds.items():
        prop = schemas[model]["properties"][name]
        for branch in prop.get("anyOf", [prop]):
            if branch.get("type") == "integer":
                branch["minimum"], branch["maximum"] = low, high


def openapi_yaml(app: FastAPI) -> str:
    text: str = yaml.safe_dump(app.openapi(), sort_keys=False, allow_unicode=True, width=100)
    return text
