"""Print (or, with --write, update in README.md) the configuration table made from app.config.Settings.

--write also copies README's Deploying section to the chart's DEPLOYING.md, which ships with the chart.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from app.config import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DEPLOYING = ROOT / "helm" / "session-broker" / "DEPLOYING.md"
DEPLOYING_HEADING = "## Deploying on Kubernetes"
START, END = "<!-- settings-table:start -->", "<!-- settings-table:end -->"


def table() -> str:
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = getattr(field.default, "value", field.default)
        shown = "unset" if default is None else default
        lines.append(f"| `{ENV_PREFIX}{name.upper()}` | `{shown}` | {field.description or ''} |")
    return "\n".join(lines)


def readme_with_table(text: str) -> str:
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), flags=re.DOTALL)
    return pattern.sub(lambda _: f"{START}\n{table()}\n{END}", text)


if __name__ == "__main__":
    if "--write" in sys.argv:
        text = readme_with_table(README.read_text())
        README.write_text(text)
        DEPLOYING.write_text(text[text.index(DEPLOYING_HEADING) :])
    else:
        print(table())
