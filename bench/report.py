"""What a run leaves behind: the summary (one row per server), the console table, and the result JSON.

The JSON's shape is what bench/results/ holds since the first run (`python -m bench.readme` reads those
files): new fields may be added, none renamed or removed.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.context import WORKERS, BenchContext
from bench.paths import REPO_DIR, RESULTS_DIR
from bench.targets import ROWS_PER_S, Row
from bench.wrk import CO_NOTE, wrk_version

COLUMNS = [
    "scen",
    "target",
    "req/s",
    "p50 ms",
    "p99 ms",
    "errors",
    "app us/req",
    "db us/req",
    "RSS MB",
    "upd",
    "HOT %",
    "other cores",
    "est req/s",
]


def summarize(rows: list[Row]) -> list[Row]:
    """One row per (scenario, target): with --repeat, the round with the median req/s (lower median)."""
    groups: dict[tuple[str, str], list[Row]] = {}
    for row in rows:
        groups.setdefault((row["scenario"], row["target"]), []).append(row)
    out = []
    for group in groups.values():
        measured = sorted((r for r in group if "rps" in r), key=lambda r: r["rps"])
        if not measured:
            out.append(group[-1])
            continue
        pick = dict(measured[(len(measured) - 1) // 2])
        if len(group) > 1:
            pick["rounds"] = len(group)
            pick["rps_all"] = [r.get("rps") for r in group]
            pick["p99_ms_all"] = [r.get("p99_ms") for r in group]
        out.append(pick)
    return out


def render(ctx: BenchContext, checks: list[Row]) -> str:
    """The console report: one line per server, one per target, then what was unusual and how to read it."""
    lines = [_cells(row) for row in ctx.summary]
    measured = [line for line in lines if line[3] != ""]
    widths = [max([len(h)] + [len(str(line[i])) for line in measured]) for i, h in enumerate(COLUMNS)]

    def fmt_line(cells: list[str]) -> str:
        parts = []
        for i, cell in enumerate(cells):
            if i < 2:
                parts.append(str(cell).ljust(widths[i]))
            elif i == 2 and cells[3] == "":
                parts.append(str(cell))  # status text instead of numbers
            else:
                parts.append(str(cell).rjust(widths[i]))
        return "  ".join(parts).rstrip()

    out = [fmt_line(COLUMNS), "  ".join("-" * w for w in widths)]
    out.extend(fmt_line(line) for line in lines)
    out.append("")
    out.append("Targets:")
    out.extend(_target_line(c) for c in checks)
    out.append("")
    out.extend(_remarks(ctx))
    out.append(f"Notes: {CO_NOTE}.")
    out.append(
        f"  wrk -t2 -c64, {ctx.duration:.0f} s per target after a {ctx.warmup:.0f} s warm-up; "
        f"{WORKERS} uvicorn workers everywhere; one server at a time; "
        "app/db us/req = CPU seconds of the server's / the store's (postgres or redis-server) processes "
        "per request; "
        "other cores = CPU used meanwhile by processes outside the measurement (noise on a shared machine); "
        "est req/s = cores / (app + db + wrk CPU per request), the throughput if nothing else ran."
    )
    out.extend(f"  {n}" for n in ctx.notes)
    return "\n".join(out)


def _cells(row: Row) -> list[str]:
    if "rps" not in row:
        return [row["scenario"], row["target"], row.get("status", "-")] + [""] * (len(COLUMNS) - 3)
    delta = row.get("table_delta") or {}
    hot = row.get("hot_ratio")
    return [
        row["scenario"],
        row["target"],
        f"{row['rps']:.0f}",
        f"{row['p50_ms']:.2f}",
        f"{row['p99_ms']:.2f}",
        str(row["errors"]),
        _fmt(row.get("app_cpu_us_per_req")),
        _fmt(row.get("db_cpu_us_per_req")),
        _fmt(row.get("rss_mb")),
        str(delta.get("n_tup_upd", "")) if delta else "",
        "" if hot is None else f"{hot * 100:.1f}",
        _fmt(row.get("other_cpu_cores")),
        _fmt(row.get("est_rps")),
    ]


def _target_line(check: Row) -> str:
    unit = check["unit"]
    if check["value"] is None:
        value = "n/a"
    elif unit == ROWS_PER_S:
        value = f"{check['value']:,.0f} rows/s"
    else:
        value = f"{check['value']:.3f}{unit}"
    limit = f"{check['limit']:,} rows/s" if unit == ROWS_PER_S else f"{check['limit']}{unit}"
    estimate = check.get("cpu_estimate_value")
    est = "" if estimate is None else f"  [CPU-bound estimate {estimate:.3f}x]"
    return (
        f"  ({check['scenario']}) {check['target']}: {value}  (target {check['op']} {limit})  "
        f"{check['verdict']}{est}"
    )


def _remarks(ctx: BenchContext) -> list[str]:
    """The purge's outcome and every contract check a server failed."""
    out = []
    for row in ctx.summary:
        if row.get("purge_output") is not None:
            out.append(
                f"  (d) purge: removed {row.get('purged_rows'):,} of {row.get('purgeable_before'):,} "
                "expired rows; "
                f"command took {row.get('purge_s')} s wall (exit {row.get('purge_exit')}); "
                f"it reported: {json.dumps(row.get('purge_reported'))}; touch load ran "
                f"{len((row.get('wrk') or {}).get('windows') or [1])} wrk window(s) to cover it"
            )
            for alone in ctx.extra.get("purge_alone", [])[:1] if row.get("round", 0) == 0 else []:
                out.append(
                    f"  (d) purge alone (no touch load, unpaced): removed {alone['purged_rows']:,} of "
                    f"{alone['purgeable_before']:,} rows, {alone['rows_per_s'] or 0:,.0f} rows/s"
                )
        for name, check in (row.get("contract") or {}).items():
            if not check["ok"]:
                out.append(
                    f"  contract: {row['scenario']} {row['target']} {name} -> {check['status']} "
                    f"(expected {check['expected']})"
                )
    return out


def _fmt(value: Any) -> str:
    return (
        "" if value is None else f"{value:.0f}" if isinstance(value, float) and value >= 100 else str(value)
    )


def result(ctx: BenchContext, checks: list[Row], started: float) -> dict[str, Any]:
    """The result JSON of a run (see the module docstring: its shape is kept)."""
    args = ctx.args
    return {
        "started": datetime.now().isoformat(timespec="seconds"),
        "elapsed_s": round(time.perf_counter() - started, 1),
        "sessions": args.sessions,
        "duration_s": args.duration,
        "quick": args.quick,
        "scenarios": args.scenarios,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": sys.version.split()[0],
            "wrk": wrk_version(),
        },
        "service": {"available": ctx.broker is not None, "git_head": _git_head(), "git_dirty": _git_dirty()},
        "latency_note": CO_NOTE,
        "repeat": args.repeat,
        "summary": ctx.summary,
        "rows": ctx.rows,
        "targets": checks,
        "notes": ctx.notes,
        **ctx.extra,
    }


def write_result(data: dict[str, Any], output: str | None) -> Path:
    out = Path(output) if output else RESULTS_DIR / f"{datetime.now():%Y-%m-%dT%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return out


def _git(*args: str) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(["git", *args], cwd=REPO_DIR, capture_output=True, text=True, check=False)
    except OSError:
        return None


def _git_dirty() -> bool | None:
    """True when tracked files differ from HEAD: the result then does not describe that commit alone."""
    done = _git("status", "--porcelain", "--untracked-files=no")
    if done is None or done.returncode != 0:
        return None
    return bool(done.stdout.strip())


def _git_head() -> str:
    done = _git("rev-parse", "--short", "HEAD")
    return "" if done is None else done.stdout.strip()
