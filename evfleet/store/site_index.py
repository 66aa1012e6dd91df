"""The per-site station index `Keys.site_stations(site)` and the one way to change a station's site.

Invariant kept by every writer (`change_site`, `unregister_station`): **a station whose hash names
site S (an empty or missing `site_id` names the deployment's default site) is a member of S's
index**. The index may transiently hold a member whose hash names another site (or no longer
exists); readers (`evfleet.store.sites.site_station_ids`) keep only the members whose hash names
the site, so every station is counted at exactly the site its hash names.

How the invariant holds:

- One Redis server (every layout): WATCH the station hash, read its `site_id`, then one MULTI
  writes the hash, SREMs the old site's index and SADDs the new one's. Any write to the station
  hash in between aborts and retries, so the hash and both indexes change together.
- Redis Cluster (station and sites in different slots, no cross-slot MULTI): the site change
  of one station is serialised by a lock in the station's slot (`Keys.station_site_lock`), and
  ordered so that no instant has the hash naming a site whose index lacks the station:
  (1) SADD the new site's index; (2) one MULTI on the station slot reads the old `site_id` and
  writes the new one; (3) SREM the old site's index unless the hash names the old site again.
  A crash between the steps leaves an extra member (the reader drops it), never a missing one.
  Only a lock holder stalled past `SITE_LOCK_TTL_MS` (30 s) while a second writer moves the same
  station back could leave a miss; the reader's periodic check (`check_site_index`, every
  `INDEX_CHECK_S`) adds any station missing from its index and logs it.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from typing import Any

from redis.exceptions import WatchError

from evfleet.keys import Keys
from evfleet.store.client import as_str, is_cluster
from evfleet.store.multi import SlotMulti
from evfleet.store.owned import DEL_IF_OWNED

log = logging.getLogger(__name__)

WATCH_RETRIES = 50
"""Attempts of the WATCH/MULTI site change on one server (a station's own writes abort one)."""
SITE_LOCK_TTL_MS = 30_000
"""Lifetime of the per-station site-change lock on a cluster (a change takes a few round trips)."""
SITE_LOCK_WAIT_S = 10.0
"""How long a cluster site change waits for another change of the same station."""

QueueOn = Callable[[str], Any]
"""`on(key)`: the transactional pipeline to queue a command on `key` in."""


class UnknownStation(LookupError):
    """`change_site(..., existing=True)` of a station whose hash does not exist (removed meanwhile)."""


class SiteChangeBusy(RuntimeError):
    """Another site change of the same station held its lock for longer than `SITE_LOCK_WAIT_S`."""


async def change_site(redis: Any, keys: Keys, station_id: str, site_id: str | None, *,
                      default_site: str = "default", station: Callable[[Any], None] | None = None,
                      after: Callable[[QueueOn, str], None] | None = None,
                      existing: bool = False) -> tuple[str, str]:
    """Set the site of `station_id` (None: keep its site; `default_site` if it has none) and keep
    the site indexes with it (module docstring). `station(pipe)` queues other writes of the
    station's slot in the same MULTI; `after(on, site)` queues writes of other keys (site hash,
    registries) after it. `existing`: raise `UnknownStation` instead of creating the hash of a
    station removed meanwhile. Returns (the site before, empty if none; the site now)."""
    if not is_cluster(redis):
        return await _change_watched(redis, keys, station_id, site_id, default_site, station, after, existing)
    async with _site_lock(redis, keys, station_id):
        return await _change_ordered(redis, keys, station_id, site_id, default_site, station, after, existing)


async def unregister_station(redis: Any, keys: Keys, station_id: str, station: Callable[[Any], None]) -> str:
    """Delete a station (`station(pipe)` queues the deletes of its slot) and take it out of its
    site's index and the `stations` registry, under the same WATCH or lock as `change_site`.
    Returns the site it was on (empty if none)."""
    skey = keys.station(station_id)
    if not is_cluster(redis):
        for _ in range(WATCH_RETRIES):
            async with redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(skey)
                    site = as_str(await pipe.hget(skey, "site_id"))
                    pipe.multi()
                    pipe.srem(keys.stations(), station_id)
                    station(pipe)
                    if site:
                        pipe.srem(keys.site_stations(site), station_id)
                    await pipe.execute()
                    return site
                except WatchError:
                    continue
        raise SiteChangeBusy(f"station {station_id!r} changed {WATCH_RETRIES} times during its removal")
    async with _site_lock(redis, keys, station_id):
        multi = SlotMulti(redis)  # registry first: a crash leaves an unlisted station, not a listed ghost
        multi.on(keys.stations()).srem(keys.stations(), station_id)
        multi.then()
        pipe = multi.on(skey)
        pipe.hget(skey, "site_id")
        station(pipe)
        replies = await multi.execute()
        site = as_str(replies[1][0])
        if site:  # after the hash is gone: the index never lacks a station whose hash names the site
            await redis.srem(keys.site_stations(site), station_id)
        return site


async def _change_watched(redis: Any, keys: Keys, station_id: str, site_id: str | None, default_site: str,
                          station: Callable[[Any], None] | None,
                          after: Callable[[QueueOn, str], None] | None, existing: bool) -> tuple[str, str]:
    skey = keys.station(station_id)
    for _ in range(WATCH_RETRIES):
        async with redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(skey)
                if existing and not await pipe.exists(skey):
                    raise UnknownStation(station_id)
                old = as_str(await pipe.hget(skey, "site_id"))
                site = site_id or old or default_site
                pipe.multi()
                if station is not None:
                    station(pipe)
                pipe.hset(skey, "site_id", site)
                if old and old != site:
                    pipe.srem(keys.site_stations(old), station_id)
                pipe.sadd(keys.site_stations(site), station_id)
                if after is not None:
                    after(lambda _key: pipe, site)
                await pipe.execute()
                return old, site
            except WatchError:
                continue
    raise SiteChangeBusy(f"station {station_id!r} changed {WATCH_RETRIES} times during a site change")


async def _change_ordered(redis: Any, keys: Keys, station_id: str, site_id: str | None, default_site: str,
                          station: Callable[[Any], None] | None,
                          after: Callable[[QueueOn, str], None] | None, existing: bool) -> tuple[str, str]:
    skey = keys.station(station_id)
    if existing and not await redis.exists(skey):  # stable: removals hold the lock too
        raise UnknownStation(station_id)
    current = as_str(await redis.hget(skey, "site_id"))  # stable: site changes hold the lock
    site = site_id or current or default_site
    await redis.sadd(keys.site_stations(site), station_id)  # (1) index before the hash names the site
    multi = SlotMulti(redis)  # (2) the station's slot: old site read in the MULTI that writes the new
    pipe = multi.on(skey)
    pipe.hget(skey, "site_id")
    if station is not None:
        station(pipe)
    pipe.hset(skey, "site_id", site)
    if after is not None:
        after(multi.on, site)
    replies = await multi.execute()
    old = as_str(replies[0][0])
    if old and old != site:  # (3) the old index, once the hash names the new site
        await redis.srem(keys.site_stations(old), station_id)
        if as_str(await redis.hget(skey, "site_id")) == old:  # a lock lost to a stall: put it back
            await redis.sadd(keys.site_stations(old), station_id)
            log.warning("station %s moved back to site %s during a site change; index kept", station_id, old)
    return old, site


class _site_lock:  # noqa: N801 (used as `async with _site_lock(...)`)
    """The per-station site-change lock (cluster only; SET NX PX, released only by its holder)."""

    def __init__(self, redis: Any, keys: Keys, station_id: str) -> None:
        self._redis, self._key, self._token = redis, keys.station_site_lock(station_id), uuid.uuid4().hex
        self._station_id = station_id

    async def __aenter__(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + SITE_LOCK_WAIT_S
        while not await self._redis.set(self._key, self._token, nx=True, px=SITE_LOCK_TTL_MS):
            if loop.time() > deadline:
                raise SiteChangeBusy(f"another site change of station {self._station_id!r} holds its lock")
            await asyncio.sleep(0.02)

    async def __aexit__(self, *exc: object) -> None:
        await self._redis.eval(DEL_IF_OWNED, 1, self._key, self._token)
