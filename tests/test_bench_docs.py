"""The bench's targets live in one table: the runner judges it, and both READMEs are generated from it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.readme import (
    bench_readme_with_targets,
    is_full_run,
    latest_full_result,
    performance_table,
    quoted_result,
    readme_with_table,
)
from bench.targets import TARGETS, evaluate
from tests.helpers import ROOT

README = (ROOT / "README.md").read_text()
BENCH_README = (ROOT / "bench" / "README.md").read_text()
RESULTS = sorted((ROOT / "bench" / "results").glob("*.json"))


def test_readme_performance_table_is_generated() -> None:
    assert readme_with_table(README) == README, "run `make bench-docs` to regenerate the Performance table"


def test_bench_readme_target_list_is_generated() -> None:
    assert bench_readme_with_targets(BENCH_README) == BENCH_README, "run `make bench-docs`"


def test_readme_quotes_a_full_run() -> None:
    quoted = quoted_result(README)
    assert quoted in RESULTS
    assert is_full_run(json.loads(quoted.read_text()))
    assert is_full_run(json.loads(latest_full_result().read_text()))


def test_every_target_has_a_row_in_the_readme_table() -> None:
    table = performance_table(json.loads(quoted_result(README).read_text()), "x")
    assert len([line for line in table.splitlines() if line.startswith("| (")]) == len(TARGETS)
    assert len({target.id for target in TARGETS}) == len(TARGETS)


@pytest.mark.parametrize("path", RESULTS, ids=lambda path: path.name)
def test_stored_results_evaluate_as_they_were_judged(path: Path) -> None:
    """Every stored run, evaluated again by `TARGETS`, gives the values the runner of its day wrote.

    Thresholds may move over time: where one did, only the verdict may differ. Targets added since are
    evaluated too (from the figures the file holds) but have nothing to compare with.
    """
    result = json.loads(path.read_text())
    judged_then = {then["target"] for then in result["targets"]}
    again = [now for now in evaluate(result["summary"], result["scenarios"]) if now["target"] in judged_then]
    assert len(again) == len(result["targets"])
    for now, then in zip(again, result["targets"], strict=True):
        if now["limit"] != then["limit"]:
            now, then = {**now, "limit": None, "verdict": None}, {**then, "limit": None, "verdict": None}
        assert now == then
    performance_table(result, path.name)  # and every one can still be quoted
