"""The lease loops end when cancelled even if a Redis call swallows the cancellation (redis-py on
Python 3.11, `evfleet.tasks`): otherwise the liveness refresh outlived its stopped node and failed
against the closed Redis (a traceback at every such shutdown, the CI's
`test_cli_with_embedded_redis_stops_cleanly_on_group_signal`)."""

from __future__ import annotations

import asyncio

import pytest

from csms.smart_charging import balance, leases
from evfleet.store.memory import InMemoryStateStore
from tests.loop.test_service_unit import SITE, FixedClock, Stations, _service


class SwallowingStore(InMemoryStateStore):
    """A store whose liveness refresh swallows a cancellation that lands in it, as redis-py's
    `wait_for` does when the reply arrives with the cancel."""

    def __init__(self) -> None:
        super().__init__()
        self.refreshes = 0

    async def refresh_alive(self, node_id: str, token: str, ttl_ms: int) -> bool:
        self.refreshes += 1
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            pass  # swallowed: the task carries on, only `cancelling()` remembers
        return await super().refresh_alive(node_id, token, ttl_ms)

    async def live_nodes(self) -> dict[str, str]:
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            pass
        return await super().live_nodes()


@pytest.mark.parametrize("loop_name", ["alive_loop", "lease_loops", "balance_loop"])
async def test_lease_loops_end_when_a_refresh_swallows_the_cancellation(loop_name: str) -> None:
    clock, store = FixedClock(), SwallowingStore()
    store.sites[SITE] = {"limit_kw": "20"}
    svc = _service(store, Stations(clock, 20_000.0), clock)
    svc.liveness.refresh_s = 0.0  # refresh back to back: a cancel lands inside a refresh
    await leases.ensure_alive(svc)
    svc.balance_s = 0.001  # balance back to back as well
    loop = getattr(balance, loop_name) if loop_name == "balance_loop" else getattr(leases, loop_name)
    task = asyncio.create_task(loop(svc))
    await asyncio.sleep(0.12)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=1.0)
    refreshes = store.refreshes
    if not done:  # the loop went on: stop it for good before failing
        for _ in range(50):
            task.cancel()
            await asyncio.sleep(0.01)
    assert done, f"{loop_name} still running 1 s after its cancel ({refreshes} refreshes)"
    assert task.cancelled()
