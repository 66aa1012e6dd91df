"""Two optimizer worker processes on one Redis (issue 14): when the worker that took a site's event
is SIGKILLed before it wrote the plan, the other plans the site within 10 s."""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import httpx
from redis.asyncio import Redis

from csms.store.provisioning import set_site_limit
from evfleet.keys import Keys
from tests.scale.topology import topology
from tests.waiting import until

KEYS = Keys()
GROUP = "optimizer"


async def _plan_limit(redis: Redis, site: str) -> float | None:
    raw = await redis.get(KEYS.site_plan(site))
    return float(json.loads(raw)["limit_kw"]) if raw else None


async def _delivered(redis: Redis, entry_id: str) -> bool:
    groups = await redis.xinfo_groups(KEYS.events())
    last = next(str(g["last-delivered-id"]) for g in groups if str(g["name"]) == GROUP)
    return tuple(map(int, last.split("-"))) >= tuple(map(int, entry_id.split("-")))


async def test_a_dead_workers_site_is_planned_by_the_other_within_10_s(redis_url: str,
                                                                        tmp_path: Path) -> None:
    redis = Redis.from_url(redis_url, decode_responses=True)
    await set_site_limit(redis, KEYS, "depot", 40.0)
    async with topology(redis_url, tmp_path, nodes=1) as topo:
        slow = topo.start_worker("worker-slow", debounce_s=3.0)  # takes the event, plans 3 s later
        other = topo.start_worker("worker-other")
        await until(lambda: _plan_limit(redis, "depot"), 30, "first plans")
        await until(lambda: redis.exists(KEYS.optimizer_alive("worker-other")), 10)
        other.proc.send_signal(signal.SIGSTOP)  # so the slow worker is the one that reads the event
        try:
            async with httpx.AsyncClient() as client:  # the operator lowers the limit: a site.limit event
                reply = await client.put(f"{topo.nodes[0].api}/api/v1/sites/depot/limit",
                                         json={"limit_kw": 25.0}, timeout=10)
            assert reply.status_code == 200, reply.text
            entry_id = str((await redis.xrevrange(KEYS.events(), count=1))[0][0])
            await until(lambda: _delivered(redis, entry_id), 10, "the slow worker reads the event")
            slow.kill()  # mid-debounce: the event is taken, the plan not written
        finally:
            other.proc.send_signal(signal.SIGCONT)
        assert await _plan_limit(redis, "depot") == 40.0
        t0 = asyncio.get_running_loop().time()
        await until(lambda: _plan_limit_is(redis, "depot", 25.0), 10, "the other worker plans the site")
        took_s = asyncio.get_running_loop().time() - t0
        assert took_s < 10
        await until(lambda: _gone(redis, "worker-slow"), 10, "the survivor removes it from the group")
    await redis.aclose()


async def _plan_limit_is(redis: Redis, site: str, value: float) -> bool:
    return await _plan_limit(redis, site) == value


async def _gone(redis: Redis, consumer: str) -> bool:
    return consumer not in {str(c["name"]) for c in await redis.xinfo_consumers(KEYS.events(), GROUP)}
