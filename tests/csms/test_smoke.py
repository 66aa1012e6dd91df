from __future__ import annotations

from redis.asyncio import Redis

from tests.csms.helpers import RawStation


async def test_boot_stores_station(station: RawStation, redis: Redis) -> None:
    info = await redis.hgetall("evfleet:station:CP-1")
    assert info["vendor"] == "V1" and info["online"] == "1"
