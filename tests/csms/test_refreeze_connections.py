"""A csms node with csms.refreeze on: station connections that come and go are frozen cycles until
the thaw, which frees them, so the node's object count returns (issue 14)."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable, Callable

from csms.app import running_csms
from csms.refreeze import GC_THAWS, REFREEZER
from tests.csms.conftest import PASSWORD, make_settings
from tests.csms.helpers import RawStation

BOOT = {"reason": "PowerUp", "chargingStation": {"model": "M1", "vendorName": "V1"}}


async def _round(url: str, count: int) -> None:
    stations = [await RawStation.connect(url, f"CP-{i}", PASSWORD) for i in range(count)]
    for st in stations:
        await st.ok("BootNotification", BOOT)
        await st.ok("Heartbeat", {})
    await asyncio.sleep(0.1)
    gc.collect(0)  # the connections survive a young collection: frozen
    for st in stations:
        await st.close()


async def test_connections_that_come_and_go_leave_no_frozen_garbage_after_the_thaw(
        redis_url: str, provision: Callable[..., Awaitable[None]], refreezer: None) -> None:
    """Each closed connection is a frozen cycle of ~100 objects until the thaw that
    `thaw_after_closed` closed connections trigger; after it the frozen count is back where it was."""
    count = 60
    async with running_csms(make_settings(redis_url), services=[]) as node:
        for i in range(count):
            await provision(f"CP-{i}", site_id="depot")
        await _round(node.url, count)  # warms every lazy cache of the node
        await asyncio.sleep(0.5)
        REFREEZER.thaw()
        REFREEZER.min_interval_s = 0.0
        base = gc.get_freeze_count()
        REFREEZER.thaw_after_closed = 10 * count  # no thaw yet
        for _ in range(3):
            await _round(node.url, count)
        await asyncio.sleep(0.5)
        gc.collect()
        leaked = gc.get_freeze_count() - base
        assert leaked >= 3 * count * 50, leaked  # closed connections stay frozen (the hazard is real)
        assert REFREEZER.closed_since_full == 3 * count and REFREEZER.thaw_due() is None
        REFREEZER.thaw_after_closed = 3 * count
        assert REFREEZER.thaw_due() is None  # the closes have not paused for settle_s yet
        REFREEZER.last_close_s -= REFREEZER.settle_s
        assert REFREEZER.thaw_due() == "closed"
        thaws = GC_THAWS.labels("closed")._value.get()
        checker = asyncio.create_task(REFREEZER.run(check_s=0.05))
        try:
            while GC_THAWS.labels("closed")._value.get() == thaws:
                await asyncio.sleep(0.05)
        finally:
            checker.cancel()
        assert REFREEZER.closed_since_full == 0
        left = gc.get_freeze_count() - base
        # the thaw freed them: the count returns (what is left is the node's in-flight work and caches,
        # a few hundred objects whatever the number of rounds)
        assert left < min(leaked // 8, 2_000), (leaked, left)




async def test_a_node_with_gc_freeze_refreezes_until_it_stops(redis_url: str) -> None:
    """`evfleet csms` (run_csms) starts the refreezer after its start-up freeze and stops it on exit."""
    from csms.app import run_csms

    thresholds = gc.get_threshold()
    stop = asyncio.Event()
    node = asyncio.create_task(run_csms(make_settings(redis_url, run_services=False, gc_thaw_after_closed=7),
                                        None, stop))
    try:
        for _ in range(400):
            if REFREEZER.active:
                break
            await asyncio.sleep(0.05)
        assert REFREEZER.active and REFREEZER.thaw_after_closed == 7
        assert REFREEZER.live_after_full > 1000 and REFREEZER in gc.callbacks
    finally:
        stop.set()
        await node
        gc.set_threshold(*thresholds)
        gc.unfreeze()
    assert not REFREEZER.active
