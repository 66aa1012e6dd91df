"""Helpers shared by the benchmarks (not a benchmark): a process's CPU time and RSS, redis-server's
CPU time, a percentile, and which checkout's code a benchmark measures.

Imported as a sibling module (`python benchmarks/X.py` puts benchmarks/ first on sys.path); it
imports nothing of the project, so a benchmark can still choose the checkout (`use_checkout`)."""

from __future__ import annotations

import os
import sys
from contextlib import suppress
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def proc_cpu_s(pid: int | str = "self") -> float:
    """User + system CPU seconds of a process (Linux /proc); 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_mb(pid: int | str = "self") -> float:
    """Resident set size of a process in MB; 0 when it is gone."""
    with suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def redis_cpu_s(redis: Any) -> float:
    """redis-server's user + system CPU seconds (`INFO cpu`, through a synchronous client)."""
    info = redis.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def pct(values: list[float], q: float) -> float:
    """The q-quantile (nearest rank) of values, nan when empty."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def use_checkout(repo: str | Path | None = None) -> Path:
    """Put the checkout whose code the benchmark measures first on sys.path: `repo` (a benchmark's
    `--repo`, for A/B runs against another worktree) or this one. Returns its path."""
    path = Path(repo).resolve() if repo else REPO
    sys.path.insert(0, str(path))
    return path


class GcCount:
    """A `gc.callbacks` counter, installed with `with`: young (generation 0/1) and full collections
    while installed, and the container objects allocated net (allocations minus deallocations of
    objects the collector tracks: what fills generation 0 and starts a young collection), from
    generation 0's count when each collection starts and when it is left. Meaningful for work
    that returns what it built (a read); a pass that frees everything it built nets about
    `young` x the threshold."""

    def __init__(self) -> None:
        self.young = self.full = 0
        self.allocated = 0
        self._count0 = 0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        import gc

        if phase != "start":
            return
        self.allocated += gc.get_count()[0] - self._count0
        self._count0 = 0  # a collection empties generation 0's count
        if info.get("generation", 0) == 2:
            self.full += 1
        else:
            self.young += 1

    def __enter__(self) -> GcCount:
        import gc

        self._count0 = gc.get_count()[0]
        gc.callbacks.append(self)
        return self

    def __exit__(self, *_: object) -> None:
        import gc

        gc.callbacks.remove(self)
        self.allocated += gc.get_count()[0] - self._count0
