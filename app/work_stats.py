"""The work-across-replicas figures of `GET /v1/stats`: requests in flight now, pending server-to-client
requests and how they ended (docs/design.md, "In-flight work", "Pending requests")."""

from __future__ import annotations

from typing import Any

import asyncpg

from app.sql import in_flight


async def work_figures(connection: asyncpg.Connection, tenant: str) -> dict[str, Any]:
    marks = await connection.fetch(*in_flight.IN_FLIGHT_BY_METHOD.bind(tenant=tenant))
    by_method = {row["method"]: row["n"] for row in marks}
    return {"in_flight": {"requests": sum(by_method.values()), "by_method": by_method}}
