"""`python -m bench`: load sessions, run the service and the reference peers one at a time under wrk,
print one table with throughput, latency, errors and the target ratios, and save it as JSON.

See bench/README.md for what each scenario measures and how to read the output.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from bench import infra
from bench.infra import BenchError, Children, Postgres, Redis

TENANT = "bench"
HOT_SET = 1000
SMALL_SET = 10_000
EXPIRED_ROWS = 300_000
WORKERS = 2
POOL_SIZE = 20  # per worker, as the service's default SESSION_BROKER_DB_POOL_MAX_SIZE
BACKDATE_SECONDS = 300
UNKNOWN_ID = "x" * infra.ID_WIDTH

REFERENCES = {
    "constant": "bench.references.constant:app",
    "asyncpg_touch": "bench.references.asyncpg_touch:app",
    "redis_touch": "bench.references.redis_touch:app",
    "orm_touch": "bench.references.orm_touch:app",
    "asyncpg_create": "bench.references.asyncpg_create:app",
}

CO_NOTE = (
    "latency percentiles are wrk's, which are corrected for coordinated omission "
    "(synthetic samples added for responses slower than the mean request interval)"
)


@dataclass
class Ctx:
    args: argparse.Namespace
    children: Children
    pg: Postgres
    redis: Redis
    broker: str | None
    broker_help: str
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    ids: list[str] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    round: int = 0
    summary: list[dict[str, Any]] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return float(self.args.duration)

    @property
    def warmup(self) -> float:
        return 1.0 if self.args.quick else 2.0


def log(msg: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {msg}", flush=True)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


# ----------------------------------------------------------------------------------------------
# servers
# ----------------------------------------------------------------------------------------------


def server_env(ctx: Ctx, target: str, service_env: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SESSION_BROKER_", "BENCH_"))}
    env["PYTHONPATH"] = str(infra.REPO_DIR)
    if target == "service":
        env.update(
            {
                "SESSION_BROKER_DATABASE_URL": ctx.pg.url,
                "SESSION_BROKER_API_KEYS": f"{TENANT}={ctx.token}",
                "SESSION_BROKER_WORKERS": str(WORKERS),
                "SESSION_BROKER_AUTO_MIGRATE": "false",
                "SESSION_BROKER_MAX_SESSIONS_PER_TENANT": "1000000000",
                "SESSION_BROKER_MAX_SESSIONS_PER_CLIENT": "1000000000",
                "SESSION_BROKER_MAX_SESSIONS_PER_PRINCIPAL": "1000000000",
            }
        )
        for item in ctx.args.service_env:
            key, _, value = item.partition("=")
            env[key] = value
        env.update(service_env)
    else:
        env.update(
            {
                "BENCH_DATABASE_URL": ctx.pg.url,
                "BENCH_REDIS_URL": ctx.redis.url,
                "BENCH_REDIS_PREFIX": ctx.redis.prefix,
                "BENCH_TENANT": TENANT,
                "BENCH_POOL_SIZE": str(POOL_SIZE),
            }
        )
    return env


def server_argv(ctx: Ctx, target: str, port: int) -> list[str]:
    if target == "service":
        assert ctx.broker is not None
        return [ctx.broker, "serve", "--host", "127.0.0.1", "--port", str(port)]
    return [
        sys.executable,
        "-m",
        "uvicorn",
        REFERENCES[target],
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(WORKERS),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--log-level",
        "warning",
    ]


def probe_for(
    target: str, kind: str, token: str | None, known_id: str | None
) -> list[tuple[str, str, str | None, bytes | None, str]]:
    """Contract checks made before measuring: (method, path, token, body, expectation)."""
    if kind == "create":
        return [("POST", "/v1/sessions", token, b"{}", "2xx")]
    # `constant` answers every id (it is the HTTP ceiling), so it gets no 404 check
    checks: list[tuple[str, str, str | None, bytes | None, str]] = []
    if target != "constant":
        checks.append(("POST", f"/v1/sessions/{UNKNOWN_ID}/touch", token, None, "404"))
    if known_id is not None:
        checks.insert(0, ("POST", f"/v1/sessions/{known_id}/touch", token, None, "2xx"))
    return checks


def measure(
    ctx: Ctx,
    scenario: str,
    target: str,
    *,
    kind: str = "touch",
    ids_file: Path | None = None,
    service_env: dict[str, str] | None = None,
    label: str | None = None,
    during: Any = None,
    keep_running: Any = None,
) -> dict[str, Any]:
    """Start one server, check the contract, warm it up, measure it with wrk, stop it.

    `during(port)` runs in a thread while wrk measures (scenario d); `keep_running(...)` runs after the
    first measurement with the server still up and returns extra rows (scenario d baseline + purge).
    """
    label = label or target
    row: dict[str, Any] = {"scenario": scenario, "target": label, "round": ctx.round}
    if target == "service" and ctx.broker is None:
        row["status"] = "service not available (no session-broker executable)"
        ctx.rows.append(row)
        log(f"({scenario}) {label}: skipped, {row['status']}")
        return row
    token = ctx.token if target == "service" else None
    wrk_token = token or "-"
    if kind == "create":
        script, path, script_args = "create.lua", "/v1/sessions", [wrk_token]
    else:
        assert ids_file is not None
        script, path, script_args = "touch.lua", "/", [str(ids_file), wrk_token]
    known_id = None
    if ids_file is not None:
        with open(ids_file, encoding="ascii") as fh:
            known_id = fh.readline().strip()

    stats_before = run(infra.table_stats(ctx.pg.url, wait_for_clients=True))
    port = infra.free_port()
    env = server_env(ctx, target, service_env or {})
    log_path = infra.WORK_DIR / "logs" / f"{scenario}-{label}.log"
    child = ctx.children.start(label, server_argv(ctx, target, port), env, log_path)
    try:
        checks = probe_for(target, kind, token, known_id)
        infra.wait_ready(child, port, checks[-1][:4])
        contract: dict[str, Any] = {}
        for method, cpath, ctoken, body, expect in checks:
            status, _ = infra.http_status(port, method, cpath, ctoken, body)
            ok = 200 <= status < 300 if expect == "2xx" else str(status) == expect
            contract[
                f"{method} {cpath.replace(UNKNOWN_ID, '<unknown>').replace(known_id or '~', '<known>')}"
            ] = {
                "status": status,
                "expected": expect,
                "ok": ok,
            }
            if not ok:
                log(f"  WARNING {label}: {method} {cpath[:40]}... answered {status}, expected {expect}")
        row["contract"] = contract

        argv = infra.wrk_argv(port, path, script, ctx.warmup, script_args)
        infra.run_wrk(argv)  # warm-up, discarded
        store_pid = ctx.redis.server_pid() if target == "redis_touch" else ctx.pg.postmaster_pid
        rows = [
            _measured(
                ctx,
                row,
                child,
                store_pid,
                argv_for=lambda d: infra.wrk_argv(port, path, script, d, script_args),
                during=(lambda: during(port)) if during else None,
            )
        ]
        if keep_running is not None:
            rows.extend(
                keep_running(
                    port, child, store_pid, lambda d: infra.wrk_argv(port, path, script, d, script_args)
                )
            )
    except BenchError as error:
        row["status"] = f"failed: {str(error).splitlines()[0][:120]} (log: {log_path})"
        row["error"] = str(error)
        ctx.rows.append(row)
        log(f"({scenario}) {label}: {row['status']}")
        return row
    finally:
        ctx.children.stop(child)
    stats_after = run(infra.table_stats(ctx.pg.url, wait_for_clients=True))
    delta = {
        k: stats_after.get(k, 0) - stats_before.get(k, 0)
        for k in ("n_tup_ins", "n_tup_upd", "n_tup_hot_upd", "n_tup_del")
    }
    row["table_delta"] = delta  # whole server lifetime: contract checks + warm-up + measurement
    row["wal_delta"] = {
        k: stats_after.get(k, 0) - stats_before.get(k, 0)
        for k in ("wal_records", "wal_fpi", "wal_bytes", "checkpoints", "autovacuums")
    }
    row["hot_ratio"] = round(delta["n_tup_hot_upd"] / delta["n_tup_upd"], 4) if delta["n_tup_upd"] else None
    for r in rows:
        ctx.rows.append(r)
        log(
            f"({r['scenario']}) {r['target']}: {r['rps']:.0f} req/s, p50 {r['p50_ms']:.2f} ms, "
            f"p99 {r['p99_ms']:.2f} ms, errors {r['errors']}, app {r.get('app_cpu_us_per_req')} us/req, "
            f"db {r.get('db_cpu_us_per_req')} us/req, rss {r.get('rss_mb')} MB"
        )
    wal = row["wal_delta"]
    log(
        f"  server lifetime: {delta['n_tup_upd']:,} updates, WAL {wal['wal_bytes'] / 2**20:.1f} MB in "
        f"{wal['wal_records']:,} records, {wal['wal_fpi']:,} full-page images, "
        f"{wal['checkpoints']} checkpoint(s), {wal['autovacuums']} autovacuum/analyze run(s)"
    )
    return row


def _measured(
    ctx: Ctx,
    row: dict[str, Any],
    child: infra.Child,
    store_pid: int | None,
    argv_for: Any,
    during: Any = None,
    duration: float | None = None,
) -> dict[str, Any]:
    duration = duration or ctx.duration
    app0 = infra.sample_tree(child.pid)
    pg0 = infra.sample_tree(store_pid)
    busy0 = infra.cpu_busy()
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    extra: dict[str, Any] = {}
    if during is not None:
        holder: dict[str, Any] = {}

        def call_during() -> None:
            try:
                holder.update(during())
            except Exception as error:  # reported in the row, never swallowed
                holder["during_error"] = repr(error)

        thread = threading.Thread(target=call_during, daemon=True)
        thread.start()
        # keep the load on for as long as the concurrent work runs: back-to-back wrk windows
        windows = [infra.run_wrk(argv_for(duration))]
        while thread.is_alive() and len(windows) < 100:
            windows.append(infra.run_wrk(argv_for(duration)))
        thread.join(timeout=600)
        result = merge_wrk(windows)
        extra = holder
    else:
        result = infra.run_wrk(argv_for(duration))
    wall = time.perf_counter() - t0
    busy1 = infra.cpu_busy()
    app1 = infra.sample_tree(child.pid)
    pg1 = infra.sample_tree(store_pid)
    requests = max(1, result["requests"])
    row.update(
        {
            "rps": round(result["rps"], 1),
            "p50_ms": result["latency_us"]["p50"] / 1000,
            "p99_ms": result["latency_us"]["p99"] / 1000,
            "errors": result["errors"],
            "wrk": result,
            "wall_s": round(wall, 2),
        }
    )
    if app0 and app1:
        row["app_cpu_us_per_req"] = round(
            (app1.cpu_ticks - app0.cpu_ticks) / infra.CLK_TCK / requests * 1e6, 1
        )
        row["app_cpu_cores"] = round((app1.cpu_ticks - app0.cpu_ticks) / infra.CLK_TCK / wall, 2)
        row["rss_mb"] = round(app1.rss_bytes / 2**20, 1)
        row["processes"] = app1.processes
    if pg0 and pg1:
        row["db_cpu_us_per_req"] = round((pg1.cpu_ticks - pg0.cpu_ticks) / infra.CLK_TCK / requests * 1e6, 1)
        row["db_cpu_cores"] = round((pg1.cpu_ticks - pg0.cpu_ticks) / infra.CLK_TCK / wall, 2)
    row["wrk_cpu_cores"] = round(result.get("wrk_cpu_s", 0) / wall, 2)
    per_req_s = (
        (row.get("app_cpu_us_per_req") or 0) + (row.get("db_cpu_us_per_req") or 0)
    ) / 1e6 + result.get("wrk_cpu_s", 0) / requests
    # noise-robust capacity estimate: all cores busy with this server, its store and wrk only
    row["est_rps"] = round((os.cpu_count() or 1) / per_req_s, 1) if per_req_s > 0 else None
    ncpu = os.cpu_count() or 1
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


def between_runs(ctx: Ctx) -> None:
    """Same starting state for every server: no dead tuples, no dirty buffers left by the previous one."""
    run(infra.vacuum(ctx.pg.url))


# ----------------------------------------------------------------------------------------------
# scenarios
# ----------------------------------------------------------------------------------------------


def scenario_e_small(ctx: Ctx) -> None:
    log(f"(e) size: service with {len(ctx.ids[:SMALL_SET]):,} sessions")
    between_runs(ctx)
    row = measure(
        ctx,
        "e",
        "service",
        ids_file=ctx.files["small"],
        label="service@10k",
        service_env={"SESSION_BROKER_TOUCH_GRANULARITY_SECONDS": "0"},
    )
    row["sessions"] = min(SMALL_SET, len(ctx.ids))


def scenario_e_large(ctx: Ctx) -> None:
    log(f"(e) size: service with {len(ctx.ids):,} sessions")
    between_runs(ctx)
    row = measure(
        ctx,
        "e",
        "service",
        ids_file=ctx.files["all"],
        label=f"service@{_short(len(ctx.ids))}" if len(ctx.ids) > SMALL_SET else "service@all",
        service_env={"SESSION_BROKER_TOUCH_GRANULARITY_SECONDS": "0"},
    )
    row["sessions"] = len(ctx.ids)


def scenario_a(ctx: Ctx) -> None:
    log("(a) write path: every touch writes, ids uniform over all sessions")
    for target, env in (
        ("service", {"SESSION_BROKER_TOUCH_GRANULARITY_SECONDS": "0"}),
        ("asyncpg_touch", {}),
        ("orm_touch", {}),
    ):
        between_runs(ctx)
        measure(ctx, "a", target, ids_file=ctx.files["all"], service_env=env)


def scenario_b(ctx: Ctx) -> None:
    log(f"(b) realistic: default touch granularity, hot working set of {HOT_SET} ids")
    if ctx.redis.loaded == 0:
        if ctx.redis.available():
            ctx.redis.clear()
            secs = ctx.redis.load(TENANT, ctx.ids)
            ctx.extra["redis_load_s"] = round(secs, 2)
            log(f"  loaded {len(ctx.ids):,} keys into Redis in {secs:.1f} s")
        else:
            ctx.notes.append(f"Redis at {ctx.redis.url} not reachable: redis_touch skipped")
    hot = ctx.ids[:HOT_SET]
    between_runs(ctx)
    # Move the hot set's expiry back past the granularity, so each hot session's first touch in the window
    # writes once and the rest are throttled reads (a steady-state minute), instead of 100 % reads.
    run(infra.backdate(ctx.pg.url, TENANT, hot, BACKDATE_SECONDS))
    measure(ctx, "b", "service", ids_file=ctx.files["hot"])
    if ctx.redis.loaded:
        measure(ctx, "b", "redis_touch", ids_file=ctx.files["hot"])
    measure(ctx, "b", "constant", ids_file=ctx.files["hot"])


def scenario_c(ctx: Ctx) -> None:
    log("(c) create: POST /v1/sessions with body {}")
    for target in ("service", "asyncpg_create"):
        between_runs(ctx)
        measure(ctx, "c", target, kind="create")


def scenario_d(ctx: Ctx) -> None:
    log(f"(d) touch during a purge of {EXPIRED_ROWS:,} expired rows")
    custom = ctx.args.purge_command
    if ctx.broker is None or (custom is None and not infra.has_subcommand(ctx.broker_help, "purge")):
        row = {
            "scenario": "d",
            "target": "service",
            "status": "not yet available (no `session-broker purge`)",
        }
        ctx.rows.append(row)
        log(f"  {row['status']}")
        return
    between_runs(ctx)
    env = {"SESSION_BROKER_TOUCH_GRANULARITY_SECONDS": "0", "SESSION_BROKER_PURGE_ENABLED": "false"}
    purge_env = {**server_env(ctx, "service", env)}

    def purge(_port: int) -> dict[str, Any]:
        return purge_once(min(1.0, ctx.duration / 4))

    def purge_once(delay: float, extra_env: dict[str, str] | None = None) -> dict[str, Any]:
        time.sleep(delay)
        t0 = time.perf_counter()
        done = subprocess.run(
            custom if custom is not None else [str(ctx.broker), "purge"],
            shell=custom is not None,
            env={**purge_env, **(extra_env or {})},
            cwd=infra.REPO_DIR,
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )
        took = time.perf_counter() - t0
        return {
            "purge_exit": done.returncode,
            "purge_s": round(took, 3),
            "purge_output": (done.stdout + done.stderr).strip()[-2000:],
        }

    def then(port: int, child: infra.Child, store_pid: int | None, argv_for: Any) -> list[dict[str, Any]]:
        # first the purge alone (service idle) and unpaced, to tell its own speed from the cost of contention;
        # under load it then runs with the service's default pacing (SESSION_BROKER_PURGE_MAX_ROWS_PER_SECOND)
        run(
            infra.load_sessions(
                ctx.pg.url, TENANT, [secrets.token_urlsafe(32) for _ in range(EXPIRED_ROWS)], expired=True
            )
        )
        before = run(infra.count_purgeable(ctx.pg.url))
        alone = purge_once(0.0, {"SESSION_BROKER_PURGE_MAX_ROWS_PER_SECOND": "0"})
        left = run(infra.count_purgeable(ctx.pg.url))
        reported = _purge_report(alone.get("purge_output", ""))
        seconds = (reported or {}).get("seconds") or alone.get("purge_s")
        ctx.extra.setdefault("purge_alone", []).append(
            {
                **alone,
                "purged_rows": before - left,
                "purgeable_before": before,
                "reported": reported,
                "rows_per_s": round((before - left) / seconds, 1) if seconds else None,
            }
        )
        log(f"  purge alone (no load, unpaced): {before - left:,} rows in {seconds} s")
        secs = run(
            infra.load_sessions(
                ctx.pg.url, TENANT, [secrets.token_urlsafe(32) for _ in range(EXPIRED_ROWS)], expired=True
            )
        )
        before = run(infra.count_purgeable(ctx.pg.url))
        log(f"  inserted {EXPIRED_ROWS:,} expired rows in {secs:.1f} s; measuring touch while purging")
        row: dict[str, Any] = {"scenario": "d", "target": "service+purge", "round": ctx.round}
        _measured(
            ctx, row, child, store_pid, argv_for, during=lambda: purge(port), duration=max(ctx.duration, 5.0)
        )
        after = run(infra.count_purgeable(ctx.pg.url))
        row["purged_rows"] = before - after
        row["purgeable_before"] = before
        row["purge_left_rows"] = after
        reported = _purge_report(row.get("purge_output", ""))
        if reported:
            row["purge_reported"] = reported
        # the purge's own timing when it prints one (excludes its start-up), else the command's wall time
        seconds = (reported or {}).get("seconds") or row.get("purge_s")
        if seconds:
            row["purge_rows_per_s"] = round(row["purged_rows"] / seconds, 1)
            row["purge_rate_basis"] = "reported seconds" if (reported or {}).get("seconds") else "wall time"
        if after:
            ctx.notes.append(f"(d) the purge left {after:,} of {before:,} expired rows (time budget?)")
        return [row]

    measure(
        ctx, "d", "service", ids_file=ctx.files["all"], service_env=env, label="service", keep_running=then
    )


def _purge_report(output: str) -> dict[str, Any] | None:
    """The JSON summary `session-broker purge` prints ({"deleted": {...}, "seconds": ...}), if any."""
    for line in reversed(output.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if isinstance(data, dict) and "deleted" in data:
                return data
    return None


def _short(n: int) -> str:
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1000 and n % 1000 == 0:
        return f"{n // 1000}k"
    return str(n)


# ----------------------------------------------------------------------------------------------
# targets and table
# ----------------------------------------------------------------------------------------------


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (scenario, target): with --repeat, the round with the median req/s (lower median)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
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


def _find(ctx: Ctx, scenario: str, target: str) -> dict[str, Any] | None:
    for row in ctx.summary:
        if row["scenario"] == scenario and row["target"] == target and "rps" in row:
            return row
    return None


def _ratio(num: float | None, den: float | None) -> float | None:
    if num is None or den in (None, 0):
        return None
    return num / den


def targets(ctx: Ctx) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def check(
        scenario: str,
        name: str,
        value: float | None,
        op: str,
        limit: float,
        unit: str = "x",
        est: float | None = None,
    ) -> None:
        if value is None:
            verdict = "n/a"
        elif op == ">=":
            verdict = "PASS" if value >= limit else "MISS"
        else:
            verdict = "PASS" if value <= limit else "MISS"
        out.append(
            {
                "scenario": scenario,
                "target": name,
                "value": None if value is None else round(value, 3),
                "op": op,
                "limit": limit,
                "unit": unit,
                "verdict": verdict,
                "cpu_estimate_value": None if est is None else round(est, 3),
            }
        )

    def get(scenario: str, target: str, key: str) -> float | None:
        row = _find(ctx, scenario, target)
        value = None if row is None else row.get(key)
        return None if value is None else float(value)

    scen = set(ctx.args.scenarios)
    if "a" in scen:
        check(
            "a",
            "service rps / asyncpg_touch rps",
            _ratio(get("a", "service", "rps"), get("a", "asyncpg_touch", "rps")),
            ">=",
            1.0,
            est=_ratio(get("a", "service", "est_rps"), get("a", "asyncpg_touch", "est_rps")),
        )
        check(
            "a",
            "service rps / orm_touch rps",
            _ratio(get("a", "service", "rps"), get("a", "orm_touch", "rps")),
            ">=",
            4.0,
            est=_ratio(get("a", "service", "est_rps"), get("a", "orm_touch", "est_rps")),
        )
        check(
            "a",
            "service p99 / asyncpg_touch p99",
            _ratio(get("a", "service", "p99_ms"), get("a", "asyncpg_touch", "p99_ms")),
            "<=",
            1.5,
        )
    if "b" in scen:
        check(
            "b",
            "service rps / redis_touch rps",
            _ratio(get("b", "service", "rps"), get("b", "redis_touch", "rps")),
            ">=",
            1.0,
            est=_ratio(get("b", "service", "est_rps"), get("b", "redis_touch", "est_rps")),
        )
        check(
            "b",
            "service rps / constant rps",
            _ratio(get("b", "service", "rps"), get("b", "constant", "rps")),
            ">=",
            0.5,
            est=_ratio(get("b", "service", "est_rps"), get("b", "constant", "est_rps")),
        )
        row = _find(ctx, "b", "service")
        check(
            "b",
            "sessions HOT ratio n_tup_hot_upd/n_tup_upd (service, b)",
            row.get("hot_ratio") if row else None,
            ">=",
            0.9,
            "",
        )
    if "c" in scen:
        check(
            "c",
            "service create rps / asyncpg_create rps",
            _ratio(get("c", "service", "rps"), get("c", "asyncpg_create", "rps")),
            ">=",
            0.8,
            est=_ratio(get("c", "service", "est_rps"), get("c", "asyncpg_create", "est_rps")),
        )
    if "d" in scen:
        check(
            "d",
            "p99 during purge / p99 without",
            _ratio(get("d", "service+purge", "p99_ms"), get("d", "service", "p99_ms")),
            "<=",
            1.5,
        )
        check(
            "d",
            "purge rows/s (rows removed / purge's own seconds, else its wall time)",
            get("d", "service+purge", "purge_rows_per_s"),
            ">=",
            20000,
            " rows/s",
        )
    if "e" in scen:
        small = next(
            (r for r in ctx.summary if r["scenario"] == "e" and r["target"] == "service@10k" and "rps" in r),
            None,
        )
        large = next(
            (r for r in ctx.summary if r["scenario"] == "e" and r["target"] != "service@10k" and "rps" in r),
            None,
        )
        check(
            "e",
            "p99 at N / p99 at 10k",
            _ratio(large["p99_ms"] if large else None, small["p99_ms"] if small else None),
            "<=",
            1.2,
        )
        rss = _ratio(large.get("rss_mb") if large else None, small.get("rss_mb") if small else None)
        check("e", "|RSS at N / RSS at 10k - 1|", None if rss is None else abs(rss - 1), "<=", 0.10, "")
    return out


def render(ctx: Ctx, checks: list[dict[str, Any]]) -> str:
    head = [
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
    lines = []
    for row in ctx.summary:
        if "rps" not in row:
            lines.append([row["scenario"], row["target"], row.get("status", "-")] + [""] * (len(head) - 3))
            continue
        delta = row.get("table_delta") or {}
        hot = row.get("hot_ratio")
        lines.append(
            [
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
        )
    measured = [line for line in lines if line[3] != ""]
    widths = [max([len(h)] + [len(str(line[i])) for line in measured]) for i, h in enumerate(head)]
    out = []

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

    out.append(fmt_line(head))
    out.append("  ".join("-" * w for w in widths))
    out.extend(fmt_line(line) for line in lines)
    out.append("")
    out.append("Targets:")
    for c in checks:
        value = (
            "n/a"
            if c["value"] is None
            else (f"{c['value']:.3f}{c['unit']}" if c["unit"] != " rows/s" else f"{c['value']:,.0f} rows/s")
        )
        limit = f"{c['limit']}{c['unit']}" if c["unit"] != " rows/s" else f"{c['limit']:,} rows/s"
        est = (
            ""
            if c.get("cpu_estimate_value") is None
            else f"  [CPU-bound estimate {c['cpu_estimate_value']:.3f}x]"
        )
        out.append(
            f"  ({c['scenario']}) {c['target']}: {value}  (target {c['op']} {limit})  {c['verdict']}{est}"
        )
    out.append("")
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


def _fmt(value: Any) -> str:
    return (
        "" if value is None else f"{value:.0f}" if isinstance(value, float) and value >= 100 else str(value)
    )


# ----------------------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=None, help="sessions to load (default 1,000,000)")
    parser.add_argument("--duration", type=float, default=None, help="seconds of wrk per target (default 10)")
    parser.add_argument("--scenarios", default="a,b,c,d,e", help="comma list of a,b,c,d,e (default all)")
    parser.add_argument("--quick", action="store_true", help="20,000 sessions, 3 s per target")
    parser.add_argument(
        "--database-url",
        default=None,
        help="use this PostgreSQL instead of the embedded one (its sessions tables are TRUNCATED)",
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--output", default=None, help="JSON result path (default bench/results/<date>.json)")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="measure every target this many times, round-robin within a scenario; the table shows the round "
        "with the median req/s (use 3 on a shared machine)",
    )
    parser.add_argument(
        "--purge-command",
        default=None,
        help="shell command run as the purge in (d) instead of `session-broker purge` "
        "(gets SESSION_BROKER_DATABASE_URL in its environment)",
    )
    parser.add_argument(
        "--service-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the service (repeatable)",
    )
    args = parser.parse_args(argv)
    if args.sessions is None:
        args.sessions = 20_000 if args.quick else 1_000_000
    if args.duration is None:
        args.duration = 3.0 if args.quick else 10.0
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = set(args.scenarios) - set("abcde")
    if unknown:
        parser.error(f"unknown scenarios: {','.join(sorted(unknown))}")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.sessions < HOT_SET:
        parser.error(f"--sessions must be at least {HOT_SET}")
    return args


def _sigterm(_signo: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if infra.wrk_available() is None:
        print("wrk not found: apt-get install wrk", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _sigterm)
    started = time.perf_counter()
    children = Children()
    pg = Postgres(args.database_url)
    redis = Redis(args.redis_url)
    broker = infra.which_broker()
    help_text = infra.broker_help(broker)
    if broker is not None and not help_text:
        log(f"{broker} --help failed: treating the service as not available")
        broker = None
    ctx = Ctx(args, children, pg, redis, broker, help_text)
    infra.WORK_DIR.mkdir(parents=True, exist_ok=True)
    try:
        log(f"loadavg before start: {os.getloadavg()}")
        ctx.extra["loadavg_start"] = os.getloadavg()
        pg.start()
        run(pg.configure_embedded())
        run(pg.recreate_database())
        run(pg.find_postmaster())
        how = infra.migrate(pg.url, broker)
        if how == "fallback":
            run(infra.fallback_schema(pg.url))
            ctx.notes.append("schema created by the bench's hand-written fallback (no working migration)")
        ctx.extra["schema"] = how
        run(infra.truncate(pg.url))
        log(f"database ready ({how}); postgres pid {pg.postmaster_pid}")

        t0 = time.perf_counter()
        ctx.ids = [secrets.token_urlsafe(32) for _ in range(args.sessions)]
        assert all(len(i) == infra.ID_WIDTH for i in ctx.ids[:10])
        ctx.files["all"] = infra.write_ids(infra.WORK_DIR / "ids_all.txt", ctx.ids)
        ctx.files["hot"] = infra.write_ids(infra.WORK_DIR / "ids_hot.txt", ctx.ids[:HOT_SET])
        ctx.files["small"] = infra.write_ids(infra.WORK_DIR / "ids_small.txt", ctx.ids[:SMALL_SET])
        ctx.extra["idgen_s"] = round(time.perf_counter() - t0, 2)

        scen = args.scenarios
        load_s = 0.0
        if "e" in scen:
            load_s += run(infra.load_sessions(pg.url, TENANT, ctx.ids[:SMALL_SET]))
            for rnd in range(args.repeat):
                ctx.round = rnd
                scenario_e_small(ctx)
            rest = ctx.ids[SMALL_SET:]
        else:
            rest = ctx.ids
        if rest:
            load_s += run(infra.load_sessions(pg.url, TENANT, rest))
        ctx.extra["load_s"] = round(load_s, 2)
        log(f"loaded {len(ctx.ids):,} sessions with COPY in {load_s:.1f} s")
        if "e" in scen:
            for rnd in range(args.repeat):
                ctx.round = rnd
                scenario_e_large(ctx)
        for name, fn in (("a", scenario_a), ("b", scenario_b), ("c", scenario_c), ("d", scenario_d)):
            if name in scen:
                for rnd in range(args.repeat):
                    ctx.round = rnd
                    fn(ctx)
    except KeyboardInterrupt:
        log("interrupted: stopping everything")
        ctx.notes.append("INTERRUPTED: partial results")
    except BenchError as error:
        log(f"error: {error}")
        ctx.notes.append(f"ERROR: {error}".splitlines()[0])
    finally:
        children.stop_all()
        if redis.loaded:
            removed = redis.clear()
            log(f"removed {removed:,} bench keys from Redis")
        with contextlib.suppress(Exception):
            ctx.extra["pg_settings"] = run(pg.settings()) if pg.url else {}
        pg.stop()

    ctx.summary = summarize(ctx.rows)
    checks = targets(ctx)
    table = render(ctx, checks)
    print()
    print(table)
    result = {
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
            "wrk": infra.tool_version(["wrk", "-v"]),
        },
        "service": {"available": broker is not None, "git_head": _git_head(), "git_dirty": _git_dirty()},
        "latency_note": CO_NOTE,
        "repeat": args.repeat,
        "summary": ctx.summary,
        "rows": ctx.rows,
        "targets": checks,
        "notes": ctx.notes,
        **ctx.extra,
    }
    out = (
        Path(args.output)
        if args.output
        else infra.BENCH_DIR / "results" / f"{datetime.now():%Y-%m-%dT%H%M%S}.json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"\nwritten {out} in {result['elapsed_s']:.0f} s")
    return 1 if any("ERROR" in n or "INTERRUPTED" in n for n in ctx.notes) else 0


def _git_dirty() -> bool | None:
    """True when tracked files differ from HEAD: the result then does not describe that commit alone."""
    try:
        done = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=infra.REPO_DIR,
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:
        return None
    return bool(done.stdout.strip()) if done.returncode == 0 else None


def _git_head() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=infra.REPO_DIR,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        return ""
