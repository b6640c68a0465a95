"""`openapi.yaml` is generated from the app; this fails when they differ (regenerate with
`session-broker openapi --output openapi.yaml`)."""

from __future__ import annotations

from pathlib import Path

import yaml

from app.cli import build_parser
from app.errors import ALL_PROBLEMS
from app.http.openapi import openapi_yaml
from app.main import create_app
from tests.helpers import make_settings

ROOT = Path(__file__).resolve().parent.parent


def generated() -> str:
    settings = make_settings(api_keys=None, admin_api_keys=None, host="127.0.0.1")
    return openapi_yaml(create_app(settings, database_url="postgresql://openapi.invalid/unused"))


def test_committed_openapi_matches_the_app() -> None:
    committed = (ROOT / "openapi.yaml").read_text()
    assert committed == generated(), (
        "openapi.yaml is stale: run `session-broker openapi --output openapi.yaml`"
    )


def test_every_operation_documents_its_errors_as_problem_json() -> None:
    document = yaml.safe_load(generated())
    for url, item in document["paths"].items():
        for method, operation in item.items():
            if not url.startswith("/v1"):
                continue
            statuses = {code for code in operation["responses"] if code.startswith(("4", "5"))}
            assert {"401", "503"} <= statuses, f"{method} {url} lacks 401/503"
            for code in statuses:
                content = operation["responses"][code]["content"]
                assert list(content) == ["application/problem+json"], f"{method} {url} {code}"
    catalogue = {entry["type"]: entry["status"] for entry in document["info"]["x-problem-types"]}
    assert catalogue == {problem.type_uri(): problem.status for problem in ALL_PROBLEMS}


def test_the_cli_can_regenerate_it() -> None:
    assert build_parser().parse_args(["openapi", "--output", "x.yaml"]).command == "openapi"


def test_every_reference_resolves() -> None:
    """A body a route parses itself is described by a `$ref` to components; a model left out of the
    components list leaves the reference dangling (type generators then refuse the document)."""
    document = yaml.safe_load((ROOT / "openapi.yaml").read_text())

    def references(node: object) -> list[str]:
        if isinstance(node, dict):
            found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
            return found + [ref for value in node.values() for ref in references(value)]
        if isinstance(node, list):
            return [ref for value in node for ref in references(value)]
        return []

    schemas = document["components"]["schemas"]
    refs = set(references(document))
    assert refs, "the document has references"
    dangling = {ref for ref in refs if ref.removeprefix("#/components/schemas/") not in schemas}
    assert dangling == set()
