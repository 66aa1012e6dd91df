"""An idle optimizer whose stored plan covers a late session is not taken as silent (issue 14).

In the production topology of the load harness (100 sites of 50 stations, one worker, two csms
nodes) the worker planned every session and went idle: nothing changed, so it wrote no plan for
any site. A site whose session was still without a profile on its node (the plan event queued
behind a long pass, or its profile not answered) had entered fallback mode, and 15 s after that
(no plan for any site in the meantime) its optimizer was taken as silent: every session re-shared
the headroom, undoing the plan (25 of 100 sites, 3,171 TxProfiles in a minute). Here a real worker
writes the plans to a real Redis and the node reads them through its Redis store.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from redis.asyncio import Redis

from csms.settings import CsmsSettings
from csms.smart_charging import safety
from csms.smart_charging.service import SmartChargingService
from csms.store.port_redis import RedisStateStore
from evfleet.clock import RealClock
from optimizer.worker import OptimizerWorker, WorkerConfig
from tests.loop.test_service_unit import FixedClock, Stations
from tests.loop.test_worker import K, _seed

SITE = "depot"
LIMIT_W = 22_000.0


async def _sessions(redis: Redis, n: int) -> None:
    """CP-1 .. CP-n each running a session on the site (`test_worker._seed`, idempotent), indexed."""
    await _seed(redis, n=n, limit_kw=LIMIT_W / 1000.0)
    await redis.sadd(K.site_stations(SITE), *(f"CP-{i}" for i in range(1, n + 1)))


async def _late_for(svc: SmartChargingService, station: str, bound_passed_s: float = 20.0) -> None:
    """`station`'s interim timer fires without a plan profile (fallback mode), then the site stays
    late beyond `optimizer_silent_after_s` with no plan for any site (the worker writes none)."""
    svc._interim_due[SITE] = {(station, 1): f"{station}:1"}
    await svc.send_interims(SITE)
    assert SITE in svc._fallback
    svc._late_since[SITE] -= bound_passed_s
    svc.plan_seen_any = time.monotonic() - 60.0


async def test_an_idle_optimizer_whose_plan_covers_the_late_session_is_not_silent(redis: Redis) -> None:
    """CP-3's plan is stored but not applied on the node yet: the site is behind, not silent, and
    the planned sessions keep their limits. Fails if the node takes the idle worker as gone (every
    session re-shares). A session no stored plan covers (the worker gone) still makes the site
    silent; the stations' limits stay within the site limit throughout."""
    worker = OptimizerWorker(redis, K, WorkerConfig(), clock=RealClock())
    clock = FixedClock()
    clock.t = datetime.now(UTC)  # the plans start now (the worker plans in real time)
    stations = Stations(clock, LIMIT_W)
    svc = SmartChargingService(RedisStateStore(redis, K), clock,  # type: ignore[arg-type]
                               CsmsSettings(default_site=SITE, replan_threshold_kw=0.5), "node-a", stations)
    await _sessions(redis, 2)
    assert await worker.solve_site(SITE) is not None
    safety.plan_arrived(svc, SITE)
    await svc.apply_plan(SITE)
    planned = dict(stations.limits_w)
    assert set(planned) == {"CP-1", "CP-2"}

    await _sessions(redis, 3)  # CP-3 starts: the worker plans it at once ...
    plan = await worker.solve_site(SITE)
    assert plan is not None and "CP-3/1" in plan["transactions"]
    await _late_for(svc, "CP-3")  # ... but its plan event is still on its way to this node
    await safety.share_fairly(svc, SITE)
    assert SITE not in svc._silent and SITE in svc._fallback
    assert {s: stations.limits_w[s] for s in planned} == pytest.approx(planned)
    assert time.monotonic() - svc._late_since[SITE] < 1.0  # late again from now: checked once per bound

    await _sessions(redis, 4)  # CP-4 starts and the worker is gone
    await _late_for(svc, "CP-4")
    await safety.share_fairly(svc, SITE)
    assert SITE in svc._silent
    assert set(stations.limits_w) == {"CP-1", "CP-2", "CP-3", "CP-4"}
    shares = set(stations.limits_w.values())  # every session shares the headroom fairly
    assert len(shares) == 1 and shares.pop() == pytest.approx(LIMIT_W / 4, rel=0.01)
    assert stations.worst_sum_w <= LIMIT_W + 1.0
