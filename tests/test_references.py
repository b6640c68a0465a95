"""Comments and docstrings point only at things that exist in the repository.

- `docs/design.md, "Section"` names a heading of docs/design.md;
- a backticked repository path (`app/sql/touch.py`, `docs/`) exists;
- a backticked dotted name under `app.` imports;
- a backticked CamelCase or UPPER_CASE name, or a `call()`, is defined in `app/` (or is a setting
  variable, or one of the few outside names listed below).
"""

from __future__ import annotations

import ast
import builtins
import importlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.config import setting_variables
from tests.helpers import ROOT

SOURCES = sorted(
    path
    for folder in ("app", "bench", "scripts", "observability", "migrations", "clients/python/src", "examples")
    for path in (ROOT / folder).rglob("*.py")
)
DESIGN_HEADINGS = {
    line[3:].strip()
    for line in (ROOT / "docs" / "design.md").read_text().splitlines()
    if line.startswith("## ")
}
# Names from libraries that docstrings mention without importing them.
OUTSIDE_NAMES = {"BaseHTTPMiddleware", "PROMETHEUS_MULTIPROC_DIR", "streamable_http_app"}
DESIGN_REFERENCE = re.compile(r'docs/design\.md,\s+"([^"]+)"')
BACKTICKED = re.compile(r"`([^`\n]+)`")


def _defined_names() -> set[str]:
    names: set[str] = set(dir(builtins))
    for path in SOURCES:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Assign | ast.AnnAssign):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names.update(target.id for target in targets if isinstance(target, ast.Name))
                names.update(target.attr for target in targets if isinstance(target, ast.Attribute))
            elif isinstance(node, ast.ImportFrom | ast.Import):
                names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
    return names


DEFINED = _defined_names()


def _docstrings(path: Path) -> Iterator[str]:
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            text = ast.get_docstring(node, clean=False)
            if text:
                yield text


def _comments(path: Path) -> Iterator[str]:
    for line in path.read_text().splitlines():
        if "#" in line:
            yield line.split("#", 1)[1]


def _unresolved(token: str) -> bool:
    token = token.strip()
    if re.fullmatch(
        r"(app|bench|scripts|observability|migrations|tests|docs|helm|clients|examples)/[\w./-]*", token
    ):
        return not (ROOT / token).exists()
    if re.fullmatch(r"app(\.\w+)+", token):
        module, _, attribute = token.rpartition(".")
        try:
            return not hasattr(importlib.import_module(module), attribute)
        except ImportError:
            try:
                importlib.import_module(token)
                return False
            except ImportError:
                return True
    call = re.fullmatch(r"(\w+)\(\)", token)
    if call:
        return call.group(1) not in DEFINED and call.group(1) not in OUTSIDE_NAMES
    if re.fullmatch(r"SESSION_BROKER_[A-Z_]+", token):
        return token not in setting_variables()
    if re.fullmatch(r"[A-Z][a-z0-9]+(?:[A-Z][a-z0-9]+)+|[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+", token):
        # A setting may be named without its prefix, as the README does (`DB_DEADLINE_SECONDS`).
        short_settings = {name.removeprefix("SESSION_BROKER_") for name in setting_variables()}
        return token not in DEFINED and token not in OUTSIDE_NAMES and token not in short_settings
    return False


@pytest.mark.parametrize("path", SOURCES, ids=lambda path: str(path.relative_to(ROOT)))
def test_references_in_comments_and_docstrings_resolve(path: Path) -> None:
    texts = [*_docstrings(path), *_comments(path)]
    problems = [
        f"design section {name!r}"
        for text in texts
        for name in DESIGN_REFERENCE.findall(text)
        if name not in DESIGN_HEADINGS
    ]
    problems += [
        f"`{token}`" for text in _docstrings(path) for token in BACKTICKED.findall(text) if _unresolved(token)
    ]
    problems += [
        f"{token}"
        for text in _comments(path)
        for token in re.findall(r"\b[\w/]+\.py\b", text)
        if not any(ROOT.glob(f"**/{token.rsplit('/', 1)[-1]}"))
    ]
    assert not problems, problems


def test_no_comment_cites_a_file_outside_the_repository() -> None:
    offenders = [
        str(path.relative_to(ROOT)) for path in SOURCES if re.search(r"lessons?(\.md| \d)", path.read_text())
    ]
    assert not offenders
