"""`StateReader.site_loads` (the site-power history's sample and /metrics): every live session's
power summed per site, read by script chunks and summed as they come, so a read of the whole fleet
holds no row per session (issue 14: 20,000 pipelined HMGETs and their rows were the longest callback
of the node sampling the site power, and started a young collection of their own)."""

from __future__ import annotations

import gc

from csms.api.reader import StateReader
from evfleet.clock import RealClock
from evfleet.keys import Keys
from evfleet.store.client import connect_redis

K = Keys("evfleet")
SESSIONS = 3000


async def test_a_fleet_read_sums_per_site_without_a_young_collection(redis_url: str) -> None:
    redis = connect_redis(redis_url)
    try:
        pipe = redis.pipeline(transaction=False)
        for i in range(SESSIONS):
            sid, ref = f"CP{i:05d}", f"CP{i:05d}:tx-{i}"
            pipe.hset(K.station(sid), mapping={"site_id": f"site-{i % 3}"})
            pipe.hset(K.transaction(ref), mapping={"station_id": sid, "power_w": str(1000.0 + i % 3)})
            pipe.sadd(K.active_for(sid), ref)
        # a station the caller's map does not know (looked up), a session whose hash names no station
        # (the default site) and one without a power reading yet (counted, 0 kW)
        pipe.hset(K.station("LATE"), mapping={"site_id": "site-9"})
        pipe.hset(K.transaction("LATE:t"), mapping={"station_id": "LATE", "power_w": "500"})
        pipe.sadd(K.active_for("LATE"), "LATE:t")
        pipe.hset(K.transaction("ANON:t"), mapping={"power_w": "250"})
        pipe.sadd(K.active_for("ANON"), "ANON:t")
        pipe.hset(K.transaction("CP00000:new"), mapping={"station_id": "CP00000"})
        pipe.sadd(K.active_for("CP00000"), "CP00000:new")
        await pipe.execute()
        reader = StateReader(redis, K, RealClock())
        site_of = {f"CP{i:05d}": f"site-{i % 3}" for i in range(SESSIONS)}
        await reader.site_loads(site_of)  # warm: the script loaded, the client's connection open

        young = []
        threshold = gc.get_threshold()
        gc.collect()
        gc.callbacks.append(lambda phase, info: young.append(info) if phase == "start" else None)
        gc.set_threshold(2000, *threshold[1:])  # a row per session (3,000) would cross it
        try:
            loads = await reader.site_loads(site_of)
        finally:
            gc.set_threshold(*threshold)
            gc.callbacks.pop()
        assert young == []
        assert {site: (round(kw, 3), n) for site, (kw, n) in loads.items()} == {
            "site-0": (1000.0, 1001), "site-1": (1001.0, 1000), "site-2": (1002.0, 1000),
            "site-9": (0.5, 1), "default": (0.25, 1)}
    finally:
        await redis.aclose()
