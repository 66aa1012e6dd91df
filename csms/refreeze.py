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

A thaw is one full collection (0.4-1.5 s of CPU at 10,000 connections, more wall time on a busy
machine), as rare as the disconnections that make it necessary.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time

from prometheus_client import Counter, Gauge

log = logging.getLogger(__name__)

GC_REFREEZES = Counter("evfleet_gc_refreezes", "Young-collection survivors moved to the permanent generation")
GC_THAWS = Counter("evfleet_gc_thaws", "Full collections of the frozen objects (unfreeze, collect, freeze)",
                   ["reason"])
GC_THAW_COLLECTED = Counter("evfleet_gc_thaw_collected_objects", "Objects the thaws' full collections freed")
GC_FROZEN = Gauge("evfleet_gc_frozen_objects", "Objects in the permanent generation (an upper bound between "
                  "exact counts: Refreezer.frozen_bound)")


THAW_MIN_INTERVAL_S = 60.0
"""At most one thaw a minute: a fleet that drops and reconnects at once (10,000 closes) does not
turn into back-to-back full collections (each 0.4-1.5 s of CPU at 2 million objects)."""
THAW_FLOOR_OBJECTS = 1_500_000
"""The growth rule counts at least this many live objects: a node that starts with 150,000 and takes
10,000 connections (+2.3 million objects, no garbage) is not collected in full on the way."""


class Refreezer:
    """A `gc.callbacks` hook that freezes the survivors of every young collection, and the thaw
    that bounds the garbage it may freeze (see the module docstring)."""

    def __init__(self) -> None:
        self.active = False
        self.installed = False
        self.thaw_growth = 2.0
        """Thaw when the frozen objects grew by this x the live objects of the last full collection
        (at least `THAW_FLOOR_OBJECTS`)."""
        self.thaw_after_closed = 1000
        """Thaw when this many connections closed since the last full collection."""
        self.live_after_full = 0
        """Frozen objects right after the last full collection (all live)."""
        self.closed_since_full = 0
        self.refreezes = 0
        self.min_interval_s = THAW_MIN_INTERVAL_S
        self.last_thaw_s = float("-inf")
        self.frozen_bound = 0
        """At least the frozen objects: the last exact count plus every survivor frozen since (frees
        are not subtracted). `gc.get_freeze_count` walks the whole permanent generation (tens of ms
        at 2 million objects), so it is only read when this bound reaches the thaw's threshold."""

    def __call__(self, phase: str, info: dict[str, int]) -> None:
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
        self.last_thaw_s = float("-inf")
        if not self.installed:
            gc.callbacks.append(self)
            self.installed = True
        self.active = True
        GC_FROZEN.set(self.live_after_full)

    def stop(self) -> None:
        """Stop freezing (the frozen objects stay frozen; `gc.unfreeze` returns them)."""
        self.active = False

    def connection_closed(self) -> None:
        """Count one closed station connection (its objects are a cycle, frozen if it was old)."""
        self.closed_since_full += 1

    def thaw_due(self) -> str | None:
        """Why a thaw is due now ("closed" or "growth"), or None."""
        if not self.active:
            return None
        if self.closed_since_full >= self.thaw_after_closed \
                and time.monotonic() - self.last_thaw_s >= self.min_interval_s:
            return "closed"
        if time.monotonic() - self.last_thaw_s < self.min_interval_s:
            return None
        threshold = self.live_after_full + self.thaw_growth * max(self.live_after_full, THAW_FLOOR_OBJECTS)
        if self.frozen_bound > threshold:
            self.frozen_bound = gc.get_freeze_count()  # exact, now that it may matter
            GC_FROZEN.set(self.frozen_bound)
            if self.frozen_bound > threshold:
                return "growth"
        return None

    def thaw(self, reason: str = "asked") -> int:
        """Unfreeze, collect everything, freeze the survivors again; returns the objects freed."""
        started, frozen = time.perf_counter(), gc.get_freeze_count()
        gc.unfreeze()
        collected = gc.collect()
        gc.freeze()
        self.live_after_full = self.frozen_bound = gc.get_freeze_count()
        self.closed_since_full = 0
        self.last_thaw_s = time.monotonic()
        GC_THAWS.labels(reason).inc()
        GC_THAW_COLLECTED.inc(collected)
        GC_FROZEN.set(self.live_after_full)
        log.warning("gc thaw (%s): %d frozen objects, %d freed, %d live; %.0f ms", reason, frozen, collected,
                 self.live_after_full, (time.perf_counter() - started) * 1000)
        return collected

    async def run(self, check_s: float = 1.0) -> None:
        """Check every `check_s` whether a thaw is due and run it (until cancelled)."""
        while True:
            await asyncio.sleep(check_s)
            reason = self.thaw_due()
            if reason is not None:
                self.thaw(reason)


REFREEZER = Refreezer()
