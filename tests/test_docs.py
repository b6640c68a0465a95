"""The README stays true: every setting is in its configuration table, and CI runs its test command."""

from __future__ import annotations

import re

from app.config import ENV_PREFIX, Settings
from scripts.settings_table import readme_with_table
from tests.helpers import ROOT

README = (ROOT / "README.md").read_text()


def test_every_setting_is_in_the_configuration_table() -> None:
    documented = set(re.findall(r"^\| `(SESSION_BROKER_[A-Z_]+)` \|", README, flags=re.MULTILINE))
    expected = {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    assert documented == expected
    assert readme_with_table(README) == README, "run `make docs` to regenerate the configuration table"


def test_ci_runs_exactly_the_readme_test_command() -> None:
    assert "make test    #" in README
    commands = [
        line
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line and not line.startswith(("#", "set ", "cd "))
    ]
    assert commands == ["make test"]


def test_the_charts_deploying_guide_is_the_readmes_deploying_section() -> None:
    section = README[README.index("## Deploying on Kubernetes") :]
    assert (ROOT / "helm" / "session-broker" / "DEPLOYING.md").read_text() == section, (
        "helm/session-broker/DEPLOYING.md ships with the chart: keep it equal to README's Deploying section"
    )
