"""`python -m bench.readme`: the README's Performance table and bench/README.md's target list, generated.

Both come from `TARGETS` in bench/targets.py (names, thresholds, directions); the README's table also
from one full run in bench/results/, the one its start marker names, evaluated with today's targets.

    python -m bench.readme                                     # print both generated regions
    python -m bench.readme --write                             # rewrite them in place (make bench-docs)
    python -m bench.readme --write --result latest             # quote the newest full run instead
    python -m bench.readme --write --result bench/results/X.json

tests/test_bench_docs.py fails when either file differs from this output.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.errors import cut_short
from bench.paths import REPO_DIR, RESULTS_DIR
from bench.targets import (
    ALL_SCENARIOS,
    FRACTION,
    RATIO,
    TARGETS,
    Target,
    count_label,
    figure,
    measured_value,
    verdict,
)

README = REPO_DIR / "README.md"
BENCH_README = REPO_DIR / "bench" / "README.md"
TABLE_START = re.compile(r"<!-- bench-table:start (\S+) -->")
TABLE_END = "<!-- bench-table:end -->"
TARGETS_START, TARGETS_END = "<!-- bench-targets:start -->", "<!-- bench-targets:end -->"

# How the README shows one figure of a summary row.
TIMES = "\N{MULTIPLICATION SIGN}"  # how the README writes a ratio: 1.45 times
FIGURES: dict[str, Callable[[float], str]] = {
    "rps": lambda v: f"{v:,.0f}",
    "p99_ms": lambda v: f"{v:.1f} ms",
    "rss_mb": lambda v: f"{v:.0f} MB",
    "hot_ratio": lambda v: f"{v * 100:.1f} %",
    "purge_rows_per_s": lambda v: f"{v:,.0f} rows/s",
    "max_over_p99": lambda v: f"{v:.1f}{TIMES}",
}
OPS = {">=": "≥", "<=": "≤"}
VERDICTS = {"PASS": "pass", "MISS": "**miss**", "n/a": "n/a"}


def is_full_run(result: dict[str, Any]) -> bool:
    """A run the README may quote: not `--quick`, every scenario, not cut short."""
    return (
        not result.get("quick")
        and set(result.get("scenarios") or []) == set(ALL_SCENARIOS)
        and not cut_short(result.get("notes") or [])
    )


def latest_full_result(results_dir: Path = RESULTS_DIR) -> Path:
    """The newest full run (result files are named by the time they were written)."""
    for path in sorted(results_dir.glob("*.json"), reverse=True):
        if is_full_run(load_result(path)):
            return path
    raise SystemExit(f"no full run in {results_dir}: run `make bench` first")


def quoted_result(readme: str) -> Path:
    """The result file the README's Performance table quotes (named in its start marker)."""
    match = TABLE_START.search(readme)
    if match is None:
        raise SystemExit("README.md has no `<!-- bench-table:start <result file> -->` marker")
    return REPO_DIR / match.group(1)


def load_result(path: Path) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(path.read_text())
    return result


def _source(path: Path) -> str:
    """How the README names a result file: its path from the repository root."""
    return path.resolve().relative_to(REPO_DIR).as_posix()


def threshold(target: Target) -> str:
    if target.unit == RATIO:
        shown = f"{target.limit}{TIMES}"
    elif target.unit == FRACTION:
        shown = f"{target.limit * 100:.0f} %"
    else:
        shown = f"{target.limit:,.0f}"
    return f"{OPS[target.op]} {shown}"


def performance_table(result: dict[str, Any], source: str) -> str:
    """The README's table: every target, as measured in one result and judged by `TARGETS` today."""
    summary: Sequence[dict[str, Any]] = result["summary"]
    lines = [
        f"Full run of {result['started'][:10]} (`{source}`, {result['sessions']:,} sessions, "
        f"{result['duration_s']:g} s per target):",
        "",
        "| scenario | service | reference | ratio | target | |",
        "|---|---|---|---|---|---|",
    ]
    figures = run_figures(result)
    for target in TARGETS:
        value = measured_value(target, summary)
        cells = [
            f"({target.scenario}) {target.doc_label.format(n=count_label(result['sessions']))}",
            target.doc_subject.format(_figure(summary, target, target.subject)),
            ""
            if target.reference is None
            else target.doc_reference.format(_figure(summary, target, target.reference)),
            _compared(target, value),
            threshold(target),
            VERDICTS[verdict(target, value)] + _note(target, figures),
        ]
        lines.append("|" + "|".join(f" {_cell(cell)} " if cell else " " for cell in cells) + "|")
    return "\n".join(lines)


def _cell(text: str) -> str:
    """Text as one Markdown table cell (a name like `|RSS ... - 1|` would otherwise split it)."""
    return text.replace("|", "\\|")


def _figure(summary: Sequence[dict[str, Any]], target: Target, row: str) -> str:
    value = figure(summary, target.scenario, row, target.metric)
    return "n/a" if value is None else FIGURES[target.metric](value)


def _compared(target: Target, value: float | None) -> str:
    if target.compare == "value":
        return ""  # the figure itself is in the service column
    if value is None:
        return "n/a"
    return f"{value * 100:.1f} %" if target.compare == "deviation" else f"{value:.2f}{TIMES}"


def run_figures(result: dict[str, Any]) -> dict[str, str]:
    """Run-level figures a target's `doc_note` may name (absent from runs that did not measure them)."""
    figures = {}
    alone = (result.get("purge_alone") or [{}])[0].get("rows_per_s")
    if alone is not None:
        figures["purge_alone_rows_per_s"] = FIGURES["purge_rows_per_s"](alone)
    return figures


def _note(target: Target, figures: dict[str, str]) -> str:
    if target.doc_note is None:
        return ""
    try:
        return f" ({target.doc_note.format(**figures)})"
    except KeyError:
        return ""


def target_list() -> str:
    """bench/README.md's list of targets: what each compares and when it passes."""
    lines = ["| target | scenario | what the bench prints | passes when |", "|---|---|---|---|"]
    lines += [f"| `{t.id}` | ({t.scenario}) | {_cell(t.label)} | {threshold(t)} |" for t in TARGETS]
    return "\n".join(lines)


def readme_with_table(text: str, result_path: Path | None = None) -> str:
    """README.md with its Performance table regenerated (from `result_path`, else the file it quotes)."""
    path = result_path or quoted_result(text)
    source = _source(path)
    table = performance_table(load_result(path), source)
    pattern = re.compile(TABLE_START.pattern + ".*?" + re.escape(TABLE_END), flags=re.DOTALL)
    return pattern.sub(lambda _: f"<!-- bench-table:start {source} -->\n{table}\n{TABLE_END}", text)


def bench_readme_with_targets(text: str) -> str:
    pattern = re.compile(re.escape(TARGETS_START) + ".*?" + re.escape(TARGETS_END), flags=re.DOTALL)
    return pattern.sub(lambda _: f"{TARGETS_START}\n{target_list()}\n{TARGETS_END}", text)


def main(argv: list[str] | None = None) -> int:
    description = (__doc__ or "").split("\n")[0]
    parser = argparse.ArgumentParser(prog="python -m bench.readme", description=description)
    parser.add_argument("--write", action="store_true", help="rewrite README.md and bench/README.md")
    parser.add_argument(
        "--result",
        default=None,
        help="result file the README quotes: a path, or `latest` for the newest full run "
        "(default: the one it quotes now)",
    )
    args = parser.parse_args(argv)
    readme = README.read_text()
    if args.result == "latest":
        path = latest_full_result()
    elif args.result:
        path = Path(args.result).resolve()
        if not is_full_run(load_result(path)):
            parser.error(f"{args.result} is not a full run (quick, a subset of scenarios, or cut short)")
    else:
        path = quoted_result(readme)
    if args.write:
        README.write_text(readme_with_table(readme, path))
        BENCH_README.write_text(bench_readme_with_targets(BENCH_README.read_text()))
        print(f"wrote README.md and bench/README.md (table from {_source(path)})")
    else:
        print(performance_table(load_result(path), _source(path)))
        print()
        print(target_list())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
