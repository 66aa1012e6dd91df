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
from evfleet.tasks import raise_if_cancelling

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
            raise_if_cancelling()  # redis-py sends with wait_for: evfleet.tasks
            await asyncio.sleep(HEARTBEAT_S)
    finally:
        try:
            await asyncio.shield(redis.delete(keys.optimizer_alive(consumer)))
        except RedisError as err:
            log.info("presence key of %s not removed (it expires in %d s): %s", consumer, ALIVE_TTL_S, err)


async def dead_peers(redis: Any, keys: Keys, group: str, me: str) -> list[str]:
    """Consumers of the group other than `me` whose presence key is gone."""
    names: list[str] = []
    for stream in keys.event_streams():  # a worker reads every shard, so it is in every shard's group
        for c in await redis.xinfo_consumers(stream, group):
            if str(c["name"]) != me and str(c["name"]) not in names:
                names.append(str(c["name"]))
    if not names:
        return []
    pipe = redis.pipeline(transaction=False)  # GETs, not MGET: the keys are in several cluster slots
    for n in names:
        pipe.get(keys.optimizer_alive(n))
    alive = await pipe.execute()
    return [n for n, flag in zip(names, alive, strict=True) if flag is None]


async def rescue(redis: Any, keys: Keys, group: str, me: str, dead: str, sites: Iterable[str]) -> bool:
    """Take over `dead`'s pending events and leases; True if this worker did (the caller re-plans)."""
    if not await redis.set(keys.optimizer_rescue(dead), me, nx=True, ex=RESCUE_LOCK_S):
        return False
    taken = 0
    for stream in keys.event_streams():
        pending = await redis.xpending_range(stream, group, min="-", max="+", count=10_000,
                                             consumername=dead)
        ids = [p["message_id"] for p in pending]
        if ids:
            await redis.xclaim(stream, group, me, min_idle_time=0, message_ids=ids, justid=True)
            await redis.xack(stream, group, *ids)
        taken += len(ids)
    lease_keys = [keys.optimizer_lease(s) for s in sites]
    released = 0
    if lease_keys and not keys.shards:
        released = await redis.eval(_RELEASE_OWNED, len(lease_keys), *lease_keys, f"{dead}:")
    else:  # Redis Cluster: one script per lease key (each its own slot)
        for key in lease_keys:
            released += int(await redis.eval(_RELEASE_OWNED, 1, key, f"{dead}:"))
    for stream in keys.event_streams():
        await redis.xgroup_delconsumer(stream, group, dead)
    log.warning("optimizer worker %s is gone: took %d pending events and %d site leases; re-planning",
                dead, taken, int(released))
    return True
