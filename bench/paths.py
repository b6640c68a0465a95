"""Where the bench finds its inputs and puts its outputs (all relative to this package)."""

from __future__ import annotations

import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
# Scratch space: the embedded database, id files and server logs (gitignored, safe to delete).
WORK_DIR = BENCH_DIR / "work"
LUA_DIR = BENCH_DIR / "lua"
RESULTS_DIR = BENCH_DIR / "results"
# The virtualenv the bench runs from: its `session-broker` is the service under test.
VENV_BIN = Path(sys.executable).parent
