"""Every test in this folder runs twice: through the lean hot paths and through FastAPI's routes.

These fixtures override the default `client` and `client_with` of `tests/conftest.py` here, which
proves both paths agree on everything the tests check.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import httpx
import pytest

from tests.helpers import running_client


@pytest.fixture(params=[True, False], ids=["hot-path", "fastapi-route"])
def hot_paths(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.fixture
async def client(
    database_url: str, raw_db: asyncpg.Connection, hot_paths: bool
) -> AsyncIterator[httpx.AsyncClient]:
    async with running_client(database_url, hot_paths=hot_paths) as client:
        yield client


@pytest.fixture
def client_with(database_url: str, raw_db: asyncpg.Connection, hot_paths: bool) -> Callable[..., Any]:
    return lambda **overrides: running_client(database_url, hot_paths=hot_paths, **overrides)
