"""End to end: a non-HLC EV that fills up reports 0 W and SuspendedEV through the csms, the optimizer
worker asks for a re-plan once (at the change, not at each sample repeating it), and the snapshot read
from Redis then plans no energy for it (instead of its 20 kWh default)."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta

from csms.app import running_csms
from csms.store.provisioning import provision_station
from evfleet.clock import ScaledClock
from evfleet.events import Event, EventType
from evfleet.keys import tx_ref
from evfleet.store.client import connect_redis
from evse_sim.ev import Ev, EvSpec
from evse_sim.evse import EvseSpec
from evse_sim.hlc import BasicHlc
from evse_sim.station import ConnectionConfig, SimStation, StationConfig
from optimizer.site_reader import read_site
from optimizer.snapshot import SnapshotConfig, build_instance
from optimizer.worker import OptimizerWorker, WorkerConfig
from tests.sim.test_csms_integration import KEYS, PASSWORD, settings, until

START = datetime(2026, 3, 2, 17, 0, tzinfo=UTC)


class _Asked(OptimizerWorker):
    """A worker that only records the re-plans the events ask for."""

    asked: list[str]

    def mark_dirty(self, site_id: str, reason: str) -> None:
        self.asked.append(reason)


async def test_full_ev_reports_suspended_ev_and_snapshot_plans_nothing(redis_url: str) -> None:
    clock = ScaledClock(START, speed=120.0)
    redis = connect_redis(redis_url)
    worker = _Asked(redis, KEYS, WorkerConfig(sites=("depot",)), clock=clock)
    worker.asked = []
    try:
        await worker.ensure_group()
        await provision_station(redis, KEYS, "FULL-1", PASSWORD, site_id="depot", iterations=1000)
        async with running_csms(settings(redis_url), clock=clock, services=[]) as node:
            cfg = StationConfig(
                "FULL-1", (EvseSpec.ac(11.0),), tx_updated_interval_s=60, aligned_interval_s=0
            )
            conn = ConnectionConfig(
                node.url, password=PASSWORD, backoff_base_s=0.05, backoff_max_s=0.3, response_timeout_s=5
            )
            station = SimStation(cfg, conn, clock, hlc=BasicHlc(), rng=random.Random(5))
            runner = asyncio.create_task(station.run(tick_s=10.0))
            try:
                await until(lambda: station.online)
                now = clock.now()
                # 30 kWh, 0.50 -> 0.55: ~1.6 kWh from the grid, full after ~9 simulated minutes at 11 kW
                ev = Ev(EvSpec("EV-F", "m", 30.0, 0.5, 0.55, 11.0, 50.0, now, now + timedelta(hours=8)))
                tx_id = station.plug_in(1, ev)
                tx_key = KEYS.transaction(tx_ref("FULL-1", tx_id))
                await until(lambda: _field(redis, tx_key, "charging_state", "Charging"), timeout_s=5)
                site = await read_site(redis, KEYS, "depot", clock.now())
                snap = build_instance(site, clock.now(), SnapshotConfig())
                assert snap.instance.evs[0].energy_kwh > 15.0  # while charging: the 20 kWh default
                await until(lambda: _field(redis, tx_key, "charging_state", "SuspendedEV"), timeout_s=15)
                assert ev.full
                await until(lambda: _samples_after_full(redis), timeout_s=15)  # a periodic one repeats it
                await worker._read_events(block=False)
                assert worker.asked.count("ev_suspended") == 1
                tx = await redis.hgetall(tx_key)
                assert float(tx["power_w"]) == 0.0
                assert 1_500 < float(tx["energy_wh"]) < 1_800
                site = await read_site(redis, KEYS, "depot", clock.now())
                snap = build_instance(site, clock.now(), SnapshotConfig())
                [planned] = snap.instance.evs
                assert planned.energy_kwh == 0.0
                assert snap.notes[tx_ref("FULL-1", tx_id)].endswith("energy=ev_full")
            finally:
                station.stop()
                await asyncio.wait_for(runner, 10)
    finally:
        await redis.aclose()


async def _samples_after_full(redis: object) -> bool:
    entries = await redis.xrange(KEYS.events())  # type: ignore[attr-defined]
    states = [(e.data.get("trigger_reason"), e.data.get("charging_state")) for e in map(Event.from_fields,
              (f for _, f in entries)) if e.type is EventType.TX_UPDATED]
    return ("ChargingStateChanged", "SuspendedEV") in states and states[-1][0] != "ChargingStateChanged" \
        and states[-1][1] == "SuspendedEV"


async def _field(redis: object, key: str, name: str, value: str) -> bool:
    got = await redis.hget(key, name)  # type: ignore[attr-defined]
    return bool(got == value)
