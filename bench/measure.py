"""One measurement: start a server, check its contract, warm it up, load it with wrk, account for CPU.

Besides wrk's throughput and latency, every row says where the CPU went (the server's processes, the
store's, wrk's, and everything else on the machine) and what the server did to the sessions table over
its lifetime (updates, HOT updates, WAL): on a shared 2-core machine these explain a number better than
the number alone.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.context import BenchContext, log, run
from bench.errors import BenchError
from bench.paths import WORK_DIR
from bench.postgres import table_stats
from bench.processes import Child
from bench.procfs import CLK_TCK, cpu_busy, sample_tree
from bench.servers import SERVICE, check_contract, free_port, probes_for, server_argv, server_env, wait_ready
from bench.targets import Row
from bench.wrk import WrkLoad, merge_wrk

TABLE_COUNTERS = ("n_tup_ins", "n_tup_upd", "n_tup_hot_upd", "n_tup_del")
WAL_COUNTERS = ("wal_records", "wal_fpi", "wal_bytes", "checkpoints", "autovacuums")
MAX_WINDOWS = 100  # back-to-back wrk windows while concurrent work runs (scenario d)


@dataclass(frozen=True)
class RunningServer:
    """A server that is up and has passed its warm-up: what a follow-up measurement needs."""

    port: int
    child: Child
    store_pid: int | None  # postgres' (or redis-server's) root process, for the store's CPU
    load: WrkLoad


def measure(
    ctx: BenchContext,
    scenario: str,
    target: str,
    *,
    kind: str = "touch",
    ids_file: Path | None = None,
    service_env: dict[str, str] | None = None,
    label: str | None = None,
    keep_running: Callable[[RunningServer], list[Row]] | None = None,
) -> Row:
    """Start one server, check the contract, warm it up, measure it with wrk, stop it.

    `keep_running(server)` runs after the first measurement with the server still up and returns extra
    rows (scenario d: the same server measured again while a purge runs).
    """
    label = label or target
    row: Row = {"scenario": scenario, "target": label, "round": ctx.round}
    if target == SERVICE and ctx.broker is None:
        row["status"] = "service not available (no session-broker executable)"
        ctx.rows.append(row)
        log(f"({scenario}) {label}: skipped, {row['status']}")
        return row
    token = ctx.token if target == SERVICE else None
    wrk_token = token or "-"
    known_id = None
    if ids_file is not None:
        with open(ids_file, encoding="ascii") as fh:
            known_id = fh.readline().strip()

    stats_before = run(table_stats(ctx.pg.url, wait_for_clients=True))
    port = free_port()
    if kind == "create":
        load = WrkLoad(port, "/v1/sessions", "create.lua", (wrk_token,))
    else:
        assert ids_file is not None
        load = WrkLoad(port, "/", "touch.lua", (str(ids_file), wrk_token))
    log_path = WORK_DIR / "logs" / f"{scenario}-{label}.log"
    child = ctx.children.start(
        label, server_argv(ctx, target, port), server_env(ctx, target, service_env or {}), log_path
    )
    try:
        probes = probes_for(target, kind, token, known_id)
        wait_ready(child, port, probes[-1])
        row["contract"], misses = check_contract(port, probes, known_id)
        for miss in misses:
            log(f"  WARNING {label}: {miss}")
        load.run(ctx.warmup)  # warm-up, discarded
        store_pid = ctx.redis.server_pid() if target == "redis_touch" else ctx.pg.postmaster_pid
        server = RunningServer(port, child, store_pid, load)
        rows = [measure_window(ctx, row, server)]
        if keep_running is not None:
            rows.extend(keep_running(server))
    except BenchError as error:
        row["status"] = f"failed: {str(error).splitlines()[0][:120]} (log: {log_path})"
        row["error"] = str(error)
        ctx.rows.append(row)
        log(f"({scenario}) {label}: {row['status']}")
        return row
    finally:
        ctx.children.stop(child)
    stats_after = run(table_stats(ctx.pg.url, wait_for_clients=True))
    _record_lifetime(row, stats_before, stats_after)
    for r in rows:
        ctx.rows.append(r)
        log(
            f"({r['scenario']}) {r['target']}: {r['rps']:.0f} req/s, p50 {r['p50_ms']:.2f} ms, "
            f"p99 {r['p99_ms']:.2f} ms, errors {r['errors']}, app {r.get('app_cpu_us_per_req')} us/req, "
            f"db {r.get('db_cpu_us_per_req')} us/req, rss {r.get('rss_mb')} MB"
        )
    delta, wal = row["table_delta"], row["wal_delta"]
    log(
        f"  server lifetime: {delta['n_tup_upd']:,} updates, WAL {wal['wal_bytes'] / 2**20:.1f} MB in "
        f"{wal['wal_records']:,} records, {wal['wal_fpi']:,} full-page images, "
        f"{wal['checkpoints']} checkpoint(s), {wal['autovacuums']} autovacuum/analyze run(s)"
    )
    return row


def _record_lifetime(row: Row, before: dict[str, int], after: dict[str, int]) -> None:
    """What the server did to the sessions table, over its whole lifetime (checks + warm-up + measurement)."""
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in TABLE_COUNTERS}
    row["table_delta"] = delta
    row["wal_delta"] = {k: after.get(k, 0) - before.get(k, 0) for k in WAL_COUNTERS}
    row["hot_ratio"] = round(delta["n_tup_hot_upd"] / delta["n_tup_upd"], 4) if delta["n_tup_upd"] else None


def measure_window(
    ctx: BenchContext,
    row: Row,
    server: RunningServer,
    during: Callable[[], dict[str, Any]] | None = None,
    duration: float | None = None,
) -> Row:
    """Measure a running server into `row`: wrk's figures and the CPU and memory used meanwhile.

    With `during`, that work runs in a thread while wrk keeps the load on in back-to-back windows until it
    has finished; its result is merged into the row.
    """
    duration = duration or ctx.duration
    app0 = sample_tree(server.child.pid)
    pg0 = sample_tree(server.store_pid)
    busy0 = cpu_busy()
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    extra: dict[str, Any] = {}
    if during is not None:
        result, extra = _while_loaded(server.load, duration, during)
    else:
        result = server.load.run(duration)
    wall = time.perf_counter() - t0
    busy1 = cpu_busy()
    app1 = sample_tree(server.child.pid)
    pg1 = sample_tree(server.store_pid)
    requests = max(1, result["requests"])
    row.update(
        {
            "rps": round(result["rps"], 1),
            "p50_ms": result["latency_us"]["p50"] / 1000,
            "p99_ms": result["latency_us"]["p99"] / 1000,
            "max_ms": result["latency_us"]["max"] / 1000,
            # the slowest request against the p99: a stall shows here, not in the percentiles
            "max_over_p99": round(result["latency_us"]["max"] / max(1, result["latency_us"]["p99"]), 2),
            "errors": result["errors"],
            "wrk": result,
            "wall_s": round(wall, 2),
        }
    )
    if app0 and app1:
        app_s = (app1.cpu_ticks - app0.cpu_ticks) / CLK_TCK
        row["app_cpu_us_per_req"] = round(app_s / requests * 1e6, 1)
        row["app_cpu_cores"] = round(app_s / wall, 2)
        row["rss_mb"] = round(app1.rss_bytes / 2**20, 1)
        row["processes"] = app1.processes
    if pg0 and pg1:
        db_s = (pg1.cpu_ticks - pg0.cpu_ticks) / CLK_TCK
        row["db_cpu_us_per_req"] = round(db_s / requests * 1e6, 1)
        row["db_cpu_cores"] = round(db_s / wall, 2)
    row["wrk_cpu_cores"] = round(result.get("wrk_cpu_s", 0) / wall, 2)
    per_req_s = (
        (row.get("app_cpu_us_per_req") or 0) + (row.get("db_cpu_us_per_req") or 0)
    ) / 1e6 + result.get("wrk_cpu_s", 0) / requests
    ncpu = os.cpu_count() or 1
    # noise-robust capacity estimate: all cores busy with this server, its store and wrk only
    row["est_rps"] = round(ncpu / per_req_s, 1) if per_req_s > 0 else None
    busy_cores = (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1]) * ncpu
    row["machine_busy_cores"] = round(busy_cores, 2)
    # CPU used by processes that are not part of this measurement (other work on a shared machine)
    row["other_cpu_cores"] = round(
        max(
            0.0, busy_cores - row.get("app_cpu_cores", 0) - row.get("db_cpu_cores", 0) - row["wrk_cpu_cores"]
        ),
        2,
    )
    row["loadavg1_before"] = round(load0, 2)
    row.update(extra)
    return row


def _while_loaded(
    load: WrkLoad, duration: float, work: Callable[[], dict[str, Any]]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run `work` in a thread under back-to-back wrk windows: (the windows as one wrk result, its result)."""
    holder: dict[str, Any] = {}

    def call() -> None:
        try:
            holder.update(work())
        except Exception as error:  # reported in the row, never swallowed
            holder["during_error"] = repr(error)

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    windows = [load.run(duration)]
    while thread.is_alive() and len(windows) < MAX_WINDOWS:
        windows.append(load.run(duration))
    thread.join(timeout=600)
    return merge_wrk(windows), holder
