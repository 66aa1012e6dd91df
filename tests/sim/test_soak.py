"""Soak (excluded by default; run with `-m soak`): 100 stations, link drops, 4.5 simulated hours."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from csms.app import running_csms
from csms.settings import CsmsSettings
from csms.store.provisioning import provision_station
from evfleet.clock import ScaledClock
from evfleet.keys import Keys, tx_ref
from evfleet.store.client import connect_redis
from evse_sim.fleet import FleetConfig, FleetRunner
from evse_sim.scenarios import random_fleet


@pytest.mark.soak
@pytest.mark.timeout(600)
async def test_fleet_with_link_drops_loses_no_transaction_event(redis_url: str) -> None:
    scenario = random_fleet(
        200, seed=7, start=datetime(2025, 6, 2, 6, 0, tzinfo=UTC), hours=4, evs_per_evse=2
    )
    clock = ScaledClock(scenario.start, speed=600.0)
    keys = Keys("evfleet")
    redis = connect_redis(redis_url)
    fields: dict[str, Any] = dict(
        redis_url=redis_url, host="127.0.0.1", port=0, node_id="soak", api_enabled=False, smart_charging=False
    )
    try:
        for st in scenario.stations:
            await provision_station(redis, keys, st.id, "soak-password", iterations=1000)
        async with running_csms(CsmsSettings(**fields), clock=clock, services=[]) as node:
            config = FleetConfig(
                node.url,
                password="soak-password",
                ramp_per_s=200,
                tick_real_s=0.1,
                drop_rate_per_h=1.0,
                drop_real_s=0.5,
                backoff_base_s=0.1,
                backoff_max_s=1.0,
            )
            runner = FleetRunner(scenario, clock, config)
            task = asyncio.create_task(runner.run(timedelta(days=1)))
            end = scenario.start + timedelta(hours=4, minutes=30)
            while clock.now() < end:
                await asyncio.sleep(0.5)
            runner.config = dataclasses.replace(
                config, drop_rate_per_h=0.0
            )  # no more faults: let queues drain
            deadline = asyncio.get_running_loop().time() + 60
            while any(not st.online or st.queued_transaction_events for st in runner.stations.values()):
                stuck = {
                    sid: (
                        st.online,
                        st.queued,
                        st.queued_transaction_events,
                        st.stats.last_error,
                        st.stats.connects,
                        st._offline_for_s,
                    )
                    for sid, st in runner.stations.items()
                    if not st.online or st.queued_transaction_events
                }
                assert asyncio.get_running_loop().time() < deadline, f"queues did not drain: {stuck}"
                await asyncio.sleep(0.5)
            runner.stop()
            stats = await task
        assert stats.drops > 25 and stats.visits_started > 150
        visits = runner.visits()
        ended = [v for v in visits if v.left_at is not None]
        assert len(ended) > 0.9 * len(visits)
        for v in ended:
            events = [
                json.loads(e) for e in await redis.lrange(
                    keys.transaction_events(tx_ref(v.station_id, v.transaction_id)), 0, -1)
            ]
            seqs = [e["seqNo"] for e in events]
            assert seqs == list(range(len(seqs))), f"{v.transaction_id}: lost or duplicated events"
            assert events[-1]["eventType"] == "Ended"
    finally:
        await redis.aclose()
