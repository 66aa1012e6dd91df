"""Process-level tuning of a csms node: garbage collector and event loop.

Public names: `tune_gc`, `freeze_after_start`, `GcPauses`, `GC_PAUSES`, `new_event_loop`.

A node holds thousands of long-lived connection objects. CPython's full (generation-2)
collection walks every tracked object, and at the default thresholds (700, 10, 10) it ran every
5-7 s at 500 msg/s for 170-314 ms, each a stall of the event loop (issue 14). `tune_gc` raises the
thresholds so that young collections are rarer (each still short); `freeze_after_start` moves
everything alive after start-up (modules, compiled schemas, settings) into the permanent
generation, which no collection walks again. Reference counting still frees everything that is
not in a cycle at once; cyclic garbage is still collected, only less often. Every collection's
pause is observed in `evfleet_gc_pause_seconds{generation}` (served on /metrics), its thread CPU time
in `evfleet_gc_pause_cpu_seconds{generation}`, and collections that used >= 10 ms of CPU are counted
in `evfleet_gc_stalls_total{generation}` (a stall count that a loaded machine does not inflate).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Callable

from prometheus_client import Counter, Gauge

log = logging.getLogger(__name__)

GC_PAUSE_SECONDS = Counter("evfleet_gc_pause_seconds", "Time spent in garbage collections", ["generation"])
GC_COLLECTIONS = Counter("evfleet_gc_collections", "Garbage collections", ["generation"])
GC_PAUSE_MAX = Gauge("evfleet_gc_pause_max_seconds", "Longest garbage-collection pause since start",
                     ["generation"])
GC_PAUSE_CPU_SECONDS = Counter("evfleet_gc_pause_cpu_seconds",
                               "Thread CPU time spent in garbage collections (wall time less pre-emption)",
                               ["generation"])
GC_STALLS = Counter("evfleet_gc_stalls", "Garbage collections that used at least 10 ms of CPU (an "
                    "event-loop stall whatever the machine's load)", ["generation"])
GC_STALL_CPU_S = 0.010


class GcPauses:
    """A `gc.callbacks` hook that times every collection (installed once per process)."""

    def __init__(self) -> None:
        self.started = 0.0
        self.started_cpu = 0.0
        self.longest = [0.0, 0.0, 0.0]
        self.installed = False
        self.log_over_s: float | None = None
        """Log every collection longer than this (`slow_callback_ms` sets it; None: none)."""

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.started = time.perf_counter()
            self.started_cpu = time.thread_time()
            return
        pause = time.perf_counter() - self.started
        cpu = time.thread_time() - self.started_cpu
        generation = int(info.get("generation", 0))
        if self.log_over_s is not None and pause >= self.log_over_s:
            log.warning("gc: generation %d collection took %.0f ms (%.0f ms CPU), %d objects collected, "
                        "%d uncollectable; counts now %s", generation, pause * 1000, cpu * 1000,
                        info.get("collected", 0), info.get("uncollectable", 0), gc.get_count())
        label = str(generation)
        GC_PAUSE_SECONDS.labels(label).inc(pause)
        GC_PAUSE_CPU_SECONDS.labels(label).inc(cpu)
        GC_COLLECTIONS.labels(label).inc()
        if cpu >= GC_STALL_CPU_S:
            GC_STALLS.labels(label).inc()
        if pause > self.longest[generation]:
            self.longest[generation] = pause
            GC_PAUSE_MAX.labels(label).set(pause)

    def install(self) -> None:
        """Add the hook to `gc.callbacks` (idempotent)."""
        if not self.installed:
            gc.callbacks.append(self)
            self.installed = True


GC_PAUSES = GcPauses()


def tune_gc(thresholds: tuple[int, int, int] | None) -> None:
    """Set the collector's thresholds (None: keep CPython's) and time every collection."""
    GC_PAUSES.install()
    if thresholds is not None:
        gc.set_threshold(*thresholds)
        log.debug("gc thresholds %s", thresholds)


def freeze_after_start() -> int:
    """Collect once, then move every surviving object to the permanent generation (`gc.freeze`).
    Returns how many objects were frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


def new_event_loop(kind: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """A loop factory for `asyncio.Runner`: "asyncio" (the standard loop) or "uvloop"
    (ValueError when uvloop is not installed)."""
    if kind == "asyncio":
        return asyncio.new_event_loop
    if kind == "uvloop":
        try:
            import uvloop
        except ImportError as err:
            raise ValueError("event_loop = uvloop, but uvloop is not installed (pip install uvloop)") from err
        factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
        return factory
    raise ValueError(f"event_loop must be asyncio or uvloop, not {kind!r}")
