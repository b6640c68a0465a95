"""Window figures from totals and a snapshot (pure): differences, the mean, the bucketed 95th percentile."""

from __future__ import annotations

from datetime import UTC, datetime

from app.stats import _percentile, _window


def test_percentile_is_the_mean_of_the_bucket_holding_the_nearest_rank() -> None:
    # 100 lifetimes: 95 in bucket 4 (2-2.38 s, mean 2.1 s), 5 in bucket 20 (32-38 s, mean 35 s).
    buckets = [(4, 95, 95 * 2.1), (20, 5, 5 * 35.0)]
    assert _percentile(buckets, 100) == 2.1  # rank 95 is the last of bucket 4
    assert _percentile([(4, 94, 94 * 2.1), (20, 6, 6 * 35.0)], 100) == 35.0
    assert _percentile([], 0) is None


def test_window_subtracts_the_snapshot_and_ignores_buckets_that_did_not_move() -> None:
    base = {
        "taken_at": datetime(2026, 12, 1, tzinfo=UTC),
        "peak_live": 9,
        "totals": {
            "counters": {"created": 10, "ended:deleted": 4},
            "lifetimes": {"3": [4, 8.0], "5": [2, 6.0]},
        },
    }
    totals = {"created": 15, "ended:deleted": 6, "ended:expired_idle": 3}
    lifetimes = [{"bucket": 3, "ended": 4, "seconds": 8.0}, {"bucket": 5, "ended": 7, "seconds": 21.0}]
    window = _window(60, 3, totals, lifetimes, base)  # type: ignore[arg-type]
    assert window["since"] == base["taken_at"] and window["created"] == 5
    assert window["ended"]["deleted"] == 2 and window["ended"]["expired_idle"] == 3
    assert window["ended"]["revoked"] == 0
    assert window["peak_live"] == 9  # a snapshot since the start saw more than are live now
    assert window["mean_lifetime_seconds"] == 3.0 and window["p95_lifetime_seconds"] == 3.0
    fresh = _window(60, 2, totals, lifetimes, None)  # type: ignore[arg-type]
    assert fresh["since"] is None and fresh["created"] == 15 and fresh["peak_live"] == 2
