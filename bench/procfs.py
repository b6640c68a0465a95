"""CPU and memory accounting from /proc: what a process tree used, and how busy the whole machine was.

The bench measures CPU per request rather than trusting wall-clock throughput alone, because the machines
it runs on are shared: `other_cpu_cores` in a result is the machine's busy time minus everything here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@dataclass
class ProcInfo:
    ppid: int
    pgid: int
    state: str
    cpu_ticks: int
    rss_pages: int


def proc_table() -> dict[int, ProcInfo]:
    """Every process on the machine, from /proc/<pid>/stat (processes that exit meanwhile are skipped)."""
    table: dict[int, ProcInfo] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                raw = fh.read().decode(errors="replace")
        except OSError:
            continue
        # the command name (in parentheses) may contain spaces: split after its closing parenthesis
        rest = raw[raw.rfind(")") + 2 :].split()
        # rest[0]=state, [1]=ppid, [2]=pgrp, [11]=utime, [12]=stime, [21]=rss
        table[int(entry)] = ProcInfo(
            int(rest[1]), int(rest[2]), rest[0], int(rest[11]) + int(rest[12]), int(rest[21])
        )
    return table


def descendants(root: int, table: dict[int, ProcInfo]) -> set[int]:
    """`root` and every process below it (uvicorn parent and workers; postmaster and backends)."""
    found = {root} if root in table else set()
    changed = True
    while changed:
        changed = False
        for pid, info in table.items():
            if pid not in found and info.ppid in found:
                found.add(pid)
                changed = True
    return found


@dataclass
class TreeSample:
    cpu_ticks: int
    rss_bytes: int
    processes: int


def sample_tree(root: int | None) -> TreeSample | None:
    """CPU ticks so far and resident memory now, summed over a process tree; None when it is gone."""
    if root is None:
        return None
    table = proc_table()
    pids = descendants(root, table)
    if not pids:
        return None
    return TreeSample(
        sum(table[p].cpu_ticks for p in pids), sum(table[p].rss_pages for p in pids) * PAGE_SIZE, len(pids)
    )


def cpu_busy() -> tuple[int, int]:
    """(busy ticks, total ticks) over all CPUs, from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    total = sum(fields[:8])
    idle = fields[3] + fields[4]
    return total - idle, total
