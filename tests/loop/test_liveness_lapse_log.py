"""A node whose smart-charging liveness lapsed says why it may have: how long before the refresh
that found the key gone it was last extended, and how long that refresh took (issue 14: in
20,000-station harness runs a node's liveness lapsed during the connect wave, moving the 20,000-EVSE
site and its start-up work into the measured window, while no event-loop stall over 0.9 s was
logged: a long round trip, not a stall)."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from csms.smart_charging import leases
from evfleet.store.memory import InMemoryStateStore
from tests.loop.test_service_unit import FixedClock, Stations, _service


async def test_a_lapse_names_the_gap_and_the_round_trip(caplog: pytest.LogCaptureFixture) -> None:
    clock, store = FixedClock(), InMemoryStateStore()
    svc = _service(store, Stations(clock, 20_000.0), clock)
    await leases._refresh(svc, time.monotonic())  # announced: the key holds the node's token
    await asyncio.sleep(0.3)
    store.alive.clear()  # the key expired

    async def slow_refresh(node_id: str, token: str, ttl_ms: int) -> bool:
        await asyncio.sleep(0.2)  # a round trip waiting for Redis or a pool connection
        return False

    store.refresh_alive = slow_refresh  # type: ignore[method-assign]
    with caplog.at_level(logging.WARNING, logger="csms.smart_charging.leases"):
        await leases._refresh(svc, time.monotonic())
    [lapse] = [r.getMessage() for r in caplog.records if "lapsed" in r.getMessage()]
    gap_s = float(lapse.split("last extended ")[1].split(" s")[0])
    took_s = float(lapse.split("which took ")[1].split(" s")[0])
    assert 0.25 <= gap_s < 5.0 and 0.15 <= took_s < 5.0, lapse
