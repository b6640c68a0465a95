"""OpenAPI documentation helpers: problem responses per status, hand-parsed request bodies, and the
document builder behind `openapi.yaml` (`session-broker openapi` regenerates it; a test compares)."""

from __future__ import annotations

from typing import Any

import yaml
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from app.errors import ALL_PROBLEMS, PROBLEM_CONTENT_TYPE
from app.schemas import REQUEST_MODELS, ProblemDocument

_REF = "#/components/schemas/{model}"


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
                "Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}
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


def build_openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema is not None:
        return app.openapi_schema
    document = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
    )
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for model in (*REQUEST_MODELS, ProblemDocument):
        definition = model.model_json_schema(ref_template=_REF)
        for name, nested in definition.pop("$defs", {}).items():
            schemas.setdefault(name, nested)
        schemas[model.__name__] = definition
    # FastAPI documents its own 422 shape for every route with parameters; ours is problem+json.
    for path_item in document.get("paths", {}).values():
        for operation in path_item.values():
            responses = operation.get("responses", {})
            error = responses.get("422")
            if error and "application/json" in error.get("content", {}):
                responses["422"] = problem_responses(422)[422]
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)
    app.openapi_schema = document
    return document


def openapi_yaml(app: FastAPI) -> str:
    return yaml.safe_dump(build_openapi(app), sort_keys=False, allow_unicode=True, width=100)
