"""Keep a node's long-lived objects out of the young garbage collections (issue 14).

Public names: `Refreezer`, `REFREEZER`.

`csms.runtime.freeze_after_start` freezes what start-up made. Everything made after it (the
connection wave: about 90 tracked objects per station connection; then each station's transaction
state) survives the young (generation-0) collections into generation 1, and CPython's generation-1
collection, every 21st young one, walks all of it at once: at 20,000 stations on 2 nodes, 0.5-1 s
of CPU per collection, an event-loop stall (measured with `gc_profile_ms`).

`Refreezer` (installed by `evfleet csms` when `gc_refreeze` is on) moves the survivors of every
young collection straight to the permanent generation (`gc.freeze`, a list splice, O(1)): a
surviving object is walked once, by the collection it survived, and never again. Reference
counting still frees a frozen object the moment it is unreferenced (it leaves the permanent
generation then). What no collection sees is frozen *cyclic* garbage: objects frozen while alive
that later become an unreachable cycle. A closed station connection is such a cycle (handler,
WebSocket connection, transport, socket: about 106 objects). So memory stays bounded by a thaw:
`gc.unfreeze`, a full collection, `gc.freeze` again, run from the event loop when either

- `thaw_after_closed` connections closed since the last full collection (each left its cycle), or
- the frozen objects grew by `thaw_growth` times the live objects the last full collection found
  (at least `THAW_FLOOR_OBJECTS`): any other frozen garbage is bounded by that. No other garbage
  was found in the load harness: the young collections and the thaws of the connection wave
  freed 0 objects. (At the thresholds (50000, 20, 100) CPython itself collects generation 2 only
  after 100 generation-1 collections, which a steady node does not reach: without the refreezer
  a closed connection's cycle waits in generation 2 without any bound.)

and at most once every `THAW_MIN_INTERVAL_S`.

Two refinements, from measurement (production topology, 5,000 stations on 2 nodes): the thaws the
load harness counted "in the window" were all `closed` thaws, fired by the harness's own 5,000
disconnections at the end of the run (1.1-1.7 s each, 31,000-44,000 objects freed of 650,000-714,000
frozen); a steady node did not thaw. So:

- the `closed` rule waits until the closes pause (`THAW_SETTLE_S` without one), or
  `THAW_CLOSED_CAP` x `thaw_after_closed` closed: a disconnection wave is freed by one thaw after it,
  not by one in its middle (which leaves the rest of the wave frozen for a minute or more);
- the `growth` rule backs off: a growth thaw that freed less than `THAW_LITTLE` of the growth found
  that growth alive (a connection wave, new transactions), so the next needs twice the growth (up to
  `THAW_GROWTH_CAP` x `thaw_growth`); a thaw that freed garbage resets it. Memory stays bounded:
  frozen garbage is at most the current factor x the live objects.

Every thaw logs the rule that fired with its figures, and is counted by rule
(`evfleet_gc_thaws_total{reason}`, `evfleet_gc_thaw_collected_objects_total{reason}`,
`evfleet_gc_thaw_cpu_seconds_total{reason}`).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
import types
from collections import Counter as Tally

from prometheus_client import Counter, Gauge

log = logging.getLogger(__name__)

GC_REFREEZES = Counter("evfleet_gc_refreezes", "Young-collection survivors moved to the permanent generation")
GC_YOUNG_FREEZES = Counter("evfleet_gc_young_freezes", "Freezes of the new objects without a collection "
                           "(gc_freeze_young_s)")
GC_THAWS = Counter("evfleet_gc_thaws", "Full collections of the frozen objects (unfreeze, collect, "
                   "freeze), by the rule that fired (closed, growth; asked: called directly)", ["reason"])
GC_THAW_COLLECTED = Counter("evfleet_gc_thaw_collected_objects", "Objects the thaws' full collections "
                            "freed, by the rule that fired", ["reason"])
GC_THAW_CPU = Counter("evfleet_gc_thaw_cpu_seconds", "CPU seconds of the thaws (an event-loop stall "
                      "each), by the rule that fired", ["reason"])
GC_FROZEN = Gauge("evfleet_gc_frozen_objects", "Objects in the permanent generation (an upper bound between "
                  "exact counts: Refreezer.frozen_bound)")
GC_THAW_GROWTH = Gauge("evfleet_gc_thaw_growth_factor", "The growth rule's factor now (gc_thaw_growth, "
                       "doubled after each growth thaw that freed little)")


THAW_MIN_INTERVAL_S = 60.0
"""At most one thaw a minute: a fleet that drops and reconnects at once (10,000 closes) does not
turn into back-to-back full collections (each 0.4-1.5 s of CPU at 2 million objects)."""
THAW_FLOOR_OBJECTS = 1_500_000
"""The growth rule counts at least this many live objects: a node that starts with 150,000 and takes
10,000 connections (+2.3 million objects, no garbage) is not collected in full on the way."""
THAW_SETTLE_S = 5.0
"""The `closed` rule waits until no connection closed for this long (the wave is over) ..."""
THAW_CLOSED_CAP = 4
"""... or until `THAW_CLOSED_CAP` x `thaw_after_closed` closed (a steady trickle of closes)."""
THAW_LITTLE = 0.25
"""A growth thaw that freed less than this fraction of the growth found it alive: back off."""
THAW_GROWTH_CAP = 16.0
"""The growth factor backs off to at most this x `thaw_growth`."""


class Refreezer:
    """A `gc.callbacks` hook that freezes the survivors of every young collection, and the thaw
    that bounds the garbage it may freeze (see the module docstring)."""

    def __init__(self) -> None:
        self.active = False
        self.installed = False
        self._thaw_growth = 2.0
        self.growth_factor = 2.0
        """The factor the growth rule applies now: `thaw_growth`, doubled by each growth thaw that
        freed little (up to `THAW_GROWTH_CAP` x), back to `thaw_growth` after one that freed garbage."""
        self.floor_objects = THAW_FLOOR_OBJECTS
        self.thaw_after_closed = 1000
        """Thaw when this many connections closed since the last full collection (and the closes
        paused for `settle_s`)."""
        self.settle_s = THAW_SETTLE_S
        self.live_after_full = 0
        """Frozen objects right after the last full collection (all live)."""
        self.closed_since_full = 0
        self.last_close_s = float("-inf")
        self.refreezes = 0
        self.min_interval_s = THAW_MIN_INTERVAL_S
        self.last_thaw_s = float("-inf")
        self.frozen_bound = 0
        """At least the frozen objects: the last exact count plus every survivor frozen since (frees
        are not subtracted). `gc.get_freeze_count` walks the whole permanent generation (tens of ms
        at 2 million objects), so it is only read when this bound reaches the thaw's threshold."""
        self.why = ""
        """The figures of the rule that fired last (logged with its thaw)."""
        self.profile_garbage = False
        """Log what each thaw frees, by type (`gc_profile_ms` > 0; costs a second full collection)."""
        self.freeze_young_s = 0.0
        """Freeze every new object this often without a collection (`gc_freeze_young_s`; 0: off)."""
        self.young_freezes = 0

    @property
    def thaw_growth(self) -> float:
        """Thaw when the frozen objects grew by this x the live objects of the last full collection
        (at least `floor_objects`): `gc_thaw_growth`. Setting it resets `growth_factor` to it."""
        return self._thaw_growth

    @thaw_growth.setter
    def thaw_growth(self, value: float) -> None:
        self._thaw_growth = self.growth_factor = value
        GC_THAW_GROWTH.set(value)

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        """The `gc.callbacks` hook: after each young collection, freeze its survivors."""
        if phase == "stop" and self.active and int(info.get("generation", 0)) < 2:
            # the collection is over: its survivors are in generation 1 (2 after a generation-1
            # collection), and only they (everything older is frozen); count and splice them out
            self.frozen_bound += len(gc.get_objects(generation=1)) + len(gc.get_objects(generation=2))
            gc.freeze()
            self.refreezes += 1
            GC_REFREEZES.inc()
            GC_FROZEN.set(self.frozen_bound)

    def start(self, thaw_growth: float, thaw_after_closed: int) -> None:
        """Install the hook (once) and start freezing; call after `freeze_after_start` (which set
        the permanent generation to the live objects of a full collection)."""
        self.thaw_growth = thaw_growth
        self.thaw_after_closed = thaw_after_closed
        self.live_after_full = self.frozen_bound = gc.get_freeze_count()
        self.closed_since_full = 0
        self.last_close_s = self.last_thaw_s = float("-inf")
        if not self.installed:
            gc.callbacks.append(self)
            self.installed = True
        self.active = True
        GC_FROZEN.set(self.live_after_full)

    def freeze_young(self) -> int:
        """Move every object made since the last freeze or collection to the permanent generation
        without walking it (`gc.freeze`, O(1)); returns how many. Garbage among them that is not a
        cycle still frees itself (reference counting); a cycle waits for a thaw, as any frozen one."""
        if not self.active:
            return 0
        young = sum(len(gc.get_objects(generation=gen)) for gen in range(3))
        gc.freeze()  # also zeroes the young count: no collection for the next threshold's growth
        self.frozen_bound += young
        self.young_freezes += 1
        GC_YOUNG_FREEZES.inc()
        GC_FROZEN.set(self.frozen_bound)
        return young

    def stop(self) -> None:
        """Stop freezing (the frozen objects stay frozen; `gc.unfreeze` returns them)."""
        self.active = False

    def connection_closed(self) -> None:
        """Count one closed station connection (its objects are a cycle, frozen if it was old)."""
        self.closed_since_full += 1
        self.last_close_s = time.monotonic()

    def growth_threshold(self) -> float:
        """The frozen objects above which the growth rule fires."""
        return self.live_after_full + self.growth_factor * max(self.live_after_full, self.floor_objects)

    def thaw_due(self) -> str | None:
        """Why a thaw is due now ("closed" or "growth"), or None; `why` then holds the rule's figures."""
        now = time.monotonic()
        if not self.active or now - self.last_thaw_s < self.min_interval_s:
            return None
        if self.closed_since_full >= self.thaw_after_closed:
            quiet_s = now - self.last_close_s
            if quiet_s >= self.settle_s or self.closed_since_full >= THAW_CLOSED_CAP * self.thaw_after_closed:
                self.why = (f"{self.closed_since_full} connections closed since the last full collection "
                            f"(>= {self.thaw_after_closed}), the last {quiet_s:.1f} s ago")
                return "closed"
        threshold = self.growth_threshold()
        if self.frozen_bound > threshold:
            self.frozen_bound = gc.get_freeze_count()  # exact, now that it may matter
            GC_FROZEN.set(self.frozen_bound)
            if self.frozen_bound > threshold:
                self.why = (f"{self.frozen_bound} frozen > {threshold:.0f} = {self.live_after_full} live "
                            f"after the last full collection + {self.growth_factor:g} x "
                            f"{max(self.live_after_full, self.floor_objects)}")
                return "growth"
        return None

    def thaw(self, reason: str = "asked") -> int:
        """Unfreeze, collect everything, freeze the survivors again; returns the objects freed. After
        a growth thaw, the growth factor backs off (it freed little) or resets (it freed garbage)."""
        started, started_cpu = time.perf_counter(), time.thread_time()
        frozen, live_before = gc.get_freeze_count(), self.live_after_full
        gc.unfreeze()
        if self.profile_garbage:
            collected = _collect_and_profile()
        else:
            collected = gc.collect()
        gc.freeze()
        self.live_after_full = self.frozen_bound = gc.get_freeze_count()
        cpu_s = time.thread_time() - started_cpu
        self.closed_since_full = 0
        self.last_thaw_s = time.monotonic()
        if reason == "growth":
            grown = max(frozen - live_before, 1)
            if collected < THAW_LITTLE * grown:  # the growth was alive: wait for twice as much
                self.growth_factor = min(2 * self.growth_factor, THAW_GROWTH_CAP * self.thaw_growth)
            else:
                self.growth_factor = self.thaw_growth
        GC_THAWS.labels(reason).inc()
        GC_THAW_COLLECTED.labels(reason).inc(collected)
        GC_THAW_CPU.labels(reason).inc(cpu_s)
        GC_FROZEN.set(self.live_after_full)
        GC_THAW_GROWTH.set(self.growth_factor)
        log.warning("gc thaw (%s: %s): %d frozen objects, %d freed, %d live; %.0f ms, %.0f ms CPU; growth "
                    "factor now %g", reason, self.why if reason != "asked" else "called", frozen, collected,
                    self.live_after_full, (time.perf_counter() - started) * 1000, cpu_s * 1000,
                    self.growth_factor)
        self.why = ""
        return collected

    async def run(self, check_s: float = 1.0) -> None:
        """Check every `check_s` whether a thaw is due and run it (until cancelled); with
        `freeze_young_s`, freeze the new objects every `freeze_young_s` too (`freeze_young`)."""
        while True:
            await asyncio.sleep(min(check_s, self.freeze_young_s) if self.freeze_young_s > 0 else check_s)
            if self.freeze_young_s > 0:
                self.freeze_young()
            reason = self.thaw_due()
            if reason is not None:
                self.thaw(reason)


def _collect_and_profile() -> int:
    """`gc.collect()`, logging what it freed by type (coroutines and frames by code name, dicts by their
    first keys); the garbage is kept in `gc.garbage` to be counted, then freed by a second collection."""
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        collected = gc.collect()
    finally:
        gc.set_debug(0)
    kinds: Tally[str] = Tally()
    for obj in gc.garbage:
        name = type(obj).__qualname__
        if isinstance(obj, types.FrameType):
            name = f"frame {obj.f_code.co_qualname}"
        elif isinstance(obj, types.CoroutineType):
            name = f"coroutine {obj.__qualname__}"
        elif isinstance(obj, dict):
            name = "dict " + ",".join(map(str, list(obj)[:4]))[:60]
        elif isinstance(obj, types.FunctionType):
            name = f"function {obj.__qualname__}"
        kinds[name] += 1
    gc.garbage.clear()
    log.warning("gc thaw freed %d objects; by type: %s", collected, kinds.most_common(40))
    gc.collect()  # now unreachable again (no longer saved): freed
    return collected


REFREEZER = Refreezer()
