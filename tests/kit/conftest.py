"""Fixtures of the gateway-kit tests: one broker process for the whole kit suite (on the test
database), and a directory for the logs of the processes the tests start."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from session_broker_client import SessionBroker

from tests.kit.kit_helpers import KIT_KEY, KitBroker


@pytest.fixture(scope="session")
def kit_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("kit-logs")


@pytest.fixture(scope="session")
def kit_broker(database_url: str, kit_logs: Path) -> Iterator[KitBroker]:
    broker = KitBroker(database_url, kit_logs)
    yield broker
    broker.stop()


@pytest.fixture
def running_broker(kit_broker: KitBroker) -> KitBroker:
    """The kit broker, started again if a previous test stopped it and failed before restarting it."""
    if kit_broker.server is None:
        kit_broker.start()
    return kit_broker


@pytest.fixture
async def broker(running_broker: KitBroker) -> AsyncIterator[SessionBroker]:
    """A client of tenant `kit`."""
    async with SessionBroker(running_broker.url, KIT_KEY) as client:
        yield client
