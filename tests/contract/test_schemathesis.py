"""Fuzz `openapi.yaml` against a real server on a real PostgreSQL with schemathesis (all checks).

Bounded so CI stays fast: a fixed seed and a fixed number of examples per operation. It fails on any
5xx, undocumented status code, non-conforming response, or schema-valid request refused (beyond the
exceptions in schemathesis.toml, each explained there).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT, LiveServer

MAX_EXAMPLES = "40"


def run_schemathesis(server: LiveServer, report_dir: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    executable = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or "schemathesis"
    return subprocess.run(
        [
            executable,
            "--config-file",
            str(ROOT / "schemathesis.toml"),
            "run",
            str(ROOT / "openapi.yaml"),
            "--url",
            server.base_url,
            "--checks",
            "all",
            "--max-examples",
            MAX_EXAMPLES,
            "--seed",
            "1",
            "--report",
            "junit",
            "--report-dir",
            str(report_dir),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
        cwd=ROOT,
    )


@pytest.mark.parametrize("authenticated", [True, False], ids=["with-key", "without-key"])
def test_the_live_service_conforms_to_openapi_yaml(
    live_server: LiveServer, tmp_path: Path, authenticated: bool
) -> None:
    extra = ("--header", f"Authorization: Bearer {live_server.api_key}") if authenticated else ()
    result = run_schemathesis(live_server, tmp_path, *extra)
    summary = "\n".join(result.stdout.splitlines()[-40:])
    assert result.returncode == 0, (
        f"schemathesis found problems:\n{result.stdout[-20000:]}\n{result.stderr[-5000:]}"
    )
    assert " passed" in summary and "generated" in summary, summary
    assert "Traceback" not in live_server.log_text()
