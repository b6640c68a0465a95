"""`RowGate`: in this process, at most one request at a time waits for a given session's row lock.

A transaction holding one session's row (an operator's `SELECT ... FOR UPDATE`, a slow patch, another
replica's write) makes every statement on that row wait. Without a gate, each waiting request holds a
pooled connection while it waits, so enough requests for one hot row exhaust the pool and stall every
tenant. With it, one connection per row waits in the database and the rest wait here, holding nothing;
the request deadline bounds both (docs/design.md, "Row locks").
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from typing import Any


class _Gate:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class RowGate:
    def __init__(self) -> None:
        self._gates: dict[Hashable, _Gate] = {}

    def hold(self, row: Hashable) -> _Held:
        """`async with gate.hold((tenant, session_id)):` exclusive use of that row in this process."""
        return _Held(self, row)

    def waiting(self) -> int:
        """Requests holding or waiting for a gate (for tests and diagnostics)."""
        return sum(gate.users for gate in self._gates.values())


class _Held:
    __slots__ = ("_gate", "_owner", "_row")

    def __init__(self, owner: RowGate, row: Hashable) -> None:
        self._owner = owner
        self._row = row
        self._gate: _Gate | None = None

    async def __aenter__(self) -> None:
        gates = self._owner._gates
        gate = gates.get(self._row)
        if gate is None:
            gate = gates[self._row] = _Gate()
        gate.users += 1
        self._gate = gate
        try:
            await gate.lock.acquire()
        except BaseException:
            self._leave()
            raise

    async def __aexit__(self, *_: Any) -> None:
        assert self._gate is not None
        self._gate.lock.release()
        self._leave()

    def _leave(self) -> None:
        assert self._gate is not None
        self._gate.users -= 1
        if self._gate.users == 0:
            del self._owner._gates[self._row]
