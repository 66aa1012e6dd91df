"""The steal rule of the site leases (`csms.smart_charging.leases`, module doc), on a real Redis,
with the liveness timings scaled down 7.5 x (TTL 0.6 s, refresh 0.05 s, trust 0.15 s, poll 0.05 s):

- a holder that stalls for less than TTL - refresh keeps its site, and acts again on resume;
- a holder that stops refreshing (dead) loses the site to the other node at the first liveness
  poll that finds its key gone, which is at the latest the first poll sent TTL after the holder's
  last refresh returned; and never before its own trust ran out;
- the dead holder, resuming, does not act for the site (its liveness lapsed: it asks Redis).

The take-over is bounded in the nodes' own steps, not in wall time: under CPU starvation (a CI
runner at load 12-18) the poller's 50 ms sleeps stretch and a wall-clock bound (TTL + poll + 0.4 s,
1.05 s) was missed with nothing wrong. The test records when the holder's refreshes and the
poller's liveness reads were sent and answered (monotonic time) and checks the rule on those.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

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


Call = tuple[float, float, Any]
"""(monotonic time sent, monotonic time answered, answer) of one store call."""


class Recorded:
    """Every call of a store's async method (`Call`s, in order); with `stop` set, the calling task
    is cancelled once the next call was answered (it stops between two calls, none in flight)."""

    def __init__(self, store: RedisStateStore, name: str) -> None:
        self.calls: list[Call] = []
        self.stop = False
        self._method: Callable[..., Awaitable[Any]] = getattr(store, name)
        setattr(store, name, self._recorded)

    async def _recorded(self, *args: Any, **kwargs: Any) -> Any:
        sent = time.monotonic()
        answer = await self._method(*args, **kwargs)
        self.calls.append((sent, time.monotonic(), answer))
        if self.stop:
            self.stop = False
            task = asyncio.current_task()
            assert task is not None
            task.cancel()  # raised at its next await: the answer is used first
        return answer


async def _stop_after_refresh(refreshes: Recorded, alive: asyncio.Task[None]) -> Call:
    """Stop the node's liveness loop right after its next refresh was answered; that refresh."""
    refreshes.stop = True
    await asyncio.gather(alive, return_exceptions=True)
    assert alive.cancelled() and not refreshes.stop
    return refreshes.calls[-1]


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
    refreshes = Recorded(a.store, "refresh_alive")  # type: ignore[arg-type]
    reads, steals = Recorded(b.store, "alive_tokens"), Recorded(b.store, "steal_leases")  # type: ignore[arg-type]
    a_alive = asyncio.create_task(leases.alive_loop(a))
    b_loops = [asyncio.create_task(leases.alive_loop(b)), asyncio.create_task(leases.steal_loop(b))]
    try:
        assert await a.holds(SITE) and not await b.holds(SITE)
        assert b.liveness.holders == {SITE: "node-a"}
        await asyncio.sleep(3 * POLL_S)  # B has seen A's liveness key
        # A stalls for 0.3 s from its last refresh (trust 0.15 s < 0.3 s < TTL - refresh 0.55 s,
        # 0.3 s spare for a starved event loop): its trust runs out, its site stays its own
        stall_from, _, _ = await _stop_after_refresh(refreshes, a_alive)
        await asyncio.sleep(0.3)
        stalled_s = time.monotonic() - stall_from
        assert stalled_s < TTL_S - 0.01 or not b.held, f"starved: a {stalled_s:.2f} s stall, not 0.3 s"
        assert await redis.get(K.smart_charging_lease(SITE)) == "node-a" and not b.held
        assert not leases.trusted(a, SITE, time.monotonic())  # on resume it asks first ...
        assert await a.holds(SITE) and a.liveness.token == "node-a"  # ... and still holds it
        a_alive = asyncio.create_task(leases.alive_loop(a))
        await asyncio.sleep(2 * TTL_S)  # alive: never taken
        assert await redis.get(K.smart_charging_lease(SITE)) == "node-a" and not b.held
        # A dies (stops refreshing): B takes the site within TTL + poll, after A's trust ended
        await asyncio.sleep(REFRESH_S / 2)
        last_sent, last_answered, kept = await _stop_after_refresh(refreshes, a_alive)
        trust_end = a.liveness.fresh_until
        assert kept and last_sent - 0.01 <= trust_end - TRUST_S <= last_sent
        n_reads = len(reads.calls)
        await _wait(lambda: SITE in b.held, 10.0)  # taken at all (the bound is checked below)
        after = reads.calls[n_reads:]
        gone = next(i for i, (_, _, tokens) in enumerate(after) if tokens.get("node-a") != "node-a")
        # the key lived its TTL from the last refresh: no read answered before then found it gone ...
        assert after[gone][1] >= last_sent + TTL_S - 0.01
        assert after[gone][1] - trust_end >= TTL_S - TRUST_S - 0.01  # the invariant's margin
        # ... and it was gone for every read sent a TTL after that refresh returned (Redis expires
        # on its own clock; 10 ms for the clocks): the poller saw it at its first poll after that
        due = [i for i, (sent, _, _) in enumerate(after) if sent > last_answered + TTL_S + 0.01]
        assert not due or gone <= due[0], (gone, due[0], after[gone], last_answered)
        # that same poll took the site: one steal, sent after the read found the key gone and
        # before the next read (steal_dead: read, then compare-and-set)
        assert [answer for _, _, answer in steals.calls] == [{SITE}]
        next_sent = after[gone + 1][0] if gone + 1 < len(after) else float("inf")
        assert after[gone][1] <= steals.calls[0][0] <= next_sent
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
