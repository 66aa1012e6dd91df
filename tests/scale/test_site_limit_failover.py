"""The site limit holds while a csms node and an optimizer worker die (issue 14's last done-when point).

HAProxy in front of 2 `evfleet csms` nodes, 2 `evfleet optimizer` workers, one Redis
(`tests/scale/topology.py`); evse_sim stations (real OCPP 2.0.1 through HAProxy, ISO 15118 EVs)
run here in real time. Every second a monitor adds up, from the stations' side, the limit each one
applies at that instant (`tests/sim_stations.applied_limit_w`: the profiles it accepted; a station
whose node died keeps enforcing them, so an offline station counts at its last limit) and compares
it with the site limit (after a lowered limit, the old one for the 1 s the csms gets to enforce it).
A second sum also counts every idle EVSE at the limit a car plugging in would get (its
TxDefaultProfile: what the csms reserves for it).

With 5 EVs charging on a 33 kW site (55 kW unsteered), a plug-in makes a worker solve; at that
moment the node holding the site's smart-charging lease and that worker are SIGKILLed together. A
car plugs in while the lease holder is dead, and the operator lowers the limit to 28 kW through the
survivor's API at once, while no node acts for the site. Expected: the survivor takes the lease
within `TAKEOVER_BOUND_S` of the kill (the dead node's liveness key lapses: `ALIVE_TTL_S` 4.5 s +
a 0.25 s poll, `csms/smart_charging/leases.py`) and the stations are under 28 kW by then too; 0
samples over the limit (the old one until then); every station reconnects to the survivor; the two
sessions that started around the kill get power. Once the survivor holds the site the operator
lowers the limit again, to 24 kW: the stations are under it within 1 s, and the surviving worker
plans the site with it.

It failed before the lease renewal asked for other nodes' leases (`csms/smart_charging/leases.py`):
the dead node's lease expired after the last event of the site (the surviving worker's re-plan), so
the survivor never took the site and the new sessions stayed at 0 W. With the survivor not
enforcing a lowered limit, 5 samples were over it (29.7 kW against 24 kW). With the take-over by
lease expiry alone (before the liveness keys) it took 11-18 s: a cut during the failover was
enforced that late. About 35 s; `alone` (tests/conftest.py ALONE: 1 Hz sampling in real time).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from csms.store.provisioning import provision_station, set_site_limit
from evfleet.keys import Keys
from evse_sim.station import SimStation
from tests.scale.topology import HAPROXY, Node, Topology, topology
from tests.sim_stations import applied_limit_w, charging_ev, sim_station
from tests.waiting import stopped, until

pytestmark = pytest.mark.skipif(shutil.which("haproxy") is None and not Path(HAPROXY).exists(),
                                reason="haproxy not installed (scripts/setup.sh --dev installs it)")
KEYS = Keys()
SITE = "failover-depot"
PASSWORD = "failover-station-1"
LIMIT_KW = 33.0
LOWERED_KW = 28.0
"""The cut while no node acts for the site (just after the kill): it binds (the stations apply
33 kW) and leaves the plan feasible (98 kWh in 4 h), so the new sessions still get power."""
FINAL_KW = 24.0
"""The cut once the survivor holds the site."""
GRACE_S = 1.0
"""Seconds the csms gets to bring the stations under a lowered site limit (docs/smart-charging.md)."""
TOL_W = 50.0  # float noise; the stations floor A limits to 0.1 A
TAKEOVER_BOUND_S = 6.0
"""Seconds after the kill by which the survivor holds the site and the stations are under the cut
made meanwhile: the dead node's liveness key lapses at most `leases.ALIVE_TTL_S` (4.5 s) after the
kill, the survivor polls it every 0.25 s, and its take-over's RECONCILE sends the lowered limits
(0.2-0.5 s on the loaded 2-core machine). The 15 s lease alone took 11-18 s."""
URGENT = {"kwh": 9.0, "hours": 1.0}
"""The sessions that start around the kill: 9 kWh within the hour, at least 49 min of 11 kW, so
every plan charges them now (the running sessions can wait: they need 80 kWh in 4 h of 33 kW)."""
ENV = {"EVFLEET_ACCEPT_ALL_TOKENS": "true", "EVFLEET_CALL_TIMEOUT_S": "5",
       "EVFLEET_HEARTBEAT_INTERVAL_S": "300", "EVFLEET_INTERIM_PROFILE_AFTER_S": "1.0",
       "EVFLEET_SMART_CHARGING_ALIVE_TTL_S": "4.5"}
"""(The liveness TTL of a deployment whose nodes never stall 4 s; the default, 10 s, takes over
within about 10.3 s.)"""


@dataclass
class SiteMonitor:
    """Every second: the stations' applied limits against the site limit in force."""

    stations: dict[str, SimStation]
    limit_w: float
    bound_w: float = 0.0
    """The limit the samples are held to: the previous, higher one for `GRACE_S` after a cut."""
    lowered_at: float = -1e9
    phase: str = "start"
    samples: dict[str, int] = field(default_factory=dict)
    """phase -> samples taken in it."""
    max_applied_w: float = 0.0
    over: list[tuple[str, float, float]] = field(default_factory=list)
    """(phase, applied W, bound W) of every sample over the limit."""
    over_reserved: list[tuple[str, float, float]] = field(default_factory=list)
    """The same with idle EVSEs counted at their default."""

    def lower(self, limit_w: float, grace_s: float = GRACE_S) -> None:
        """Call just before the new limit is written: the old one holds for `grace_s` more."""
        self.bound_w, self.limit_w = self.limit_w, limit_w
        self.lowered_at = time.monotonic() + grace_s - GRACE_S

    def sums_w(self) -> tuple[float, float]:
        """(applied, applied + idle EVSEs at their default) now."""
        now = datetime.now(UTC)
        return (sum(applied_limit_w(st, now) for st in self.stations.values()),
                sum(applied_limit_w(st, now, idle_at_default=True) for st in self.stations.values()))

    async def run(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            if time.monotonic() - self.lowered_at > GRACE_S:
                self.bound_w = self.limit_w
            bound = max(self.limit_w, self.bound_w)
            applied, reserved = self.sums_w()
            self.samples[self.phase] = self.samples.get(self.phase, 0) + 1
            self.max_applied_w = max(self.max_applied_w, applied)
            if applied > bound + TOL_W:
                self.over.append((self.phase, applied, bound))
            if reserved > bound + TOL_W:
                self.over_reserved.append((self.phase, reserved, bound))


async def _lease_holder(redis: Redis) -> str:
    return str(await redis.get(KEYS.smart_charging_lease(SITE)) or "")


async def _solving_worker(redis: Redis, timeout_s: float) -> str:
    """The consumer that takes the site's optimizer lease (it is solving the site), polled every
    2 ms; "" if none was seen within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        token = await redis.get(KEYS.optimizer_lease(SITE))
        if token:
            return str(token).rsplit(":", 1)[0]
        await asyncio.sleep(0.002)
    return ""


async def _plan_limit_kw(redis: Redis) -> float | None:
    raw = await redis.get(KEYS.site_plan(SITE))
    return float(json.loads(raw)["limit_kw"]) if raw else None


async def _nodes_of(redis: Redis, ids: list[str]) -> set[str]:
    return {str(await redis.hget(KEYS.station(sid), "node") or "") for sid in ids}


async def _provision(redis: Redis, ids: list[str]) -> None:
    for sid in ids:
        await provision_station(redis, KEYS, sid, PASSWORD, site_id=SITE, iterations=1000)
        # EVSE facts as the NotifyReport gives them (until then an idle EVSE counts at 22 kW)
        await redis.hset(KEYS.station_evse(sid, 1), mapping={"max_power_w": "11000", "phases": "3",
                                                             "rate_unit": "A"})
    await set_site_limit(redis, KEYS, SITE, LIMIT_KW, source="test")


async def _online(redis: Redis, stations: dict[str, SimStation]) -> None:
    """The stations online through HAProxy, on both nodes, with their TxDefaultProfiles accepted."""
    async def defaults_in() -> bool:
        return all([await redis.hget(KEYS.station_evse(sid, 1), "default_limit_w") is not None
                    for sid in stations])

    await until(lambda: all(st.online for st in stations.values()), 30, "stations online")
    await until(defaults_in, 20, "TxDefaultProfiles accepted")
    assert len(await _nodes_of(redis, list(stations))) == 2  # HAProxy spread them over both nodes


async def _kill_at_a_solve(topo: Topology, redis: Redis, stations: dict[str, SimStation]) -> Node:
    """A plug-in makes a worker solve the site: SIGKILL that worker (mid-solve) and the node holding
    the site's lease; returns the surviving node."""
    holder = await _lease_holder(redis)
    dead, survivor = topo.node(holder), next(n for n in topo.nodes if n.node_id != holder)
    stations["KN-6"].plug_in(1, charging_ev(6, **URGENT))
    solving = await _solving_worker(redis, 5.0)
    victim = next((w for w in topo.workers if w.consumer == solving), topo.workers[0])
    victim.kill()
    dead.kill()
    print(f"killed {dead.node_id} (the site's lease) and {victim.consumer} "
          f"({'mid-solve' if solving else 'no solve seen'})")
    return survivor


async def test_the_site_limit_holds_when_a_node_and_a_worker_die(redis_url: str, tmp_path: Path) -> None:
    ids = [f"KN-{i}" for i in range(1, 8)]
    redis = Redis.from_url(redis_url, decode_responses=True)
    await _provision(redis, ids)
    async with topology(redis_url, tmp_path, nodes=2, workers=2, extra_env=ENV) as topo:
        stations = {sid: sim_station(sid, topo.url, PASSWORD, seed=i) for i, sid in enumerate(ids)}
        mon = SiteMonitor(stations, LIMIT_KW * 1000)
        tasks = [asyncio.create_task(st.run(tick_s=0.25)) for st in stations.values()]
        try:
            await _online(redis, stations)
            tasks.append(asyncio.create_task(mon.run()))
            mon.phase = "plug-ins"
            for n in range(1, 6):  # 55 kW unsteered on a 33 kW site; 80 kWh in 4 h: levelled at 20 kW
                stations[f"KN-{n}"].plug_in(1, charging_ev(n, kwh=16.0))
                await asyncio.sleep(0.5)
            await until(lambda: redis.exists(KEYS.site_plan(SITE)), 20, "a plan")
            await until(lambda: _powered(stations, 1, 2, 3, 4, 5), 20, "the sessions get power")
            await asyncio.sleep(2.0)
            survivor = await _kill_at_a_solve(topo, redis, stations)
            t_kill = time.monotonic()
            mon.phase = "failover"
            stations["KN-7"].plug_in(1, charging_ev(7, **URGENT))  # while the lease holder is dead
            mon.lower(LOWERED_KW * 1000, grace_s=TAKEOVER_BOUND_S - (time.monotonic() - t_kill))
            await _put_limit(survivor, LOWERED_KW)  # while no node acts for the site
            await until(lambda: _lease_holder_is(redis, survivor.node_id), 25,
                        "the survivor takes the site's lease")
            took_s = time.monotonic() - t_kill
            await until(lambda: mon.sums_w()[0] <= LOWERED_KW * 1000 + TOL_W, 15,
                        "stations under the cut made during the failover")
            failover_under_s = time.monotonic() - t_kill
            print(f"lease taken {took_s:.1f} s, under {LOWERED_KW} kW {failover_under_s:.1f} s after it")
            await until(lambda: _all_on(redis, ids, survivor.node_id, stations), 10,
                        "every station back, on the survivor")
            await until(lambda: _powered(stations, 6, 7), 15, "the new sessions get power")
            admitted_s = time.monotonic() - t_kill
            mon.phase = "lowered"
            mon.lower(FINAL_KW * 1000)
            t_low = time.monotonic()
            await _put_limit(survivor, FINAL_KW)
            await until(lambda: mon.sums_w()[0] <= FINAL_KW * 1000 + TOL_W, 10, "stations under the cut")
            under_s = time.monotonic() - t_low
            await until(lambda: _plan_limit_is(redis, FINAL_KW), 10, "the surviving worker plans the cut")
            await asyncio.sleep(3.0)
        finally:
            for st in stations.values():
                st.stop()
            await stopped(*tasks)
    await redis.aclose()
    print(f"failover: samples {mon.samples}, max applied {mon.max_applied_w / 1000:.1f} kW, lease taken "
          f"{took_s:.1f} s after the kill, under the failover cut {failover_under_s:.1f} s after the "
          f"kill, new sessions powered after {admitted_s:.1f} s, under the final cut {under_s:.2f} s "
          f"after it; over {mon.over}, reserved over {mon.over_reserved}")
    assert {"plug-ins", "failover", "lowered"} <= set(mon.samples), mon.samples
    assert mon.max_applied_w >= LIMIT_KW * 1000 - 4_000  # the site was full: the check was not vacuous
    assert mon.over == [], mon.over
    assert mon.over_reserved == [], mon.over_reserved
    assert took_s <= TAKEOVER_BOUND_S, took_s
    assert failover_under_s <= TAKEOVER_BOUND_S, failover_under_s
    assert under_s <= GRACE_S, under_s


async def _put_limit(node: Node, limit_kw: float) -> None:
    """The operator sets the site limit through `node`'s API."""
    async with httpx.AsyncClient() as client:
        reply = await client.put(f"{node.api}/api/v1/sites/{SITE}/limit", json={"limit_kw": limit_kw},
                                 timeout=10)
    assert reply.status_code == 200, reply.text


def _powered(stations: dict[str, SimStation], *numbers: int) -> bool:
    now = datetime.now(UTC)
    return all(applied_limit_w(stations[f"KN-{n}"], now) > 0 for n in numbers)


async def _lease_holder_is(redis: Redis, node_id: str) -> bool:
    return await _lease_holder(redis) == node_id


async def _plan_limit_is(redis: Redis, limit_kw: float) -> bool:
    return await _plan_limit_kw(redis) == limit_kw


async def _all_on(redis: Redis, ids: list[str], node_id: str, stations: dict[str, SimStation]) -> bool:
    return all(st.online for st in stations.values()) and await _nodes_of(redis, ids) == {node_id}
