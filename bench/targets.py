"""The bench's pass/fail targets: one table, `TARGETS`, and the one function that evaluates it.

The runner evaluates `TARGETS` after a run (the `Targets:` lines under the table and `"targets"` in the
result JSON), and `python -m bench.readme` generates from it the README's Performance table and the
target list in bench/README.md, so a threshold is written here and nowhere else.

A target compares one figure (`metric`) of one summary row (`subject`) with the same figure of another
row (`reference`) as a ratio, or takes the subject's figure itself, or how far the ratio is from 1
(`deviation`). Rows are found by scenario and target name, as stored in every result file: the names
(`label`, `unit`) are those of the older files, so those files still evaluate and compare.

This module imports nothing else from the bench, so the docs generator and the tests can use it alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Row = dict[str, Any]  # one summary row or target check, as stored in the result JSON

ALL_SCENARIOS = ("a", "b", "c", "d", "e")  # what `--scenarios` may name; bench/scenarios.py runs them

# Units as spelt in result files: what the console prints after a value, and how the docs show it.
RATIO = "x"  # a ratio of two rows' figures (console "1.450x"; the docs use the multiplication sign)
FRACTION = ""  # a share or a relative difference (docs: "99.8 %")
ROWS_PER_S = " rows/s"  # a rate (docs: "24,977 rows/s")

# Scenario (e) measures the service at two sizes; the large row's name carries the session count.
AT_10K = "service@10k"
AT_N = "service@N"  # matches scenario (e)'s other row: `service@1M` (or `service@all` for small runs)


@dataclass(frozen=True, kw_only=True)
class Target:
    id: str
    scenario: str
    label: str  # what the console and the result JSON call it (`"target"` of an entry of `"targets"`)
    metric: str  # the summary-row field compared: rps, p99_ms, rss_mb, hot_ratio, purge_rows_per_s
    subject: str  # the row measured (its `"target"` in the summary)
    reference: str | None = None  # the row it is compared with; None: the subject's own figure
    compare: Literal["ratio", "value", "deviation"] = "ratio"
    op: Literal[">=", "<="]
    limit: float
    unit: str = RATIO
    # README Performance table: the row's name; "{}" in the cells stands for the formatted figure
    doc_label: str
    doc_subject: str = "{}"
    doc_reference: str = "{}"
    doc_note: str | None = None  # after the verdict; "{name}" is a run-level figure (`run_figures()`)

    @property
    def estimate_metric(self) -> str | None:
        """Throughput ratios also get the ratio of the CPU-bound estimates (shown, never judged)."""
        return "est_rps" if self.compare == "ratio" and self.metric == "rps" else None


TARGETS: tuple[Target, ...] = (
    Target(
        id="a-rps-asyncpg",
        scenario="a",
        label="service rps / asyncpg_touch rps",
        metric="rps",
        subject="service",
        reference="asyncpg_touch",
        op=">=",
        limit=1.0,
        doc_label="write-path touch, req/s",
        doc_reference="raw asyncpg `UPDATE` {}",
    ),
    Target(
        id="a-rps-orm",
        scenario="a",
        label="service rps / orm_touch rps",
        metric="rps",
        subject="service",
        reference="orm_touch",
        op=">=",
        limit=4.0,
        doc_label="write-path touch, req/s",
        doc_reference="tutorial ORM {}",
    ),
    Target(
        id="a-p99-asyncpg",
        scenario="a",
        label="service p99 / asyncpg_touch p99",
        metric="p99_ms",
        subject="service",
        reference="asyncpg_touch",
        op="<=",
        limit=1.5,
        doc_label="p99",
        doc_reference="raw asyncpg {}",
    ),
    Target(
        id="a-max-p99",
        scenario="a",
        label="slowest touch / p99 (service, a)",
        metric="max_over_p99",
        subject="service",
        compare="value",
        op="<=",
        limit=10.0,
        doc_label="slowest write-path touch",
        doc_subject="{} its p99",
    ),
    Target(
        id="b-rps-redis",
        scenario="b",
        label="service rps / redis_touch rps",
        metric="rps",
        subject="service",
        reference="redis_touch",
        op=">=",
        limit=1.0,
        doc_label="realistic touch, req/s",
        doc_reference="Redis `GETEX` {}",
    ),
    Target(
        id="b-rps-constant",
        scenario="b",
        label="service rps / constant rps",
        metric="rps",
        subject="service",
        reference="constant",
        op=">=",
        limit=0.5,
        doc_label="realistic touch, req/s",
        doc_reference="constant endpoint {}",
    ),
    Target(
        id="b-max-p99",
        scenario="b",
        label="slowest touch / p99 (service, b)",
        metric="max_over_p99",
        subject="service",
        compare="value",
        op="<=",
        limit=10.0,
        doc_label="slowest realistic touch",
        doc_subject="{} its p99",
    ),
    Target(
        id="b-hot-ratio",
        scenario="b",
        label="sessions HOT ratio n_tup_hot_upd/n_tup_upd (service, b)",
        metric="hot_ratio",
        subject="service",
        compare="value",
        op=">=",
        limit=0.9,
        unit=FRACTION,
        doc_label="HOT updates of `sessions`",
    ),
    Target(
        id="c-rps-asyncpg",
        scenario="c",
        label="service create rps / asyncpg_create rps",
        metric="rps",
        subject="service",
        reference="asyncpg_create",
        op=">=",
        limit=0.8,
        doc_label="create, req/s",
        doc_reference="raw asyncpg `INSERT` {}",
    ),
    Target(
        id="d-p99-purge",
        scenario="d",
        label="p99 during purge / p99 without",
        metric="p99_ms",
        subject="service+purge",
        reference="service",
        op="<=",
        limit=1.5,
        doc_label="touch p99 during a purge",
        doc_reference="{} without",
    ),
    Target(
        id="d-max-p99",
        scenario="d",
        label="slowest touch during purge / its p99",
        metric="max_over_p99",
        subject="service+purge",
        compare="value",
        op="<=",
        limit=10.0,
        doc_label="slowest touch during a purge",
        doc_subject="{} its p99",
    ),
    Target(
        id="d-purge-rate",
        scenario="d",
        label="purge rows/s (rows removed / purge's own seconds, else its wall time)",
        metric="purge_rows_per_s",
        subject="service+purge",
        compare="value",
        op=">=",
        limit=20000,
        unit=ROWS_PER_S,
        doc_label="purge rate under touch load",
        doc_subject="{} (paced)",
        doc_note="{purge_alone_rows_per_s} unpaced, alone",
    ),
    Target(
        id="e-p99-size",
        scenario="e",
        label="p99 at N / p99 at 10k",
        metric="p99_ms",
        subject=AT_N,
        reference=AT_10K,
        op="<=",
        limit=1.2,
        doc_label="touch p99 at {n} vs 10k sessions",
    ),
    Target(
        id="e-max-p99",
        scenario="e",
        label="slowest touch at N / its p99",
        metric="max_over_p99",
        subject=AT_N,
        compare="value",
        op="<=",
        limit=10.0,
        doc_label="slowest touch at {n} sessions",
        doc_subject="{} its p99",
    ),
    Target(
        id="e-rss-size",
        scenario="e",
        label="|RSS at N / RSS at 10k - 1|",
        metric="rss_mb",
        subject=AT_N,
        reference=AT_10K,
        compare="deviation",
        op="<=",
        limit=0.10,
        unit=FRACTION,
        doc_label="service RSS at {n} vs 10k",
    ),
)


def find_row(summary: Iterable[Row], scenario: str, target: str) -> Row | None:
    """The measured summary row of `target` in `scenario` (`AT_N`: scenario e's row that is not `AT_10K`)."""
    for row in summary:
        if row["scenario"] != scenario or "rps" not in row:
            continue
        if row["target"] == target or (target == AT_N and row["target"] != AT_10K):
            return row
    return None


def figure(summary: Iterable[Row], scenario: str, target: str | None, metric: str) -> float | None:
    """One figure of one summary row; None when the row was not measured or lacks the figure."""
    row = None if target is None else find_row(summary, scenario, target)
    value = None if row is None else row.get(metric)
    if value is None and row is not None and metric == "max_over_p99":
        # results written before the figure was stored still hold wrk's latencies
        latency = (row.get("wrk") or {}).get("latency_us") or {}
        if latency.get("max") and latency.get("p99"):
            value = latency["max"] / latency["p99"]
    return None if value is None else float(value)


def ratio(num: float | None, den: float | None) -> float | None:
    if num is None or den is None or den == 0:
        return None
    return num / den


def measured_value(target: Target, summary: Sequence[Row], metric: str | None = None) -> float | None:
    """The compared value, unrounded (`metric` overrides the target's, e.g. for the CPU-bound estimate)."""
    metric = metric or target.metric
    subject = figure(summary, target.scenario, target.subject, metric)
    if target.compare == "value":
        return subject
    value = ratio(subject, figure(summary, target.scenario, target.reference, metric))
    if target.compare == "deviation" and value is not None:
        return abs(value - 1)
    return value


def verdict(target: Target, value: float | None) -> str:
    if value is None:
        return "n/a"
    passed = value >= target.limit if target.op == ">=" else value <= target.limit
    return "PASS" if passed else "MISS"


def evaluate(summary: Sequence[Row], scenarios: Iterable[str]) -> list[Row]:
    """The targets of the scenarios that ran, as stored under `"targets"` in a result."""
    ran = set(scenarios)
    checks = []
    for target in TARGETS:
        if target.scenario not in ran:
            continue
        value = measured_value(target, summary)
        estimate = None
        if target.estimate_metric is not None:
            estimate = measured_value(target, summary, target.estimate_metric)
        checks.append(
            {
                "scenario": target.scenario,
                "target": target.label,
                "value": None if value is None else round(value, 3),
                "op": target.op,
                "limit": target.limit,
                "unit": target.unit,
                "verdict": verdict(target, value),
                "cpu_estimate_value": None if estimate is None else round(estimate, 3),
            }
        )
    return checks


def count_label(n: int) -> str:
    """A session count as scenario (e) names its rows: 1M, 200k, 12345."""
    if n >= 1_000_000 and n % 1_000_000 == 0:
        return f"{n // 1_000_000}M"
    if n >= 1000 and n % 1000 == 0:
        return f"{n // 1000}k"
    return str(n)
