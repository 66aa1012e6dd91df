"""A running csms node (real OCPP server, real Redis, the API on uvicorn over TCP) with simulated
stations from evse_sim, for the end-to-end API, dashboard and metrics tests."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from redis.asyncio import Redis

from csms.api.tokens import TokenStore
from csms.app import CsmsNode, running_csms
from csms.settings import CsmsSettings
from csms.store.provisioning import provision_station
from evfleet.clock import ScaledClock
from evfleet.keys import Keys
from evfleet.store.client import connect_redis
from evse_sim.ev import Ev, EvSpec
from evse_sim.evse import EvseSpec
from evse_sim.hlc import BasicHlc
from evse_sim.station import ConnectionConfig, SimStation, StationConfig
from tests.waiting import until

PASSWORD = "api-test-password"
KEYS = Keys("evfleet")


@dataclass
class LiveCsms:
    """Handles of a running node with stations."""

    node: CsmsNode
    redis: Redis
    clock: ScaledClock
    stations: list[SimStation]
    api_url: str
    viewer: str
    operator: str

    def ev(self, hours: float = 4.0, name: str = "EV") -> Ev:
        """An EV arriving now, leaving in `hours`."""
        now = self.clock.now()
        return Ev(EvSpec(name, "VW ID.4", 77.0, 0.2, 0.9, 22.0, 135.0, now, now + timedelta(hours=hours),
                         hlc=True))


@contextlib.asynccontextmanager
async def live_csms(redis_url: str, station_ids: Sequence[str] = ("CS-1", "CS-2"), *, speed: float = 30.0,
                    site: str = "depot", services: Sequence[str] = ("csms.api.service:run",),
                    ocpp_version: str = "2.0.1", **overrides: Any) -> AsyncIterator[LiveCsms]:
    """A csms node on private ports with the given services and connected simulated stations
    (speaking `ocpp_version`: 2.0.1 or 1.6)."""
    clock = ScaledClock(datetime(2026, 3, 2, 17, 0, tzinfo=UTC), speed=speed)
    redis = connect_redis(redis_url)
    fields: dict[str, Any] = dict(redis_url=redis_url, host="127.0.0.1", port=0, node_id="api-test-node",
                                  api_host="127.0.0.1", api_port=0, heartbeat_interval_s=300,
                                  smart_charging=False)
    fields.update(overrides)
    settings = CsmsSettings(**fields)
    tokens = TokenStore(redis, KEYS, clock)
    viewer, _ = await tokens.create("viewer", "viewer")
    operator, _ = await tokens.create("operator", "operator")
    await redis.sadd(KEYS.sites(), site)
    await redis.hset(KEYS.site(site), mapping={"name": "Depot", "limit_kw": "60", "updated_at": ""})
    for sid in station_ids:
        await provision_station(redis, KEYS, sid, PASSWORD, site_id=site, iterations=1000)
    stations: list[SimStation] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        async with running_csms(settings, clock=clock, services=list(services)) as node:
            if "csms.api.service:run" in services:
                await until(lambda: node.ctx.api_port, 10)
            for i, sid in enumerate(station_ids):
                cfg = StationConfig(sid, (EvseSpec.ac(22.0), EvseSpec.ac(22.0)), tx_updated_interval_s=30,
                                    aligned_interval_s=0, ocpp_version=ocpp_version)
                conn = ConnectionConfig(node.url, password=PASSWORD, backoff_base_s=0.05, backoff_max_s=0.3,
                                        response_timeout_s=5)
                station = SimStation(cfg, conn, clock, hlc=BasicHlc(), rng=random.Random(i))
                stations.append(station)
                tasks.append(asyncio.create_task(station.run(tick_s=2.0)))
            await until(lambda: all(s.online for s in stations), 15)
            yield LiveCsms(node, redis, clock, stations, f"http://127.0.0.1:{node.ctx.api_port}", viewer,
                           operator)
    finally:
        for station in stations:
            station.stop()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 5)
        await redis.aclose()
