"""The container image definition: hadolint-clean, small, non-root, wired to the CLI and probes.

No Docker engine runs in CI, so the Dockerfile is linted and its instructions are checked; the
image itself is not built here.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
CHART_VALUES = ROOT / "helm" / "session-broker" / "values.yaml"


def tool(name: str) -> str:
    """A console script installed next to this interpreter; missing tools fail, never skip."""
    path = Path(sys.executable).with_name(name)
    found = str(path) if path.exists() else shutil.which(name)
    assert found, f"{name} is not installed (pip install the test extra)"
    return found


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        text = pending + stripped
        pending = ""
        keyword, _, arguments = text.partition(" ")
        result.append((keyword.upper(), arguments.strip()))
    assert not pending, "Dockerfile ends inside a continuation line"
    return result


def stages() -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for keyword, arguments in instructions():
        if keyword == "FROM":
            result.append([])
        if result:
            result[-1].append((keyword, arguments))
    return result


def args_of(stage: list[tuple[str, str]], keyword: str) -> list[str]:
    return [arguments for kw, arguments in stage if kw == keyword]


@pytest.fixture(scope="module")
def final_stage() -> list[tuple[str, str]]:
    return stages()[-1]


def test_hadolint_is_clean() -> None:
    result = subprocess.run(
        [tool("hadolint"), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == ""


def test_multi_stage_on_python_311_slim() -> None:
    all_stages = stages()
    assert len(all_stages) >= 2
    defaults: dict[str, str] = {}
    for keyword, arguments in instructions():
        if keyword == "FROM":
            break  # only ARGs before the first FROM can parameterise FROM lines
        if keyword == "ARG" and "=" in arguments:
            name, value = arguments.split("=", 1)
            defaults[name] = value
    for stage in all_stages:
        image = stage[0][1].split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], image)
        assert image.startswith("python:3.11-slim"), image


def test_final_stage_runs_as_a_numeric_non_root_user(final_stage: list[tuple[str, str]]) -> None:
    users = args_of(final_stage, "USER")
    assert users, "no USER in the final stage"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit() and int(uid) != 0
    assert not gid or (gid.isdigit() and int(gid) != 0)
    # Kubernetes runs the same UID (runAsNonRoot can only verify a numeric USER).
    values = yaml.safe_load(CHART_VALUES.read_text())
    assert values["podSecurityContext"]["runAsUser"] == int(uid)


def test_entrypoint_and_cmd_serve_on_8080(final_stage: list[tuple[str, str]]) -> None:
    assert [json.loads(a) for a in args_of(final_stage, "ENTRYPOINT")] == [["session-broker"]]
    assert [json.loads(a) for a in args_of(final_stage, "CMD")] == [
        ["serve", "--host", "0.0.0.0", "--port", "8080"]
    ]
    assert args_of(final_stage, "EXPOSE") == ["8080"]
    assert args_of(final_stage, "STOPSIGNAL") == ["SIGTERM"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "session-broker" in scripts


def test_healthcheck_probes_healthz_with_python(final_stage: list[tuple[str, str]]) -> None:
    (healthcheck,) = args_of(final_stage, "HEALTHCHECK")
    command = json.loads(healthcheck.split(" CMD ", 1)[1])
    assert command[0] == "python"
    assert "http://127.0.0.1:8080/healthz" in command[-1]
    # The probe must be valid Python (it runs on every check).
    compile(command[-1], "<healthcheck>", "exec")


def test_runtime_environment(final_stage: list[tuple[str, str]]) -> None:
    env = " ".join(args_of(final_stage, "ENV"))
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "PYTHONUNBUFFERED=1" in env


def test_no_build_tools_in_the_final_stage(final_stage: list[tuple[str, str]]) -> None:
    runs = " ".join(args_of(final_stage, "RUN"))
    for word in ("apt-get", "apt ", "pip install", "gcc", "build-essential", "curl", "wget"):
        assert word not in runs, word
    copies = args_of(final_stage, "COPY")
    assert copies and all(c.startswith("--from=") for c in copies), (
        "runtime stage must copy only build output"
    )


def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore semantics for the simple patterns used here (no '!' exceptions)."""
    parts = path.split("/")
    for pattern in patterns:
        pattern = pattern.removeprefix("**/")
        for depth in range(1, len(parts) + 1):
            if fnmatch.fnmatch("/".join(parts[:depth]), pattern) or fnmatch.fnmatch(
                parts[depth - 1], pattern
            ):
                return True
    return False


def test_build_context_sources_exist_and_are_not_ignored() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert not any(p.startswith("!") for p in patterns)
    for stage in stages():
        for copy in args_of(stage, "COPY"):
            if copy.startswith("--from="):
                continue
            for source in copy.split()[:-1]:
                assert (ROOT / source).exists(), f"COPY source {source} is missing from the repository"
                assert not ignored(source, patterns), f"COPY source {source} is excluded by .dockerignore"
    for path in (
        ".venv",
        ".git",
        "tests",
        "bench",
        ".session-broker-data",
        ".pytest_cache",
        "app/__pycache__",
    ):
        assert ignored(path, patterns), f"{path} should be excluded from the build context"
