"""Request analytics from touch bodies: per tenant and MCP method, requests, errors and durations.

A touch must not gain a database write (it is the hot path), so each process counts in memory (one
dict update per touch) and a background task adds the counts to `gateway_request_totals` in one
batched statement every few seconds, and once more at shutdown. `/v1/stats` reads the fleet-wide
totals plus this process's not-yet-flushed counts. Prometheus gets the same figures in real time.
A process killed with SIGKILL loses at most one flush interval of analytics (never session state).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from app import metrics
from app.db import Database
from app.mcp_methods import normalise_mcp_method
from app.sql import fleet as sql

log = logging.getLogger(__name__)

FLUSH_INTERVAL_SECONDS = 5.0
BUSIEST = 10


@dataclass
class _Tally:
    requests: int = 0
    errors: int = 0
    timed: int = 0
    duration_ms_total: float = 0.0

    def add(self, other: _Tally) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.timed += other.timed
        self.duration_ms_total += other.duration_ms_total


class RequestAnalytics:
    """This process's unflushed counts."""

    def __init__(self) -> None:
        self._pending: dict[tuple[str, str], _Tally] = {}

    def record(self, tenant: str, method: str, ok: bool, duration_ms: float | None) -> None:
        """Called by touch: in-memory only."""
        normalised = normalise_mcp_method(method)
        metrics.record_gateway_request(tenant, normalised, ok, duration_ms)
        tally = self._pending.get((tenant, normalised))
        if tally is None:
            tally = self._pending[(tenant, normalised)] = _Tally()
        tally.requests += 1
        tally.errors += 0 if ok else 1
        if duration_ms is not None:
            tally.timed += 1
            tally.duration_ms_total += duration_ms

    async def flush(self, db: Database) -> None:
        """Add the pending counts to the table, one statement per tenant (no statement spans tenants:
        docs/scaling.md); on failure keep what was not written for the next try."""
        if not self._pending:
            return
        batch, self._pending = self._pending, {}
        by_tenant: dict[str, list[tuple[str, _Tally]]] = {}
        for (tenant, method), tally in batch.items():
            by_tenant.setdefault(tenant, []).append((method, tally))
        written: set[str] = set()
        try:
            async with db.connection("analytics") as connection:
                for tenant, tallies in by_tenant.items():
                    await connection.execute(
                        *sql.ADD_REQUEST_TOTALS.bind(
                            tenant=tenant,
                            methods=[method for method, _ in tallies],
                            requests=[tally.requests for _, tally in tallies],
                            errors=[tally.errors for _, tally in tallies],
                            timed=[tally.timed for _, tally in tallies],
                            duration_ms_total=[tally.duration_ms_total for _, tally in tallies],
                        )
                    )
                    written.add(tenant)
        except BaseException:
            for (tenant, method), tally in batch.items():  # put back, merged with what came meanwhile
                if tenant not in written:
                    self._pending.setdefault((tenant, method), _Tally()).add(tally)
            raise

    async def summary(self, db: Database, tenant: str) -> dict[str, Any]:
        """Fleet-wide totals for `/v1/stats`: requests, errors, success rate, busiest methods."""
        async with db.connection("stats") as connection:
            rows = await connection.fetch(*sql.READ_REQUEST_TOTALS.bind(tenant=tenant))
        totals: dict[str, _Tally] = {
            row["method"]: _Tally(row["requests"], row["errors"], row["timed"], row["duration_ms_total"])
            for row in rows
        }
        for (pending_tenant, method), tally in self._pending.items():
            if pending_tenant == tenant:
                totals.setdefault(method, _Tally()).add(tally)
        requests = sum(tally.requests for tally in totals.values())
        errors = sum(tally.errors for tally in totals.values())
        busiest = sorted(totals.items(), key=lambda item: (-item[1].requests, item[0]))[:BUSIEST]
        return {
            "requests_total": requests,
            "errors_total": errors,
            "success_rate": None if requests == 0 else round((requests - errors) / requests, 6),
            "busiest_methods": [
                {
                    "method": method,
                    "requests": tally.requests,
                    "errors": tally.errors,
                    "success_rate": round((tally.requests - tally.errors) / tally.requests, 6),
                    "mean_duration_ms": None
                    if tally.timed == 0
                    else round(tally.duration_ms_total / tally.timed, 3),
                }
                for method, tally in busiest
            ],
        }


async def flush_loop(analytics: RequestAnalytics, db: Database) -> None:
    while True:
        await asyncio.sleep(FLUSH_INTERVAL_SECONDS)
        try:
            await analytics.flush(db)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # the database may be down: the counts wait for the next flush
            log.debug("analytics flush failed: %s", type(error).__name__)
