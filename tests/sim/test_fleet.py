"""Fleet runner: EV dispatch (no sockets, manual clock) and a small fleet against the repo's csms."""

from __future__ import annotations

import asyncio
import contextlib
import json
from datetime import datetime, timedelta
from typing import Any

import pytest
from ocpp.v201 import call

from csms.app import running_csms
from csms.settings import CsmsSettings
from csms.store.provisioning import provision_station
from evfleet.clock import ScaledClock
from evfleet.keys import Keys
from evfleet.store.client import connect_redis
from evse_sim.fleet import FleetConfig, FleetRunner
from evse_sim.scenarios import load_scenario


class ManualClock:
    """A clock tests move by hand."""

    speed = 1.0

    def __init__(self, start: datetime) -> None:
        self.t = start

    def now(self) -> datetime:
        return self.t

    def timestamp(self) -> float:
        return self.t.timestamp()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(0)


async def test_depot_first_come_first_served_dispatch() -> None:
    scenario = load_scenario("seed003")
    clock = ManualClock(scenario.start)
    runner = FleetRunner(scenario, clock, FleetConfig("ws://127.0.0.1:9/ocpp"))
    occupancy: list[int] = []
    while clock.t < scenario.start + timedelta(hours=24):
        runner._dispatch(clock.t)
        for station in runner.stations.values():
            station.tick(clock.t)
        occupancy.append(sum(1 for s in runner.stations.values() for e in s.evses.values() if e.ev))
        clock.t += timedelta(minutes=5)
    visits = runner.visits()
    assert max(occupancy) == 4, "four chargers shared by twenty cars"
    assert len(visits) > 4 and runner.visits_started == len(visits)
    specs = {ev.id: ev.spec(scenario.start) for ev in scenario.evs}
    for v in visits:
        spec = specs[v.ev_id]
        assert spec.arrival <= v.plugged_at < spec.departure
        assert v.left_at is not None and v.left_at <= spec.departure + timedelta(minutes=5)
        assert v.delivered_wh <= 11_000 * (v.left_at - v.plugged_at).total_seconds() / 3600 + 1
    # every car is accounted for: plugged once, or missed because no charger freed in time
    assert len({v.ev_id for v in visits}) + runner.visits_missed == 20
    # the station queued (offline) transaction events for every visit, in seqNo order
    for station in runner.stations.values():
        seqs: dict[str, list[int]] = {}
        for msg in station.core.outbox:
            if not isinstance(msg.payload, call.TransactionEvent):
                continue  # NotifyEVChargingNeeds of HLC cars wait in the same offline queue
            info = msg.payload.transaction_info
            seqs.setdefault(info["transaction_id"], []).append(msg.payload.seq_no)
            assert msg.payload.offline is True
        assert all(s == list(range(len(s))) for s in seqs.values())


def _settings(redis_url: str) -> CsmsSettings:
    fields: dict[str, Any] = dict(
        redis_url=redis_url,
        host="127.0.0.1",
        port=0,
        node_id="fleet-test",
        api_enabled=False,
        heartbeat_interval_s=300,
        smart_charging=False,
    )
    return CsmsSettings(**fields)


async def test_seed004_fleet_against_csms(redis_url: str) -> None:
    scenario = load_scenario("seed004")
    clock = ScaledClock(scenario.start - timedelta(minutes=2), speed=1200.0)
    keys = Keys("evfleet")
    redis = connect_redis(redis_url)
    try:
        for st in scenario.stations:
            await provision_station(redis, keys, st.id, "fleet-password", iterations=1000)
        async with running_csms(_settings(redis_url), clock=clock, services=[]) as node:
            # network faults: each station loses its link about 3 times per simulated hour for 0.3 s
            config = FleetConfig(
                node.url,
                password="fleet-password",
                ramp_per_s=100,
                tick_real_s=0.05,
                drop_rate_per_h=3.0,
                drop_real_s=0.3,
                backoff_base_s=0.05,
                backoff_max_s=0.2,
            )
            runner = FleetRunner(scenario, clock, config)
            stats = await runner.run(timedelta(minutes=70))
        assert stats.stations == 4 and stats.errors == 0
        assert stats.visits_started == 4
        # each EV needed its m_i within the hour at its own max power: 22.3 kWh in total
        assert stats.energy_kwh == pytest.approx(22.3, rel=0.02)
        assert stats.sent > 4 * 5
        active = await redis.smembers(keys.transactions_active())
        assert len(active) == 4
        assert stats.drops >= 2 and stats.offline_events_sent >= 1
        for tx in active:
            assert await redis.llen(keys.transaction_meter(str(tx))) >= 3
            events = [json.loads(e) for e in await redis.lrange(keys.transaction_events(str(tx)), 0, -1)]
            assert [e["seqNo"] for e in events] == list(range(len(events))), "no loss, no duplicate"
    finally:
        await redis.aclose()


async def test_shutdown_names_a_station_task_that_ignores_its_cancellation(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from evse_sim import fleet

    monkeypatch.setattr(fleet, "SHUTDOWN_WAIT_S", 0.2)
    scenario = load_scenario("seed003")
    runner = FleetRunner(scenario, ManualClock(scenario.start), FleetConfig("ws://127.0.0.1:9/ocpp"))
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await release.wait()

    task = asyncio.create_task(stubborn(), name="station-STUCK")
    runner._tasks.append(task)
    try:
        with pytest.raises(fleet.FleetStuckError, match=r"1 fleet task\(s\) still running.*station-STUCK"):
            await asyncio.wait_for(runner.shutdown(), 5)
    finally:
        release.set()
        await asyncio.wait_for(task, 5)
