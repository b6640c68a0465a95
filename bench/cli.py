"""`python -m bench`: load sessions, run the service and the reference peers one at a time under wrk,
print one table with throughput, latency, errors and the target ratios, and save it as JSON.

See bench/README.md for what each scenario measures and how to read the output.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from bench import report
from bench.context import HOT_SET, ID_WIDTH, SMALL_SET, TENANT, BenchContext, log, run
from bench.errors import ERROR_NOTE, INTERRUPTED_NOTE, BenchError, cut_short
from bench.paths import WORK_DIR
from bench.postgres import Postgres, load_sessions, migrate, truncate
from bench.processes import Children
from bench.redis_store import Redis
from bench.scenarios import SCENARIOS, scenario_e_large, scenario_e_small
from bench.servers import broker_help, which_broker
from bench.targets import ALL_SCENARIOS, evaluate
from bench.wrk import wrk_available


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=(__doc__ or "").split("\n\n")[0])
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
    unknown = set(args.scenarios) - set(ALL_SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {','.join(sorted(unknown))}")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.sessions < HOT_SET:
        parser.error(f"--sessions must be at least {HOT_SET}")
    return args


def _sigterm(_signo: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if wrk_available() is None:
        print("wrk not found: apt-get install wrk", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _sigterm)
    started = time.perf_counter()
    children = Children()
    pg = Postgres(args.database_url)
    redis = Redis(args.redis_url)
    broker = which_broker()
    help_text = broker_help(broker)
    if broker is not None and not help_text:
        log(f"{broker} --help failed: treating the service as not available")
        broker = None
    ctx = BenchContext(args, children, pg, redis, broker, help_text)
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    try:
        log(f"loadavg before start: {os.getloadavg()}")
        ctx.extra["loadavg_start"] = os.getloadavg()
        _prepare_database(ctx)
        _write_id_files(ctx)
        _run_scenarios(ctx)
    except KeyboardInterrupt:
        log("interrupted: stopping everything")
        ctx.notes.append(f"{INTERRUPTED_NOTE}: partial results")
    except BenchError as error:
        log(f"error: {error}")
        ctx.notes.append(f"{ERROR_NOTE}: {error}".splitlines()[0])
    finally:
        children.stop_all()
        if redis.loaded:
            removed = redis.clear()
            log(f"removed {removed:,} bench keys from Redis")
        with contextlib.suppress(Exception):
            ctx.extra["pg_settings"] = run(pg.settings()) if pg.url else {}
        pg.stop()

    ctx.summary = report.summarize(ctx.rows)
    checks = evaluate(ctx.summary, args.scenarios)
    print()
    print(report.render(ctx, checks))
    result = report.result(ctx, checks, started)
    out = report.write_result(result, args.output)
    print(f"\nwritten {out} in {result['elapsed_s']:.0f} s")
    return 1 if cut_short(ctx.notes) else 0


def _prepare_database(ctx: BenchContext) -> None:
    """A fresh `bench` database (embedded) or emptied tables (external), at the service's schema."""
    pg = ctx.pg
    pg.start()
    run(pg.configure_embedded())
    run(pg.recreate_database())
    run(pg.find_postmaster())
    how = migrate(pg.url)
    ctx.extra["schema"] = how
    run(truncate(pg.url))
    log(f"database ready ({how}); postgres pid {pg.postmaster_pid}")


def _write_id_files(ctx: BenchContext) -> None:
    """The session ids, and the files wrk's touch script draws them from (all, the hot set, the 10k set)."""
    t0 = time.perf_counter()
    ctx.ids = [secrets.token_urlsafe(32) for _ in range(ctx.args.sessions)]
    assert all(len(i) == ID_WIDTH for i in ctx.ids[:10])
    ctx.files["all"] = _write_ids(WORK_DIR / "ids_all.txt", ctx.ids)
    ctx.files["hot"] = _write_ids(WORK_DIR / "ids_hot.txt", ctx.ids[:HOT_SET])
    ctx.files["small"] = _write_ids(WORK_DIR / "ids_small.txt", ctx.ids[:SMALL_SET])
    ctx.extra["idgen_s"] = round(time.perf_counter() - t0, 2)


def _write_ids(path: Path, ids: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="ascii") as fh:
        fh.write("\n".join(ids))
        fh.write("\n")
    return path


def _run_scenarios(ctx: BenchContext) -> None:
    """Load the sessions and run the chosen scenarios, each `--repeat` times in a row.

    Scenario (e) measures its small size before the rest of the sessions is loaded, so the same table is
    measured at 10,000 rows and at N without reloading it.
    """
    scenarios = ctx.args.scenarios
    load_s = 0.0
    if "e" in scenarios:
        load_s += run(load_sessions(ctx.pg.url, TENANT, ctx.ids[:SMALL_SET]))
        _repeat(ctx, scenario_e_small)
        rest = ctx.ids[SMALL_SET:]
    else:
        rest = ctx.ids
    if rest:
        load_s += run(load_sessions(ctx.pg.url, TENANT, rest))
    ctx.extra["load_s"] = round(load_s, 2)
    log(f"loaded {len(ctx.ids):,} sessions with COPY in {load_s:.1f} s")
    if "e" in scenarios:
        _repeat(ctx, scenario_e_large)
    for name, scenario in SCENARIOS.items():
        if name in scenarios:
            _repeat(ctx, scenario)


def _repeat(ctx: BenchContext, scenario: Callable[[BenchContext], None]) -> None:
    for rnd in range(ctx.args.repeat):
        ctx.round = rnd
        scenario(ctx)
