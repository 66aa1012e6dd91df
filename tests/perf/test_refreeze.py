"""csms.refreeze: young-collection survivors go to the permanent generation; the thaw frees the
cyclic garbage frozen that way, so memory stays bounded (issue 14)."""

from __future__ import annotations

import asyncio
import gc
import logging

import pytest

from csms.refreeze import GC_THAW_COLLECTED, REFREEZER
from csms.runtime import GC_PAUSES, tune_gc
from csms.settings import CsmsSettings


class Cycle:
    """An object in a reference cycle with itself: only a collection frees it."""

    def __init__(self) -> None:
        self.me = self
        self.payload = [0] * 4


def test_the_defaults_refreeze_with_a_thaw_after_1000_closed_connections() -> None:
    s = CsmsSettings()
    assert s.gc_freeze and s.gc_refreeze and s.gc_thaw_after_closed == 1000 and s.gc_thaw_growth == 2.0
    assert s.gc_freeze_young_s == 1.0  # new objects frozen every second, not walked by young collections


def test_survivors_of_a_young_collection_are_frozen_and_refcounting_still_frees_them(refreezer: None) -> None:
    before = gc.get_freeze_count()
    kept = [[i] for i in range(20_000)]
    gc.collect(0)
    assert gc.get_freeze_count() >= before + 20_000  # survivors spliced out of generation 1
    assert gc.get_count()[1] >= 0 and len(gc.get_objects(generation=1)) < 1000
    del kept  # not a cycle: freed at once, and leaves the permanent generation
    assert gc.get_freeze_count() < before + 1000


def test_the_thaw_frees_cycles_frozen_while_they_were_alive(refreezer: None) -> None:
    base = gc.get_freeze_count()
    cycles = [Cycle() for _ in range(5_000)]
    gc.collect(0)
    del cycles  # now cyclic garbage, but frozen: no collection sees it
    gc.collect()
    assert gc.get_freeze_count() >= base + 5_000 * 2
    assert REFREEZER.thaw_due() is None  # far below the growth bound
    REFREEZER.thaw_growth = 0.001
    assert REFREEZER.thaw_due() == "growth"
    assert REFREEZER.thaw("growth") >= 5_000 * 2
    assert gc.get_freeze_count() < base + 500
    assert abs(REFREEZER.live_after_full - gc.get_freeze_count()) < 100
    cycles = [Cycle() for _ in range(5_000)]
    gc.collect(0)
    del cycles
    assert REFREEZER.thaw_due() is None  # due, but the last thaw was less than a minute ago
    REFREEZER.last_thaw_s -= REFREEZER.min_interval_s
    assert REFREEZER.thaw_due() == "growth"


def test_a_wave_of_closes_is_thawed_once_it_pauses_not_in_its_middle(refreezer: None) -> None:
    """A disconnection wave (a network blip, the load harness's end of run) is freed by one thaw after
    it: thawing at the 1,000th close left the rest of the wave frozen for a minute or more."""
    REFREEZER.min_interval_s = 0.0
    REFREEZER.thaw_after_closed = 10
    for _ in range(10):
        REFREEZER.connection_closed()
    assert REFREEZER.thaw_due() is None  # closes still arriving (the last one just now)
    REFREEZER.last_close_s -= REFREEZER.settle_s
    assert REFREEZER.thaw_due() == "closed"
    assert "10 connections closed" in REFREEZER.why
    for _ in range(30):  # a steady trickle never pauses: 4 x thaw_after_closed bound it
        REFREEZER.connection_closed()
    assert REFREEZER.thaw_due() == "closed"


def test_growth_found_alive_backs_off_and_growth_found_garbage_resets(
        refreezer: None, caplog: pytest.LogCaptureFixture) -> None:
    """A growth thaw that freed little (the growth was live state: a connection wave, transactions)
    doubles the growth the next needs, so a steady node is not collected in full again and again; one
    that freed garbage resets it, so frozen garbage stays bounded. Each thaw logs and counts its rule."""
    REFREEZER.min_interval_s = 0.0
    REFREEZER.thaw("asked")
    live = REFREEZER.live_after_full
    REFREEZER.floor_objects = 0
    REFREEZER.thaw_growth = 0.05
    kept = [[i] for i in range(live // 10)]  # +10 % live objects
    gc.collect(0)
    assert REFREEZER.thaw_due() == "growth"
    freed = GC_THAW_COLLECTED.labels("growth")._value.get()
    with caplog.at_level(logging.WARNING, logger="csms.refreeze"):
        assert REFREEZER.thaw("growth") < live // 40
    assert "gc thaw (growth: " in caplog.text and " frozen > " in caplog.text
    assert GC_THAW_COLLECTED.labels("growth")._value.get() >= freed
    assert REFREEZER.growth_factor == 0.1  # backed off
    kept += [[i] for i in range(REFREEZER.live_after_full // 14)]  # +7 %: under the doubled factor
    gc.collect(0)
    assert REFREEZER.thaw_due() is None
    cycles = [Cycle() for _ in range(REFREEZER.live_after_full // 10)]  # +20 % frozen, cyclic garbage
    gc.collect(0)
    del cycles
    assert REFREEZER.thaw_due() == "growth"
    assert REFREEZER.thaw("growth") >= REFREEZER.live_after_full // 10
    assert REFREEZER.growth_factor == 0.05  # it freed garbage: back to gc_thaw_growth
    del kept


def test_a_profiled_thaw_logs_what_it_freed_by_type_and_still_frees_it(
        refreezer: None, caplog: pytest.LogCaptureFixture) -> None:
    """`gc_profile_ms` > 0: a thaw names its garbage (to find what makes frozen cycles), and frees it."""
    base = gc.get_freeze_count()
    cycles = [Cycle() for _ in range(3_000)]
    gc.collect(0)
    del cycles
    REFREEZER.profile_garbage = True
    with caplog.at_level(logging.WARNING, logger="csms.refreeze"):
        assert REFREEZER.thaw() >= 3_000
    assert "('Cycle', 3000)" in caplog.text
    assert not gc.garbage and gc.get_freeze_count() < base + 500


async def test_freeze_young_moves_new_objects_out_without_a_collection(refreezer: None) -> None:
    """`gc_freeze_young_s`: the refreezer's loop freezes what was made since its last tick without a
    young collection (which would walk it all: an event-loop stall at 20,000 stations); what is not a
    cycle still frees itself, and a frozen cycle is freed by the thaw."""
    thresholds = gc.get_threshold()
    tune_gc((50_000, 20, 100))  # a node's: the objects below start no collection of their own
    assert GC_PAUSES in gc.callbacks
    young_collections = gc.get_stats()[0]["collections"]
    base = gc.get_freeze_count()
    REFREEZER.freeze_young_s = 0.05
    loop = asyncio.create_task(REFREEZER.run())
    try:
        kept = [[i] for i in range(20_000)]
        cycles = [Cycle() for _ in range(2_000)]
        await asyncio.sleep(0.2)
        assert REFREEZER.young_freezes >= 1
        assert gc.get_freeze_count() >= base + 20_000 + 2_000 * 2
        assert len(gc.get_objects(generation=0)) < 1000 and gc.get_count()[0] < 1000
        assert gc.get_stats()[0]["collections"] == young_collections  # frozen, not collected
        del kept  # not a cycle: freed at once, out of the permanent generation
        assert gc.get_freeze_count() < base + 2_000 * 2 + 1000
        del cycles  # frozen cyclic garbage: the thaw frees it
        assert REFREEZER.thaw() >= 2_000 * 2
    finally:
        loop.cancel()
        gc.set_threshold(*thresholds)
    assert gc.get_freeze_count() < base + 1000
