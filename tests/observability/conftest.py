"""Shared helpers for the observability tests."""

from __future__ import annotations

import shutil

import pytest


@pytest.fixture(scope="session")
def promtool() -> str:
    """Path of promtool; fail (never skip) when missing: `apt-get install -y prometheus`."""
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool not found; install it with: apt-get update && apt-get install -y prometheus")
    return path
