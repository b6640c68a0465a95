"""The load generator: wrk with the Lua scripts in bench/lua/, which print one JSON result line.

wrk's latency percentiles are corrected for coordinated omission (synthetic samples for responses slower
than the mean request interval), so they are higher than a plain per-request p99: compare them only with
each other (`CO_NOTE`, printed under the table and stored in every result).
"""

from __future__ import annotations

import json
import resource
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any

from bench.errors import BenchError
from bench.paths import LUA_DIR

CO_NOTE = (
    "latency percentiles are wrk's, which are corrected for coordinated omission "
    "(synthetic samples added for responses slower than the mean request interval)"
)
RESULT_PREFIX = "BENCH_RESULT "  # the line bench/lua/common.lua prints when wrk is done


def wrk_available() -> str | None:
    return shutil.which("wrk")


def wrk_version() -> str:
    try:
        done = subprocess.run(["wrk", "-v"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    text = (done.stdout or done.stderr).strip().splitlines()
    return text[0] if text else ""


@dataclass(frozen=True)
class WrkLoad:
    """One load shape against one server: the same script and arguments for warm-up and every window."""

    port: int
    path: str
    script: str
    args: tuple[str, ...]
    threads: int = 2
    connections: int = 64

    def argv(self, duration: float) -> list[str]:
        return [
            "wrk",
            f"-t{self.threads}",
            f"-c{self.connections}",
            f"-d{max(1, round(duration))}s",
            "--timeout",
            "5s",
            "-s",
            str(LUA_DIR / self.script),
            f"http://127.0.0.1:{self.port}{self.path}",
            "--",
            *self.args,
        ]

    def run(self, duration: float) -> dict[str, Any]:
        """Run wrk once; its own CPU time is part of the result (it shares the cores with the servers)."""
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        done = subprocess.run(
            self.argv(duration), capture_output=True, text=True, check=False, start_new_session=True
        )
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        result = parse_wrk(done.stdout, done.stderr)
        result["wrk_cpu_s"] = round(
            (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime), 3
        )
        return result


def parse_wrk(stdout: str, stderr: str) -> dict[str, Any]:
    for line in stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            result: dict[str, Any] = json.loads(line[len(RESULT_PREFIX) :])
            result["rps"] = (
                result["requests"] / (result["duration_us"] / 1e6) if result["duration_us"] else 0.0
            )
            return result
    raise BenchError(f"wrk printed no result:\n{stdout}\n{stderr}")


def merge_wrk(windows: list[dict[str, Any]]) -> dict[str, Any]:
    """Several consecutive wrk windows as one: totals add up; latency percentiles are the worst window's."""
    if len(windows) == 1:
        return windows[0]
    merged: dict[str, Any] = {
        "requests": sum(w["requests"] for w in windows),
        "duration_us": sum(w["duration_us"] for w in windows),
        "errors": sum(w["errors"] for w in windows),
        "wrk_cpu_s": sum(w.get("wrk_cpu_s", 0) for w in windows),
        "latency_us": {k: max(w["latency_us"][k] for w in windows) for k in windows[0]["latency_us"]},
        "windows": windows,
        "note": "latency = worst window (each window's percentiles are wrk's own)",
    }
    merged["rps"] = merged["requests"] / (merged["duration_us"] / 1e6)
    return merged
