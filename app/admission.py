"""`Admission`: how many heavy reads (list pages, up to megabytes each) a process serves at once, in all
and per tenant.

Eight concurrent 1,000-session pages of 60 kB sessions took a worker from 89 MB to 939 MB, and one
tenant's pages starved every other tenant. A page is also bounded in bytes (`LIST_MAX_PAGE_BYTES`);
this bounds how many are in memory at once, and keeps one tenant from taking every turn. A request
waiting its turn holds no connection, and its deadline (`DB_DEADLINE_SECONDS`) bounds the wait.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class Admission:
    def __init__(self, total: int, per_tenant: int) -> None:
        self._total = asyncio.Semaphore(total)
        self._per_tenant = per_tenant
        self._tenants: dict[str, tuple[asyncio.Semaphore, int]] = {}

    @asynccontextmanager
    async def admit(self, tenant: str) -> AsyncIterator[None]:
        """Wait for the tenant's turn, then for a turn of the process; release both afterwards."""
        semaphore, users = self._tenants.get(tenant) or (asyncio.Semaphore(self._per_tenant), 0)
        self._tenants[tenant] = (semaphore, users + 1)
        try:
            async with semaphore, self._total:
                yield
        finally:
            semaphore, users = self._tenants[tenant]
            if users == 1:
                del self._tenants[tenant]
            else:
                self._tenants[tenant] = (semaphore, users - 1)
