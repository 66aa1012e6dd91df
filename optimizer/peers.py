"""Optimizer workers watch each other: a dead worker's sites are re-planned within seconds.

Every worker keeps `Keys.optimizer_alive(consumer)` alive (TTL `ALIVE_TTL_S`, renewed every
`HEARTBEAT_S` by a task of its own, so a long solve does not stop it). Every `WATCH_S` a worker
lists the consumer group; a consumer without that key is dead. One survivor (a `SET NX` on
`Keys.optimizer_rescue`) then takes its pending events (XCLAIM, acknowledged: the re-plan below
covers them), releases the site leases it held, removes it from the group and re-plans every site
(the dead worker may have acknowledged events whose plans it never wrote). A site is still planned by
one worker at a time: the lease decides.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from redis.exceptions import RedisError

from evfleet.keys import Keys

log = logging.getLogger(__name__)

ALIVE_TTL_S = 5
HEARTBEAT_S = 1.0
WATCH_S = 1.0
RESCUE_LOCK_S = 30

_RELEASE_OWNED = """
local released = 0
for i, key in ipairs(KEYS) do
  local holder = redis.call('GET', key)
  if holder and string.sub(holder, 1, string.len(ARGV[1])) == ARGV[1] then
    redis.call('DEL', key)
    released = released + 1
  end
end
return released
"""


async def keep_alive(redis: Any, keys: Keys, consumer: str) -> None:
    """Renew this worker's presence key until cancelled (then delete it: a clean stop is not a death)."""
    try:
        while True:
            await redis.set(keys.optimizer_alive(consumer), "1", ex=ALIVE_TTL_S)
            await asyncio.sleep(HEARTBEAT_S)
    finally:
        try:
            await asyncio.shield(redis.delete(keys.optimizer_alive(consumer)))
        except RedisError as err:
            log.info("presence key of %s not removed (it expires in %d s): %s", consumer, ALIVE_TTL_S, err)


async def dead_peers(redis: Any, keys: Keys, group: str, me: str) -> list[str]:
    """Consumers of the group other than `me` whose presence key is gone."""
    consumers = await redis.xinfo_consumers(keys.events(), group)
    names = [str(c["name"]) for c in consumers if str(c["name"]) != me]
    if not names:
        return []
    alive = await redis.mget([keys.optimizer_alive(n) for n in names])
    return [n for n, flag in zip(names, alive, strict=True) if flag is None]


async def rescue(redis: Any, keys: Keys, group: str, me: str, dead: str, sites: Iterable[str]) -> bool:
    """Take over `dead`'s pending events and leases; True if this worker did (the caller re-plans)."""
    if not await redis.set(keys.optimizer_rescue(dead), me, nx=True, ex=RESCUE_LOCK_S):
        return False
    pending = await redis.xpending_range(keys.events(), group, min="-", max="+", count=10_000,
                                         consumername=dead)
    ids = [p["message_id"] for p in pending]
    if ids:
        await redis.xclaim(keys.events(), group, me, min_idle_time=0, message_ids=ids, justid=True)
        await redis.xack(keys.events(), group, *ids)
    lease_keys = [keys.optimizer_lease(s) for s in sites]
    released = await redis.eval(_RELEASE_OWNED, len(lease_keys), *lease_keys, f"{dead}:") if lease_keys else 0
    await redis.xgroup_delconsumer(keys.events(), group, dead)
    log.warning("optimizer worker %s is gone: took %d pending events and %d site leases; re-planning",
                dead, len(ids), int(released))
    return True
