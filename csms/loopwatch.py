"""Event-loop stalls of a csms node: how late the loop runs, and what blocked it.

Public names: `LoopLag`, `SlowCallbacks`, `LOOP_LAG_SECONDS`, `SLOW_CALLBACKS`.

Every message a node answers waits behind whatever callback the event loop is running, so
one 200 ms callback is a 200 ms tail for every station whose frame arrives meanwhile (issue
14: p50 2.5 ms, p99 133 ms). Two instruments:

- `LoopLag` (always on, cheap): a task that sleeps `interval_s` and observes how much later
  than asked it woke up, in `evfleet_event_loop_lag_seconds` (a histogram on /metrics).
- `SlowCallbacks` (opt-in, `slow_callback_ms`): times every callback the loop runs
  (`asyncio.Handle._run`; the standard loop only, uvloop runs its handles in C) and logs each
  one longer than the threshold with the task it belongs to and the CPU it used (a callback
  with far less CPU than wall time was pre-empted by other processes), counted in
  `evfleet_event_loop_slow_callbacks_total`. A watchdog thread samples the loop thread's
  stack while a callback is still running past the threshold, so the log names the code that
  blocked, not only the task (asyncio's own debug mode logs the task without the stack and
  slows every coroutine down).
- Busy loop turns (with `SlowCallbacks.watch_turns`): a turn runs every callback that became
  ready since the last one, so 800 ready tasks of 0.5 ms each hold every station's frame for
  400 ms although no single callback is slow. A turn busier than the threshold (from the end of
  one selector poll to the start of the next) is logged with its CPU, its number of callbacks
  and the coroutines or callbacks that used most of that CPU, and counted in
  `evfleet_event_loop_slow_turns_total`.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
import traceback
from asyncio import base_events, events
from collections.abc import Callable
from typing import Any

from prometheus_client import Counter, Histogram

log = logging.getLogger(__name__)

LOOP_LAG_SECONDS = Histogram(
    "evfleet_event_loop_lag_seconds", "How much later than asked a sleeping task woke up (event-loop stalls)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0))
SLOW_CALLBACKS = Counter("evfleet_event_loop_slow_callbacks",
                         "Event-loop callbacks that ran longer than slow_callback_ms")
SLOW_TURNS = Counter("evfleet_event_loop_slow_turns",
                     "Event-loop turns (the callbacks run between two selector polls) busier than "
                     "slow_callback_ms")


class LoopLag:
    """Observes the event loop's lateness every `interval_s` into `LOOP_LAG_SECONDS`."""

    def __init__(self, interval_s: float = 0.25) -> None:
        self.interval_s = interval_s
        self.worst_s = 0.0

    async def run(self) -> None:
        """Until cancelled."""
        while True:
            asked = time.perf_counter()
            await asyncio.sleep(self.interval_s)
            lag = max(0.0, time.perf_counter() - asked - self.interval_s)
            self.worst_s = max(self.worst_s, lag)
            LOOP_LAG_SECONDS.observe(lag)


def _stack_of(thread_id: int, limit: int = 12) -> str:
    frame = sys._current_frames().get(thread_id)
    if frame is None:
        return ""
    return "".join(traceback.format_stack(frame, limit=limit))


class SlowCallbacks:
    """Logs event-loop callbacks slower than `threshold_s`, with a stack sampled while they ran.

    `install()` wraps `asyncio.events.Handle._run` for the whole process (every standard event
    loop, also `TimerHandle`); `uninstall()` restores it. Records of the last slow callbacks are
    kept in `recent` (description, seconds, stack) for tests and for a debugger.
    """

    def __init__(self, threshold_s: float, keep: int = 50) -> None:
        self.threshold_s = threshold_s
        self.keep = keep
        self.recent: list[tuple[str, float, str]] = []
        self._original: Callable[[events.Handle], None] | None = None
        self._running: tuple[int, float, int] | None = None
        """(sequence number, start, thread id) of the callback being run."""
        self._seq = 0
        self._sampled: tuple[int, str] = (-1, "")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.recent_turns: list[tuple[float, float, int, list[tuple[str, float, int]]]] = []
        """Busy turns: (seconds, CPU seconds, callbacks, [(name, CPU seconds, callbacks)] biggest first)."""
        self._turns: _Turns | None = None

    def install(self) -> None:
        """Start timing callbacks (idempotent)."""
        if self._original is not None:
            return
        original = events.Handle._run
        self._original = original
        watch = self

        def _run(handle: events.Handle) -> None:
            watch._seq += 1
            seq = watch._seq
            started, cpu = time.perf_counter(), time.thread_time()
            watch._running = (seq, started, threading.get_ident())
            try:
                original(handle)
            finally:
                watch._running = None
                took = time.perf_counter() - started
                turns = watch._turns
                if took >= watch.threshold_s or turns is not None:
                    used = time.thread_time() - cpu
                    if turns is not None:
                        turns.add(handle, used)
                    if took >= watch.threshold_s:
                        watch._report(handle, took, used, seq)

        events.Handle._run = _run  # type: ignore[method-assign,assignment]
        self._stop.clear()
        self._thread = threading.Thread(target=self._watch, name="slow-callback-watch", daemon=True)
        self._thread.start()

    def watch_turns(self, loop: asyncio.AbstractEventLoop) -> None:
        """Also log the busy turns of `loop` (a standard selector loop; others are left alone)."""
        selector = getattr(loop, "_selector", None)
        if self._turns is None and selector is not None:
            self._turns = _Turns(self, selector)

    def uninstall(self) -> None:
        """Stop timing callbacks."""
        if self._turns is not None:
            self._turns.close()
            self._turns = None
        if self._original is not None:
            events.Handle._run = self._original  # type: ignore[method-assign,assignment]
            self._original = None
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
            self._thread = None

    def _watch(self) -> None:
        """Sample the loop thread's stack once per callback that runs past the threshold."""
        period = max(0.001, self.threshold_s / 2)
        while not self._stop.wait(period):
            running = self._running
            if running is None:
                continue
            seq, started, thread_id = running
            if seq != self._sampled[0] and time.perf_counter() - started >= self.threshold_s:
                self._sampled = (seq, _stack_of(thread_id))

    def _report(self, handle: events.Handle, took: float, cpu: float, seq: int) -> None:
        what = _describe(handle)
        stack = self._sampled[1] if self._sampled[0] == seq else ""
        SLOW_CALLBACKS.inc()
        self.recent = [*self.recent[-(self.keep - 1):], (what, took, stack)]
        log.warning("event loop blocked %.0f ms (%.0f ms CPU) by %s%s", took * 1000, cpu * 1000, what,
                    f"\nstack while it ran:\n{stack}" if stack else "")


    def _report_turn(self, took: float, cpu: float, callbacks: int, by: dict[str, float],
                     counts: dict[str, int]) -> None:
        top = [(name, used, counts[name]) for name, used in sorted(by.items(), key=lambda kv: -kv[1])[:5]]
        SLOW_TURNS.inc()
        self.recent_turns = [*self.recent_turns[-(self.keep - 1):], (took, cpu, callbacks, top)]
        most = ", ".join(f"{name} {used * 1000:.1f} ms/{n}" for name, used, n in top)
        log.warning("event loop turn busy %.0f ms (%.0f ms CPU), %d callbacks; most CPU: %s", took * 1000,
                    cpu * 1000, callbacks, most)


class _Turns:
    """Times each turn of one selector loop by wrapping its selector's `select` (instance attribute)."""

    def __init__(self, watch: SlowCallbacks, selector: Any) -> None:
        self.watch = watch
        self.selector = selector
        self.by: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.callbacks = 0
        self.ended = (time.perf_counter(), time.thread_time())
        original = selector.select

        def select(timeout: float | None = None) -> Any:
            now, cpu = time.perf_counter(), time.thread_time()
            took = now - self.ended[0]
            if took >= watch.threshold_s:
                watch._report_turn(took, cpu - self.ended[1], self.callbacks, self.by, self.counts)
            if self.callbacks:
                self.by, self.counts, self.callbacks = {}, {}, 0
            try:
                return original(timeout)
            finally:
                self.ended = (time.perf_counter(), time.thread_time())

        selector.select = select

    def add(self, handle: events.Handle, cpu: float) -> None:
        """Count one callback of the current turn."""
        name = _name(handle)
        self.by[name] = self.by.get(name, 0.0) + cpu
        self.counts[name] = self.counts.get(name, 0) + 1
        self.callbacks += 1

    def close(self) -> None:
        """Restore the selector's own `select`."""
        with_wrapper = vars(self.selector)
        with_wrapper.pop("select", None)


def _name(handle: events.Handle) -> str:
    """A cheap name of what a handle runs: the coroutine of a task, or the callback."""
    callback: Any = getattr(handle, "_callback", None)
    owner = getattr(callback, "__self__", None)
    if isinstance(owner, asyncio.Task):
        coro: Any = owner.get_coro()
        what = str(getattr(coro, "__qualname__", "?"))
        name = owner.get_name()
        if name.startswith("Task-"):
            return what
        return f"{name.rstrip('0123456789')} {what}"  # one name for a service, not one per station
    return str(getattr(callback, "__qualname__", type(callback).__name__))


def _describe(handle: events.Handle) -> str:
    """The task (name, coroutine, where it now waits) or the callback a handle runs."""
    callback: Any = getattr(handle, "_callback", None)
    owner = getattr(callback, "__self__", None)
    if isinstance(owner, asyncio.Task):
        return repr(owner)
    return str(base_events._format_handle(handle))  # type: ignore[attr-defined]
