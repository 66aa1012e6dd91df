"""Process-level tuning of a csms node: garbage collector and event loop.

Public names: `tune_gc`, `freeze_after_start`, `GcPauses`, `GC_PAUSES`, `event_loop_kind`, `new_event_loop`.

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
import importlib.util
import logging
import sys
import time
import traceback
from collections import Counter as Tally
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
        self.profile_over_s: float | None = None
        """Log what a collection that used this much CPU walked: object types, dict key sets and
        the stack that started it (`gc_profile_ms`; None: off; costs a walk of the generations)."""
        self._profile: tuple[list[str], Tally[str], Tally[str]] | None = None

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        """The `gc.callbacks` hook: times a collection from its start to its stop (metrics, and the
        slow-collection and profile logs)."""
        if phase == "start":
            if self.profile_over_s is not None:
                self._profile = _walked(int(info.get("generation", 0)))
            self.started = time.perf_counter()
            self.started_cpu = time.thread_time()
            return
        pause = time.perf_counter() - self.started
        cpu = time.thread_time() - self.started_cpu
        generation = int(info.get("generation", 0))
        if self.log_over_s is not None and pause >= self.log_over_s:
            log.warning("gc: generation %d collection took %.1f ms (%.1f ms CPU), %d objects collected, "
                        "%d uncollectable; counts now %s", generation, pause * 1000, cpu * 1000,
                        info.get("collected", 0), info.get("uncollectable", 0), gc.get_count())
        if self._profile is not None and self.profile_over_s is not None and cpu >= self.profile_over_s:
            stack, types, dicts = self._profile
            log.warning("gc profile: generation %d, %.0f ms CPU, %d collected; walked (1 in %d sampled) "
                        "%s; dict keys %s; started at\n%s", generation, cpu * 1000, info.get("collected", 0),
                        PROFILE_SAMPLE, types.most_common(25), dicts.most_common(15), "".join(stack))
        self._profile = None
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

PROFILE_SAMPLE = 10


def _walked(generation: int) -> tuple[list[str], Tally[str], Tally[str]]:
    """The stack that started a collection of `generation`, and a sample (1 in `PROFILE_SAMPLE`) of
    the objects it walks: type names, and the first keys of dicts."""
    stack = traceback.format_list(traceback.extract_stack(sys._getframe(2))[-12:])
    types: Tally[str] = Tally()
    dicts: Tally[str] = Tally()
    for gen in range(generation + 1):
        for obj in gc.get_objects(generation=gen)[::PROFILE_SAMPLE]:
            name = type(obj).__qualname__
            if isinstance(obj, dict):
                dicts[",".join(map(str, list(obj)[:4]))[:80]] += 1
            elif isinstance(obj, (list, tuple)):
                name = f"{name}[{min(len(obj), 9)}]"
            types[name] += 1
    return stack, types, dicts


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


def event_loop_kind(setting: str, slow_callback_ms: float) -> str:
    """The loop `evfleet csms` runs for the `event_loop` setting: "auto" is uvloop when it can be
    imported and no callback watch (`slow_callback_ms`, standard loop only) is asked for."""
    if setting != "auto":
        return setting
    if slow_callback_ms > 0 or importlib.util.find_spec("uvloop") is None:
        return "asyncio"
    return "uvloop"


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
