"""What young garbage collections walk, free and keep: a debugging aid (issue 14, `gc_census`).

Public names: `GcCensus`, `GC_CENSUS`, `label`.

A young (generation-0) collection runs when the *net* count of new container objects (allocations
less deallocations) passes the threshold (50,000 on a node). So what fills generation 0 is either
kept (caches, per-message state), still in flight, or reference cycles that only the collector frees.
For the next `remaining` young collections, `GcCensus` logs (one warning each):

- `walked`: every object of generation 0 at the start, by `label`;
- `freed`: the cyclic garbage the collection found, by label (it sets `gc.DEBUG_SAVEALL` for the
  collection, counts `gc.garbage`, then empties it: those objects are then frozen cyclic garbage
  that the next thaw frees);
- `survived`: what moved to the older generation (with the refreezer on, only this collection's
  survivors);
- with tracemalloc tracing (`PYTHONTRACEMALLOC=N`), the lines that allocated the garbage and the
  survivors;
- the frozen objects before it (`gc.get_freeze_count`): their growth between two censuses is what
  stayed alive;
- the stack that started the collection (what allocated the object that crossed the threshold).

Generation 0 holds more than the threshold: an object that replaced a frozen one (a station's
receive chain, renewed by every message; a whole-site pass's records) counts net 0 but is walked.

It must run before the refreezer's hook (which freezes the survivors): `install` puts it first.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import time
import traceback
import tracemalloc
import types
from collections import Counter as Tally
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

TOP = 30
"""Labels (and allocation sites) logged per histogram."""


def label(obj: Any) -> str:
    """A short name for what `obj` is: its type, and for functions, coroutines, frames, tasks, cells,
    bound methods and dicts what they belong to (by `type`, never `isinstance`: a dead weak proxy's
    `__class__` raises)."""
    kind = type(obj)
    if kind is dict:
        return "dict " + ",".join(map(str, list(obj)[:4]))[:60]
    if kind is list or kind is tuple:
        return f"{kind.__name__}[{min(len(obj), 9)}]"
    if kind is types.FunctionType:
        return f"function {obj.__qualname__}"
    if kind is types.FrameType:
        return f"frame {obj.f_code.co_qualname}"
    if kind in (types.CoroutineType, types.GeneratorType, types.AsyncGeneratorType):
        return f"{kind.__name__} {obj.__qualname__}"
    if kind is types.MethodType:
        return f"method {getattr(obj.__func__, '__qualname__', '?')}"
    if kind is types.CellType:
        try:
            return f"cell {type(obj.cell_contents).__qualname__}"
        except ValueError:
            return "cell (empty)"
    if kind is types.TracebackType:
        return f"traceback {obj.tb_frame.f_code.co_qualname}"
    if issubclass(kind, BaseException):
        return f"exception {kind.__qualname__}"
    if issubclass(kind, asyncio.Task):
        return f"Task {getattr(obj.get_coro(), '__qualname__', '?')}"
    return f"{kind.__module__}.{kind.__qualname__}"


def file_name(path: str) -> str:
    """The last component of a source path (how a census names an allocating file)."""
    return path.rsplit("/", 1)[-1]


def allocation_sites(objs: list[Any], top: int = TOP,
                     short: Callable[[str], str] = file_name) -> list[tuple[str, int]]:
    """The allocating lines of `objs` (innermost first, 3 frames, files named by `short`), counted,
    the `top` most common; [] when tracemalloc does not trace."""
    if not tracemalloc.is_tracing():
        return []
    sites: Tally[str] = Tally()
    for obj in objs:
        tb = tracemalloc.get_object_traceback(obj)
        if tb is None:
            sites["?"] += 1
            continue
        frames = [f"{short(f.filename)}:{f.lineno}" for f in tb]
        sites[" < ".join(frames[-1:-4:-1])] += 1
    return sites.most_common(top)


class GcCensus:
    """A `gc.callbacks` hook that logs a census of the next `remaining` young collections."""

    def __init__(self) -> None:
        self.remaining = 0
        self.installed = False
        self.walked: Tally[str] = Tally()
        self.walked_sites: list[tuple[str, int]] = []
        self.frozen_before = 0
        self.censuses = 0
        self.stack = ""
        self.after_s = 0.0

    def install(self, count: int, after_s: float = 0.0) -> None:
        """Census the next `count` young collections from `after_s` seconds on (first in
        `gc.callbacks`)."""
        self.remaining = count
        self.after_s = time.monotonic() + after_s
        if not self.installed:
            gc.callbacks.insert(0, self)
            self.installed = True

    def uninstall(self) -> None:
        """Remove the hook."""
        if self.installed:
            gc.callbacks.remove(self)
            self.installed = False

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        """The hook: a histogram of generation 0 at the start, of the garbage and the survivors at
        the stop (a census that fails is logged and ends the census)."""
        if self.remaining <= 0 or int(info.get("generation", 0)) != 0:
            return
        if time.monotonic() < self.after_s:
            return
        try:
            self._census(phase, info)
        except Exception:
            gc.set_debug(gc.get_debug() & ~gc.DEBUG_SAVEALL)
            gc.garbage.clear()
            self.remaining = 0
            log.exception("gc census failed; no more")

    def _census(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            young = gc.get_objects(generation=0)
            self.walked = Tally(map(label, young))
            self.walked_sites = allocation_sites(young)
            self.stack = " < ".join(f"{f.name}:{f.lineno}" for f in
                                    reversed(traceback.extract_stack(sys._getframe(2))[-8:]))
            del young
            self.frozen_before = gc.get_freeze_count()
            gc.set_debug(gc.get_debug() | gc.DEBUG_SAVEALL)
            return
        gc.set_debug(gc.get_debug() & ~gc.DEBUG_SAVEALL)
        self.remaining -= 1
        self.censuses += 1
        garbage = list(gc.garbage)
        gc.garbage.clear()
        garbage_ids = {id(obj) for obj in garbage}
        survivors = [obj for obj in gc.get_objects(generation=1) if id(obj) not in garbage_ids]
        log.warning(
            "gc census %d: %d walked, %d freed, %d survived, %d frozen before; walked %s; freed %s; "
            "survived %s; freed allocated at %s; survivors allocated at %s; walked allocated at %s; "
            "started at %s", self.censuses, sum(self.walked.values()), len(garbage), len(survivors),
            self.frozen_before, self.walked.most_common(TOP), Tally(map(label, garbage)).most_common(TOP),
            Tally(map(label, survivors)).most_common(TOP), allocation_sites(garbage),
            allocation_sites(survivors), self.walked_sites, self.stack)
        del garbage, survivors


GC_CENSUS = GcCensus()
