"""The Redis behind the `redis_touch` reference: loading the bench's keys and removing only those.

The Redis may be shared (the default is the machine's own at 127.0.0.1:6379), so the bench writes only
keys under its prefix and deletes exactly those at the end, never FLUSHDB.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from bench.errors import BenchError

if TYPE_CHECKING:  # redis-py comes with the bench extra; imported where it is used
    import redis

BATCH = 10_000  # keys per pipe write / UNLINK


@dataclass
class Redis:
    url: str
    prefix: str = "sbbench:"
    loaded: int = 0

    def client(self) -> redis.Redis:
        import redis

        return redis.Redis.from_url(self.url)

    def server_pid(self) -> int | None:
        """redis-server's pid if it runs on this machine (for CPU accounting)."""
        try:
            pid = int(self.client().info("server")["process_id"])
        except Exception:
            return None
        return pid if os.path.exists(f"/proc/{pid}") else None

    def available(self) -> bool:
        try:
            return bool(self.client().ping())
        except Exception:
            return False

    def load(self, tenant: str, ids: list[str], idle: int = 1800) -> float:
        """Load keys through `redis-cli --pipe` (raw RESP), ~1 s per million keys; else redis-py pipelines."""
        started = time.perf_counter()
        value = json.dumps(
            {"tenant": tenant, "kind": "session", "created_at": datetime.now().isoformat(), "metadata": {}}
        ).encode()
        cli = shutil.which("redis-cli")
        if cli is not None:
            self._pipe(cli, self._set_commands(tenant, ids, value, idle))
        else:
            pipe = self.client().pipeline(transaction=False)
            for n, i in enumerate(ids, 1):
                pipe.set(self._key(tenant, i), value, ex=idle)
                if n % BATCH == 0:
                    pipe.execute()
            pipe.execute()
        self.loaded += len(ids)
        return time.perf_counter() - started

    def clear(self) -> int:
        """Delete only the bench's own keys (prefix), never FLUSHDB: the Redis may be shared."""
        try:
            client = self.client()
            removed = 0
            batch: list[bytes] = []
            for key in client.scan_iter(match=f"{self.prefix}*", count=BATCH):
                batch.append(key)
                if len(batch) >= BATCH:
                    removed += client.unlink(*batch)
                    batch.clear()
            if batch:
                removed += client.unlink(*batch)
            return removed
        except Exception:
            return 0

    def _key(self, tenant: str, session_id: str) -> str:
        return f"{self.prefix}{tenant}:{session_id}"

    def _set_commands(self, tenant: str, ids: list[str], value: bytes, idle: int) -> Iterator[bytes]:
        """`SET key value EX idle` per id, as raw RESP arrays."""
        ttl = str(idle).encode()
        for i in ids:
            parts = [b"SET", self._key(tenant, i).encode(), value, b"EX", ttl]
            yield b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)

    def _pipe(self, cli: str, commands: Iterator[bytes]) -> None:
        parsed = urlparse(self.url)
        argv = [
            cli,
            "-h",
            parsed.hostname or "127.0.0.1",
            "-p",
            str(parsed.port or 6379),
            "-n",
            (parsed.path or "/0").lstrip("/") or "0",
            "--pipe",
        ]
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert proc.stdin is not None
        buf: list[bytes] = []
        for command in commands:
            buf.append(command)
            if len(buf) >= BATCH:
                proc.stdin.write(b"".join(buf))
                buf.clear()
        proc.stdin.write(b"".join(buf))
        proc.stdin.close()
        out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
        if proc.wait() != 0 or "errors: 0" not in out:
            raise BenchError(f"redis-cli --pipe failed: {out}")
