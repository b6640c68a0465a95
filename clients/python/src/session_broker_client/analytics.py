"""Request analytics off the request path: outcomes are buffered in memory and sent in batches by a
background task (`POST /v1/analytics`), every `interval` seconds and once more at shutdown.

The buffer is bounded: when the broker is unreachable for long, the oldest outcomes are dropped (and
counted in `dropped`) rather than growing without limit; a failed batch is put back in front of what
arrived meanwhile and retried at the next interval. Analytics are best effort by design; sessions never
depend on them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import TYPE_CHECKING

from session_broker_client.errors import BrokerError
from session_broker_client.models import RequestOutcome

if TYPE_CHECKING:
    from session_broker_client.client import SessionBroker

log = logging.getLogger(__name__)


class AnalyticsReporter:
    """`record()` is synchronous and O(1); `start()`/`aclose()` run and stop the sender."""

    def __init__(self, broker: SessionBroker, *, interval: float = 2.0, max_buffer: int = 10_000) -> None:
        self._broker = broker
        self.interval = interval
        self._buffer: deque[RequestOutcome] = deque(maxlen=max_buffer)
        self._task: asyncio.Task[None] | None = None
        self.sent = 0
        self.dropped = 0
        self.failed_sends = 0

    def record(self, method: str, ok: bool, duration_ms: float | None) -> None:
        if len(self._buffer) == self._buffer.maxlen:
            self.dropped += 1  # deque drops the oldest on append
        self._buffer.append(RequestOutcome(method, ok, duration_ms))

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="broker-analytics")

    async def flush(self) -> None:
        """Send everything buffered now; on failure the batch goes back to the front of the buffer."""
        if not self._buffer:
            return
        batch = list(self._buffer)
        self._buffer.clear()
        try:
            self.sent += await self._broker.report_requests(batch)
        except BrokerError as error:
            self.failed_sends += 1
            room = (self._buffer.maxlen or 0) - len(self._buffer)
            kept = batch[-room:] if room > 0 else []
            self.dropped += len(batch) - len(kept)
            self._buffer.extendleft(reversed(kept))
            log.debug("analytics batch not sent (%s); kept for the next try", error.detail)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.flush()

    async def aclose(self) -> None:
        """Stop the sender and make one last attempt to send what is buffered."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.flush()
