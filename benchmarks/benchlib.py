"""Helpers shared by the benchmarks (not a benchmark): a process's CPU time and RSS, a percentile.

Imported as a sibling module (`python benchmarks/X.py` puts benchmarks/ first on sys.path)."""

from __future__ import annotations

import os
from contextlib import suppress
from pathlib import Path


def proc_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc); 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_mb(pid: int) -> float:
    """Resident set size of a process in MB; 0 when it is gone."""
    with suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def pct(values: list[float], q: float) -> float:
    """The q-quantile (nearest rank) of values, nan when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
