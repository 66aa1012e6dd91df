"""Run a once-per-deployment service on exactly one csms node, under a lease in Redis.

`run_singleton` takes `Keys.service_lease(name)` with `SET NX PX`, renews it every third of its TTL
while the service runs, and cancels the service as soon as a renewal finds the lease gone or taken
(a node that stalled past the TTL must stop, since another node may have started). Nodes that do
not hold the lease retry every third of the TTL, so a dead holder is replaced within about
1.3 x TTL. A clean stop releases the lease at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from evfleet.store.owned import DEL_IF_OWNED, PEXPIRE_IF_OWNED
from evfleet.tasks import raise_if_cancelling, stop_tasks

log = logging.getLogger(__name__)


class LeaseLost(RuntimeError):
    """The lease ran out or was taken while the service ran."""


async def run_singleton(redis: Redis, key: str, holder: str, ttl_s: float,
                        service: Callable[[], Awaitable[None]]) -> None:
    """Run `service()` on this node only while it holds the lease `key` (until cancelled)."""
    ttl_ms = int(ttl_s * 1000)
    while True:
        taken = await redis.set(key, holder, nx=True, px=ttl_ms)
        raise_if_cancelling()  # redis-py sends with wait_for: evfleet.tasks
        if taken:
            log.info("lease %s taken by %s", key, holder)
            try:
                await _run_while_held(redis, key, holder, ttl_ms, service)
            except LeaseLost:
                log.warning("lease %s lost by %s: service stopped here", key, holder)
                continue
            finally:
                await _release(redis, key, holder)
            return
        await asyncio.sleep(ttl_s / 3)


async def _run_while_held(redis: Redis, key: str, holder: str, ttl_ms: int,
                          service: Callable[[], Awaitable[None]]) -> None:
    task = asyncio.create_task(_as_coroutine(service), name=f"singleton:{key}")
    try:
        while not task.done():
            done, _ = await asyncio.wait({task}, timeout=ttl_ms / 3000)
            if done:
                break
            renewed = await redis.eval(PEXPIRE_IF_OWNED, 1, key, holder, str(ttl_ms))
            raise_if_cancelling()
            if not renewed:
                raise LeaseLost(key)
        await task
    finally:
        if not task.done():  # bounded, even if the service swallows a cancellation (evfleet.tasks)
            await stop_tasks([task], what=f"service under lease {key}")


async def _as_coroutine(service: Callable[[], Awaitable[None]]) -> None:
    await service()


async def _release(redis: Redis, key: str, holder: str) -> None:
    try:
        await asyncio.shield(redis.eval(DEL_IF_OWNED, 1, key, holder))
    except RedisError as err:
        log.info("lease %s not released (it expires by itself): %s", key, err)
