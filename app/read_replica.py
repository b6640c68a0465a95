"""Reads that may be served by a streaming standby (`READ_DATABASE_URL`): list pages, `/v1/stats` and the
admin figures. Never get, touch or anything that must see its own writes.

A standby replays the primary's WAL a little later, so what it answers can be stale. The bound: a read
sent to the standby reflects every write committed more than READ_MAX_LAG_SECONDS + 2 s earlier (the lag
measured at the last probe, and the at most two probe intervals since). Each process measures the
standby's lag every PROBE_INTERVAL_SECONDS; while the standby is further behind than that, unreachable, or
has not been measured recently, reads go to the primary instead (never a 503 because only the standby is
down). docs/scaling.md has the measured lag.
"""

from __future__ import annotations

import asyncio
import logging
import time

from app.config import Settings
from app.db import Database
from app.sql import read as sql

log = logging.getLogger(__name__)

PROBE_INTERVAL_SECONDS = 1.0


class Reads:
    """Which database serves the reads that tolerate a bounded staleness."""

    def __init__(self, primary: Database, standby: Database | None, settings: Settings) -> None:
        self.primary = primary
        self.standby = standby
        self._max_lag = settings.read_max_lag_seconds
        self._fresh_until = 0.0  # monotonic time until which the last measurement vouches for the standby
        self.lag_seconds: float | None = None

    def database(self) -> Database:
        """The standby while it is measured close enough behind, else the primary."""
        if self.standby is not None and time.monotonic() < self._fresh_until:
            return self.standby
        return self.primary

    async def probe(self) -> None:
        """Measure the standby's lag once."""
        assert self.standby is not None
        try:
            async with self.standby.connection("standby_lag") as connection:
                lag = await connection.fetchval(*sql.STANDBY_LAG.bind())
        except Exception as error:  # unreachable or failing: reads go to the primary until it answers
            self.lag_seconds, self._fresh_until = None, 0.0
            log.debug("standby not measured: %s", type(error).__name__)
            return
        self.lag_seconds = None if lag is None else float(lag)
        if self.lag_seconds is not None and self.lag_seconds <= self._max_lag:
            # Trusted until the next probe is due (and one more interval of slack), not longer.
            self._fresh_until = time.monotonic() + 2 * PROBE_INTERVAL_SECONDS
        else:
            self._fresh_until = 0.0

    async def probe_loop(self) -> None:
        while True:
            await self.probe()
            await asyncio.sleep(PROBE_INTERVAL_SECONDS)
