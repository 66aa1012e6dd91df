"""Site-lease balancing (`csms.smart_charging.balance`), two nodes' services on a real Redis: the
node that took every site hands the excess over one at a time until each holds its fair share
(+ the slack), and at no step do both nodes act for a site (trusted at once), nor is a site handed
while something of it runs beside its task. The site tasks are not run: each node's queued items
are recorded (the hand-over step is called as the site task would call it)."""

from __future__ import annotations

import time
import uuid

from redis.asyncio import Redis

from csms.settings import CsmsSettings
from csms.smart_charging import balance, leases
from csms.smart_charging.service import SmartChargingService
from csms.smart_charging.work import Work
from csms.store.port_redis import RedisStateStore
from evfleet.keys import Keys
from tests.loop.test_service_unit import FixedClock, Stations

SITES = [f"site-{i}" for i in range(6)]


def _node(store: RedisStateStore, node_id: str, slack: int) -> SmartChargingService:
    clock = FixedClock()
    svc = SmartChargingService(store, clock, CsmsSettings(smart_charging_lease_slack=slack), node_id,
                               Stations(clock, 20_000.0))  # type: ignore[arg-type]
    svc.queued = []  # type: ignore[attr-defined]
    svc.enqueue = lambda site, kind, payload: svc.queued.append((site, kind, payload))  # type: ignore[method-assign,attr-defined]
    return svc


async def _two_nodes(redis: Redis, slack: int) -> tuple[SmartChargingService, SmartChargingService, Keys]:
    """Node A takes every site (it started first), then node B starts and is refused them all."""
    keys = Keys(f"bal-{uuid.uuid4().hex[:8]}")
    a = _node(RedisStateStore(redis, keys), "node-a", slack)
    b = _node(RedisStateStore(redis, keys), "node-b", slack)
    await leases.ensure_alive(a)
    for site in SITES:
        assert await a.holds(site)
    await leases.ensure_alive(b)
    for site in SITES:
        assert not await b.holds(site)
    return a, b, keys


def _one_acts(a: SmartChargingService, b: SmartChargingService) -> None:
    mono = time.monotonic()
    both = [s for s in SITES if leases.trusted(a, s, mono) and leases.trusted(b, s, mono)]
    assert not both, f"both nodes act for {both}"


async def _round(a: SmartChargingService, b: SmartChargingService) -> str | None:
    """One balance round of A (its hand-over step run as its site task would), then one of B."""
    site = await balance.balance(a)
    if site is not None:
        [(queued, kind, taker)] = [q for q in a.queued if q[1] == Work.HANDOVER]  # type: ignore[attr-defined]
        a.queued.clear()  # type: ignore[attr-defined]
        assert (queued, kind, taker) == (site, Work.HANDOVER, b.liveness.token)
        _one_acts(a, b)
        assert await balance.hand_over(a, site, taker)
        assert site not in a.held and a.handing is None
    _one_acts(a, b)  # handed, not picked up yet: neither acts for it
    await balance.balance(b)
    _one_acts(a, b)
    return site


async def _holders(redis: Redis, keys: Keys) -> dict[str, str]:
    return {s: await redis.get(keys.smart_charging_lease(s)) for s in SITES}


async def test_the_node_holding_every_site_hands_the_excess_over_one_at_a_time(redis: Redis) -> None:
    a, b, keys = await _two_nodes(redis, slack=0)
    handed = [site for _ in range(5) if (site := await _round(a, b)) is not None]
    assert len(handed) == 3  # fair share: ceil(6 / 2) = 3 each, then no more hand-overs
    assert len(a.held) == 3 and b.held == set(handed)
    assert sorted(v for v in (await _holders(redis, keys)).values()) == ["node-a"] * 3 + ["node-b"] * 3
    # the taker brought each site it took to its limit (RECONCILE), once
    assert [(s, k) for s, k, _ in b.queued if k == Work.RECONCILE] == [(s, Work.RECONCILE) for s in handed]  # type: ignore[attr-defined]
    # balanced: more rounds move nothing (B is at the fair share, A too)
    assert await balance.balance(a) is None and await balance.balance(b) is None


async def test_the_slack_is_kept_and_a_busy_site_is_not_handed(redis: Redis) -> None:
    a, b, _ = await _two_nodes(redis, slack=1)
    handed = [site for _ in range(4) if (site := await _round(a, b)) is not None]
    assert len(handed) == 2 and len(a.held) == 4 and len(b.held) == 2  # fair 3 + slack 1
    # a site with a default profile in flight is not handed: its step leaves it (chosen again later)
    site = sorted(a.held)[0]
    a.defaults.inflight[site] = {("CP-1", 1)}
    a.handing = site
    assert not await balance.hand_over(a, site, b.liveness.token)
    assert site in a.held and a.handing is None


async def test_a_taker_that_dies_before_picking_the_site_up_loses_it_to_the_living(redis: Redis) -> None:
    a, b, keys = await _two_nodes(redis, slack=0)
    site = await balance.balance(a)
    assert site is not None
    assert await balance.hand_over(a, site, b.liveness.token)
    # B dies before its next round: its liveness key goes; A takes the lease back from its token
    await redis.delete(keys.node_alive("node-b"))
    taken = await leases.steal_dead(a)
    assert taken == {site} and site in a.held
    assert await redis.get(keys.smart_charging_lease(site)) == "node-a"
    assert (site, Work.RECONCILE, None) in a.queued  # type: ignore[attr-defined]
    assert await RedisStateStore(redis, keys).live_nodes() == {"node-a": "node-a"}  # B is no longer listed
    assert await redis.smembers(keys.smart_charging_nodes()) == {"node-a"}


async def test_a_hand_over_dropped_with_its_lease_does_not_stop_balancing(redis: Redis) -> None:
    a, b, keys = await _two_nodes(redis, slack=0)
    site = await balance.balance(a)
    assert site is not None and a.handing == site
    # the lease went (B took it) before the step ran: the step is dropped, not run (`may_act`)
    await redis.set(keys.smart_charging_lease(site), b.liveness.token, px=15_000)
    leases.lease_lost(a, site)
    a._lease_taken_until[site] = time.monotonic() + 60
    assert await balance.balance(a) is not None and a.handing not in (None, site)
