"""A node's smart-charging liveness is refreshed on a connection of its own
(`evfleet.store.client.own_connection`), so a refresh does not wait for the node's shared Redis pool.
Issue 14: as 20,000 stations closed, a refresh waited 4.6-10.9 s for the shared pool, the liveness key
lapsed and the node lost its sites (real Redis; the shared pool here is one connection held by a
blocking read)."""

from __future__ import annotations

import asyncio
import time

from csms.store.port_redis import RedisStateStore
from evfleet.keys import Keys
from evfleet.store.client import connect_redis, own_connection

K = Keys("evfleet")


async def test_a_refresh_does_not_wait_for_the_shared_pool(redis_url: str) -> None:
    shared = connect_redis(redis_url, max_connections=1)
    alive = own_connection(shared)
    try:
        store = RedisStateStore(shared, K, alive)
        await store.announce_alive("node-1", "node-1", 10_000)
        busy = asyncio.create_task(shared.blpop(["nothing-comes"], timeout=2))  # holds the one connection
        await asyncio.sleep(0.2)
        started = time.monotonic()
        assert await asyncio.wait_for(store.refresh_alive("node-1", "node-1", 10_000), 1.5)
        assert time.monotonic() - started < 1.0
        assert await alive.pttl(K.node_alive("node-1")) > 9_000
        await busy
    finally:
        await alive.aclose()
        await shared.aclose()
