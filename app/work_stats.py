"""The work-across-replicas figures of `GET /v1/stats`: requests in flight now, pending server-to-client
requests and how they ended (docs/design.md, "In-flight work", "Pending requests")."""

from __future__ import annotations

from typing import Any

import asyncpg

from app.sql import in_flight, pending

COMPLETION_METHOD = "sampling/createMessage"


async def work_figures(connection: asyncpg.Connection, tenant: str) -> dict[str, Any]:
    marks = await connection.fetch(*in_flight.IN_FLIGHT_BY_METHOD.bind(tenant=tenant))
    marked = {row["method"]: row["n"] for row in marks}
    waiting = {
        row["method"]: row["n"]
        for row in await connection.fetch(*pending.PENDING_BY_METHOD.bind(tenant=tenant))
    }
    ended: dict[str, dict[str, int]] = {"answered": {}, "cancelled": {}, "timed_out": {}}
    for row in await connection.fetch(*pending.PENDING_ENDED_TOTALS.bind(tenant=tenant)):
        _, state, method = row["name"].split(":", 2)
        ended.setdefault(state, {})[method] = int(row["total"])
    return {
        "in_flight": {"requests": sum(marked.values()), "by_method": marked},
        "pending": {
            "pending": sum(waiting.values()),
            "by_method": waiting,
            "completions": waiting.get(COMPLETION_METHOD, 0),
            "ended": ended,
        },
    }
