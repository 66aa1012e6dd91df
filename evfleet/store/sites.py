"""Which stations belong to a site, read from the shared Redis state (one reader for every package)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from evfleet.keys import Keys


async def site_station_ids(redis: Redis, keys: Keys, site_id: str,
                           default_site: str = "default") -> list[str]:
    """Stations of a site: its station set, plus provisioned stations whose hash names the site."""
    members = {str(m) for m in await redis.smembers(keys.site_stations(site_id))}
    all_ids = sorted(str(m) for m in await redis.smembers(keys.stations()))
    if all_ids:
        pipe = redis.pipeline(transaction=False)
        for sid in all_ids:
            pipe.hget(keys.station(sid), "site_id")
        for sid, sid_site in zip(all_ids, await pipe.execute(), strict=True):
            if (sid_site or default_site) == site_id:
                members.add(sid)
    return sorted(members)
