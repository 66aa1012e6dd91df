"""csms.refreeze: young-collection survivors go to the permanent generation; the thaw frees the
cyclic garbage frozen that way, so memory stays bounded (issue 14)."""

from __future__ import annotations

import gc

from csms.refreeze import REFREEZER
from csms.settings import CsmsSettings


class Cycle:
    """An object in a reference cycle with itself: only a collection frees it."""

    def __init__(self) -> None:
        self.me = self
        self.payload = [0] * 4


def test_the_defaults_refreeze_with_a_thaw_after_1000_closed_connections() -> None:
    s = CsmsSettings()
    assert s.gc_freeze and s.gc_refreeze and s.gc_thaw_after_closed == 1000 and s.gc_thaw_growth == 2.0


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
