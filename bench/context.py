"""What one bench run shares: its fixed parameters, its log line, and `BenchContext` (the run's state)."""

from __future__ import annotations

import argparse
import asyncio
import secrets
from collections.abc import Coroutine
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from bench.postgres import Postgres
from bench.processes import Children
from bench.redis_store import Redis
from bench.targets import Row

TENANT = "bench"
HOT_SET = 1000  # scenario (b)'s working set
SMALL_SET = 10_000  # scenario (e)'s small size (its row is `AT_10K`), measured before the rest is loaded
EXPIRED_ROWS = 300_000  # rows scenario (d)'s purge removes, each time it runs
WORKERS = 2  # uvicorn workers of every server
POOL_SIZE = 20  # per worker, as the service's default SESSION_BROKER_DB_POOL_MAX_SIZE
BACKDATE_SECONDS = 300  # scenario (b): past the default touch granularity, so first touches write
ID_WIDTH = 43  # len(secrets.token_urlsafe(32))
UNKNOWN_ID = "x" * ID_WIDTH

T = TypeVar("T")


@dataclass
class BenchContext:
    args: argparse.Namespace
    children: Children
    pg: Postgres
    redis: Redis
    broker: str | None  # the `session-broker` executable, None when it is not installed or broken
    broker_help: str
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    ids: list[str] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # run-level figures stored beside the rows
    notes: list[str] = field(default_factory=list)
    round: int = 0
    summary: list[Row] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return float(self.args.duration)

    @property
    def warmup(self) -> float:
        return 1.0 if self.args.quick else 2.0


def log(msg: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {msg}", flush=True)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """The bench is synchronous around short database steps: each one gets its own event loop."""
    return asyncio.run(coro)
