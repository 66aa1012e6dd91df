"""The steal rule of the site leases (`csms.smart_charging.leases`, module doc), on a real Redis,
with the liveness timings scaled down 7.5 x (TTL 0.6 s, refresh 0.05 s, trust 0.15 s, poll 0.05 s):

- a holder that stalls for less than TTL - refresh keeps its site, and acts again on resume;
- a holder that stops refreshing (dead) loses the site to the other node within TTL + poll, and
  never before its own trust ran out;
- the dead holder, resuming, does not act for the site (its liveness lapsed: it asks Redis).
"""

from __future__ import annotations

import asyncio
import time

import pytest

from csms.settings import CsmsSettings
from csms.smart_charging import leases
from csms.smart_charging.service import SmartChargingService
from csms.smart_charging.work import Work
from csms.store.port_redis import RedisStateStore
from evfleet.keys import Keys
from evfleet.store.client import connect_redis
from tests.loop.test_service_unit import SITE, FixedClock, Stations

K = Keys("evfleet")
TTL_S, REFRESH_S, TRUST_S, POLL_S = 0.6, 0.05, 0.15, 0.05


def _node(store: RedisStateStore, node_id: str) -> SmartChargingService:
    clock = FixedClock()
    svc = SmartChargingService(store, clock, CsmsSettings(default_site=SITE), node_id,
                               Stations(clock, 20_000.0))  # type: ignore[arg-type]
    live = svc.liveness
    live.ttl_s, live.refresh_s, live.trust_s, live.poll_s = TTL_S, REFRESH_S, TRUST_S, POLL_S
    svc.enqueued = []  # type: ignore[attr-defined]
    svc.enqueue = lambda site, kind, _: svc.enqueued.append((site, kind))  # type: ignore[method-assign,attr-defined]
    return svc


async def _wait(cond: object, timeout_s: float) -> float:
    """Seconds until `cond()` holds (pytest.fail after `timeout_s`)."""
    t0 = time.monotonic()
    while not cond():  # type: ignore[operator]
        if time.monotonic() - t0 > timeout_s:
            pytest.fail(f"not within {timeout_s} s")
        await asyncio.sleep(0.005)
    return time.monotonic() - t0


async def test_an_alive_holder_keeps_its_site_and_a_dead_ones_is_taken_within_the_bound(
        redis_url: str) -> None:
    redis = connect_redis(redis_url)
    a, b = _node(RedisStateStore(redis, K), "node-a"), _node(RedisStateStore(redis, K), "node-b")
    a_alive = asyncio.create_task(leases.alive_loop(a))
    b_loops = [asyncio.create_task(leases.alive_loop(b)), asyncio.create_task(leases.steal_loop(b))]
    try:
        assert await a.holds(SITE) and not await b.holds(SITE)
        assert b.liveness.holders == {SITE: "node-a"}
        await asyncio.sleep(3 * POLL_S)  # B has seen A's liveness key
        # A stalls for 0.45 s (< TTL - refresh): its trust runs out, its site stays its own
        a_alive.cancel()
        await asyncio.sleep(0.45)
        assert await redis.get(K.smart_charging_lease(SITE)) == "node-a" and not b.held
        assert not leases.trusted(a, SITE, time.monotonic())  # on resume it asks first ...
        assert await a.holds(SITE) and a.liveness.token == "node-a"  # ... and still holds it
        a_alive = asyncio.create_task(leases.alive_loop(a))
        await asyncio.sleep(2 * TTL_S)  # alive: never taken
        assert await redis.get(K.smart_charging_lease(SITE)) == "node-a" and not b.held
        # A dies (stops refreshing): B takes the site within TTL + poll, after A's trust ended
        await asyncio.sleep(REFRESH_S / 2)
        a_alive.cancel()
        trust_end = a.liveness.fresh_until
        took = await _wait(lambda: SITE in b.held, TTL_S + POLL_S + 0.4)
        assert took >= TTL_S - REFRESH_S - 0.01
        assert time.monotonic() - trust_end >= TTL_S - TRUST_S - REFRESH_S  # the invariant's margin
        assert await redis.get(K.smart_charging_lease(SITE)) == "node-b"
        assert b.enqueued == [(SITE, Work.RECONCILE)]  # brought to its limit
        # A resumes: its trust is gone, its liveness lapsed; it does not act for the site
        assert SITE in a.held and not leases.trusted(a, SITE, time.monotonic())
        assert not await a.holds(SITE) and not await a.holds(SITE, renew=True)
        assert a.liveness.token.startswith("node-a~") and SITE not in a.held
        assert await redis.get(K.smart_charging_lease(SITE)) == "node-b"
    finally:
        for t in [a_alive, *b_loops]:
            t.cancel()
        for svc in (a, b):
            for site in svc.sites.values():
                if site.task:
                    site.task.cancel()
        await redis.aclose()


async def test_a_node_that_lapsed_takes_its_own_sites_back_under_a_new_token(redis_url: str) -> None:
    """Alone, a node whose liveness lapsed (a stall past the TTL) drops its leases and takes them
    back from its old token: its sites are not left without a node until the leases expire."""
    redis = connect_redis(redis_url)
    a = _node(RedisStateStore(redis, K), "node-a")
    try:
        assert await a.holds(SITE)
        await redis.delete(K.node_alive("node-a"))  # lapsed (as after a stall past the TTL)
        a.liveness.fresh_until = 0.0
        assert await a.holds("other")  # any check finds the lapse first: every lease dropped
        assert SITE not in a.held and a.liveness.token.startswith("node-a~")
        assert await leases.steal_dead(a) == {SITE}
        assert await redis.get(K.smart_charging_lease(SITE)) == a.liveness.token and leases.trusted(
            a, SITE, time.monotonic())
    finally:
        for site in a.sites.values():
            if site.task:
                site.task.cancel()
        await redis.aclose()
