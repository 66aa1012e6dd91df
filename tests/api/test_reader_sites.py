"""`StateReader.sites()` of every site: each station counted at the site its hash names (read by
one Lua script per chunk, not one HGET each), and each site's plan re-parsed only when its text
changed: a new plan, a removed plan and a default-site station show at once."""

from __future__ import annotations

import json

from csms.api.reader import StateReader
from evfleet.clock import RealClock
from evfleet.keys import Keys
from evfleet.store.client import connect_redis

K = Keys("evfleet")


async def test_every_sites_document_follows_its_stations_and_its_latest_plan(redis_url: str) -> None:
    redis = connect_redis(redis_url)
    try:
        await redis.sadd(K.sites(), "north", "south")
        for sid, site in (("CP-1", "north"), ("CP-2", "north"), ("CP-3", "south"), ("CP-4", "")):
            await redis.sadd(K.stations(), sid)
            await redis.hset(K.station(sid), mapping={"site_id": site, "online": "1"})
        await redis.sadd(K.stations(), "GHOST")  # listed, no hash: the default site, as before
        reader = StateReader(redis, K, RealClock(), site_cache_s=0.0)

        async def docs() -> dict[str, dict]:
            return {d["site_id"]: d for d in await reader.sites()}

        first = await docs()
        assert {s: d["stations"] for s, d in first.items()} == {"default": 2, "north": 2, "south": 1}
        assert first["north"]["optimizer"] is None
        plan = {"plan_id": "p1", "start": "2026-12-07T03:00:00+00:00", "step_s": 900, "planned_kw": [5.0]}
        await redis.set(K.site_plan("north"), json.dumps(plan))
        assert (await docs())["north"]["optimizer"]["plan_id"] == "p1"
        assert (await docs())["north"]["optimizer"]["plan_id"] == "p1"  # the same text: the same document
        await redis.set(K.site_plan("north"), json.dumps({**plan, "plan_id": "p2"}))
        assert (await docs())["north"]["optimizer"]["plan_id"] == "p2"
        await redis.delete(K.site_plan("north"))
        assert (await docs())["north"]["optimizer"] is None
        await redis.hset(K.station("CP-2"), "site_id", "south")
        assert (await docs())["south"]["stations"] == 2
    finally:
        await redis.aclose()
