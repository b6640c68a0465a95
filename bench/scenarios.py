"""The five scenarios: which servers each one measures, in which database state, under which load.

See bench/README.md ("What runs", "Scenarios") for what each one stands for. Every server starts from the
same database state (`between_runs`), and a scenario run with `--repeat` measures its servers round-robin.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from collections.abc import Callable
from typing import Any

from bench.context import (
    BACKDATE_SECONDS,
    EXPIRED_ROWS,
    HOT_SET,
    SMALL_SET,
    TENANT,
    BenchContext,
    log,
    run,
)
from bench.measure import RunningServer, measure, measure_window
from bench.paths import REPO_DIR
from bench.postgres import backdate, count_purgeable, load_sessions, vacuum
from bench.servers import SERVICE, has_subcommand, server_env
from bench.targets import AT_10K, Row, count_label

EVERY_TOUCH_WRITES = {"SESSION_BROKER_TOUCH_GRANULARITY_SECONDS": "0"}
# The purge with neither of its paces (rows per second, share of time busy): its own speed.
FLAT_OUT = {"SESSION_BROKER_PURGE_MAX_ROWS_PER_SECOND": "0", "SESSION_BROKER_PURGE_MAX_BUSY_FRACTION": "1"}


def between_runs(ctx: BenchContext) -> None:
    """Same starting state for every server: no dead tuples, no dirty buffers left by the previous one."""
    run(vacuum(ctx.pg.url))


def scenario_e_small(ctx: BenchContext) -> None:
    log(f"(e) size: service with {len(ctx.ids[:SMALL_SET]):,} sessions")
    between_runs(ctx)
    row = measure(
        ctx, "e", SERVICE, ids_file=ctx.files["small"], label=AT_10K, service_env=EVERY_TOUCH_WRITES
    )
    row["sessions"] = min(SMALL_SET, len(ctx.ids))


def scenario_e_large(ctx: BenchContext) -> None:
    log(f"(e) size: service with {len(ctx.ids):,} sessions")
    between_runs(ctx)
    row = measure(
        ctx,
        "e",
        SERVICE,
        ids_file=ctx.files["all"],
        label=f"service@{count_label(len(ctx.ids))}" if len(ctx.ids) > SMALL_SET else "service@all",
        service_env=EVERY_TOUCH_WRITES,
    )
    row["sessions"] = len(ctx.ids)


def scenario_a(ctx: BenchContext) -> None:
    log("(a) write path: every touch writes, ids uniform over all sessions")
    for target, env in ((SERVICE, EVERY_TOUCH_WRITES), ("asyncpg_touch", {}), ("orm_touch", {})):
        between_runs(ctx)
        measure(ctx, "a", target, ids_file=ctx.files["all"], service_env=env)


def scenario_b(ctx: BenchContext) -> None:
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
    run(backdate(ctx.pg.url, TENANT, hot, BACKDATE_SECONDS))
    measure(ctx, "b", SERVICE, ids_file=ctx.files["hot"])
    if ctx.redis.loaded:
        measure(ctx, "b", "redis_touch", ids_file=ctx.files["hot"])
    measure(ctx, "b", "constant", ids_file=ctx.files["hot"])


def scenario_c(ctx: BenchContext) -> None:
    log("(c) create: POST /v1/sessions with body {}")
    for target in (SERVICE, "asyncpg_create"):
        between_runs(ctx)
        measure(ctx, "c", target, kind="create")


def scenario_d(ctx: BenchContext) -> None:
    log(f"(d) touch during a purge of {EXPIRED_ROWS:,} expired rows")
    custom = ctx.args.purge_command
    if ctx.broker is None or (custom is None and not has_subcommand(ctx.broker_help, "purge")):
        row = {"scenario": "d", "target": SERVICE, "status": "not yet available (no `session-broker purge`)"}
        ctx.rows.append(row)
        log(f"  {row['status']}")
        return
    between_runs(ctx)
    # the service's own background purge is off: the only purge is the one this scenario starts
    env = {**EVERY_TOUCH_WRITES, "SESSION_BROKER_PURGE_ENABLED": "false"}
    purge = Purge(ctx, custom, server_env(ctx, SERVICE, env))

    def then(server: RunningServer) -> list[Row]:
        # first the purge alone (service idle) and unpaced, to tell its own speed from the cost of contention;
        # under load it then runs with the service's default pacing (SESSION_BROKER_PURGE_MAX_ROWS_PER_SECOND)
        load_expired(ctx)
        before = run(count_purgeable(ctx.pg.url))
        alone = purge.once(0.0, FLAT_OUT)
        left = run(count_purgeable(ctx.pg.url))
        reported = purge_report(alone.get("purge_output", ""))
        seconds = _purge_seconds(alone, reported)
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
        secs = load_expired(ctx)
        # The baseline was measured on a vacuumed, checkpointed database; so is this. Otherwise the window
        # would also hold what the bench itself left behind: the autovacuum and dirty buffers of this COPY
        # and of the purge alone. (The autovacuum this purge's own deletes call for stays in the window.)
        run(vacuum(ctx.pg.url, ("sessions", "session_tombstones", "session_events")))
        before = run(count_purgeable(ctx.pg.url))
        log(f"  inserted {EXPIRED_ROWS:,} expired rows in {secs:.1f} s; measuring touch while purging")
        row: Row = {"scenario": "d", "target": "service+purge", "round": ctx.round}
        under_load = purge.starting_after(min(1.0, ctx.duration / 4))
        measure_window(ctx, row, server, during=under_load, duration=max(ctx.duration, 5.0))
        after = run(count_purgeable(ctx.pg.url))
        row["purged_rows"] = before - after
        row["purgeable_before"] = before
        row["purge_left_rows"] = after
        reported = purge_report(row.get("purge_output", ""))
        if reported:
            row["purge_reported"] = reported
        seconds = _purge_seconds(row, reported)
        if seconds:
            row["purge_rows_per_s"] = round(row["purged_rows"] / seconds, 1)
            row["purge_rate_basis"] = "reported seconds" if (reported or {}).get("seconds") else "wall time"
        if after:
            ctx.notes.append(f"(d) the purge left {after:,} of {before:,} expired rows (time budget?)")
        return [row]

    measure(ctx, "d", SERVICE, ids_file=ctx.files["all"], service_env=env, label=SERVICE, keep_running=then)


class Purge:
    """Scenario (d)'s purge: `session-broker purge` (or `--purge-command`) run once, to completion."""

    def __init__(self, ctx: BenchContext, custom: str | None, env: dict[str, str]) -> None:
        self.argv: str | list[str] = custom if custom is not None else [str(ctx.broker), "purge"]
        self.shell = custom is not None
        self.env = env

    def once(self, delay: float, extra_env: dict[str, str] | None = None) -> dict[str, Any]:
        time.sleep(delay)
        t0 = time.perf_counter()
        done = subprocess.run(
            self.argv,
            shell=self.shell,
            env={**self.env, **(extra_env or {})},
            cwd=REPO_DIR,
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

    def starting_after(self, delay: float) -> Callable[[], dict[str, Any]]:
        """The purge as work to run under load: it starts `delay` seconds into the first wrk window."""
        return lambda: self.once(delay)


def load_expired(ctx: BenchContext) -> float:
    """Insert `EXPIRED_ROWS` sessions past their purge time; returns the seconds the COPY took."""
    ids = [secrets.token_urlsafe(32) for _ in range(EXPIRED_ROWS)]
    return run(load_sessions(ctx.pg.url, TENANT, ids, expired=True))


def purge_report(output: str) -> dict[str, Any] | None:
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


def _purge_seconds(outcome: dict[str, Any], reported: dict[str, Any] | None) -> float | None:
    """The purge's own timing when it prints one (excludes its start-up), else the command's wall time."""
    seconds = (reported or {}).get("seconds") or outcome.get("purge_s")
    return None if seconds is None else float(seconds)


# Scenario (e) is not here: `bench.cli` interleaves its two halves with the loading of the sessions.
SCENARIOS: dict[str, Callable[[BenchContext], None]] = {
    "a": scenario_a,
    "b": scenario_b,
    "c": scenario_c,
    "d": scenario_d,
}
