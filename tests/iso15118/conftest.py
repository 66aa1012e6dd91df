"""Local fixtures: a csms node with smart charging, an optimizer worker, a site, provisioned stations."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pytest
from redis.asyncio import Redis

from csms.app import CsmsNode, running_csms
from csms.settings import CsmsSettings
from csms.store.provisioning import provision_station
from evfleet.clock import Clock, RealClock, ScaledClock
from evfleet.keys import Keys
from evfleet.store.client import connect_redis
from optimizer.worker import OptimizerWorker, WorkerConfig

if TYPE_CHECKING:
    from evse_sim.iso15118.bridge import JosevHlc
    from evse_sim.iso15118.link import JosevHlcLink
    from evse_sim.station import SimStation

PASSWORD = "iso15118-test-pass"
SITE = "depot"
KEYS = Keys("evfleet")


class SteppedClock(ScaledClock):
    """A test's one clock: real time while the Josev JVMs start (their start-up takes 1-3 min of
    real time under load and must not eat simulated hours), then faster. Every component holds
    this same object, so all agree on "now" across the change."""

    def set_speed(self, speed: float) -> None:
        """Continue from now at `speed` simulated seconds per real second."""
        now = self.timestamp()
        self._sim_anchor, self._real_anchor, self._speed = now, time.time(), float(speed)


@dataclass
class Loop:
    """A running csms node (+ optional optimizer worker) and its Redis."""

    node: CsmsNode
    redis: Redis
    redis_url: str
    clock: Clock
    worker_task: asyncio.Task[None] | None = None

    async def provision(self, station_ids: list[str]) -> None:
        """Provision stations on the site (cheap hashing for tests)."""
        for sid in station_ids:
            await provision_station(self.redis, KEYS, sid, PASSWORD, site_id=SITE, iterations=1000)

    async def set_limit(self, limit_kw: float) -> None:
        """Change the site limit and emit site.limit (what the API/MQTT do)."""
        from evfleet.events import EventType, event_fields

        await self.redis.hset(KEYS.site(SITE), mapping={"limit_kw": repr(limit_kw)})
        await self.redis.xadd(KEYS.events(), event_fields(  # type: ignore[arg-type]
            EventType.SITE_LIMIT, self.clock.now(), site_id=SITE, data={"limit_kw": limit_kw}))

    async def set_prices(self, start: datetime, step_minutes: int, import_price: list[float]) -> None:
        """Store a price series and emit site.prices (what the API/MQTT do)."""
        from csms.api.site_inputs import PriceSeriesInput, SiteInputWriter

        await SiteInputWriter(self.redis, KEYS, self.clock).set_prices(
            SITE, PriceSeriesInput(start=start, step_minutes=step_minutes, import_price=import_price,
                                   export_price=None), "test")

    async def json(self, key: str) -> dict[str, Any]:
        """A JSON string key, {} when missing."""
        raw = await self.redis.get(key)
        return json.loads(raw) if raw else {}


@contextlib.asynccontextmanager
async def csms_loop(redis_url: str, limit_kw: float = 22.0, worker: bool = True, smart_charging: bool = True,
                    clock: Clock | None = None, **settings: Any) -> AsyncIterator[Loop]:
    """csms node (smart-charging service on) + optimizer worker, on a fresh site."""
    base: dict[str, Any] = dict(redis_url=redis_url, host="127.0.0.1", port=0, node_id="iso-node",
                                api_enabled=False, heartbeat_interval_s=300, interim_profile_after_s=5.0,
                                replan_threshold_kw=0.5, call_timeout_s=10.0, smart_charging=smart_charging)
    base.update(settings)
    redis = connect_redis(redis_url)
    await redis.hset(KEYS.site(SITE), mapping={"limit_kw": repr(limit_kw), "name": "Depot"})
    await redis.sadd(KEYS.sites(), SITE)
    clock = clock or RealClock()
    services = ["csms.smart_charging.service:run"] if smart_charging else []
    async with running_csms(CsmsSettings(**base), clock=clock, services=services) as node:
        lp = Loop(node, redis, redis_url, clock)
        worker_redis = connect_redis(redis_url)
        if worker:
            cfg = WorkerConfig(debounce_s=0.2, max_delay_s=1.0, solve_timeout_s=10.0, block_ms=100)
            lp.worker_task = asyncio.create_task(OptimizerWorker(worker_redis, KEYS, cfg, clock=clock).run())
        try:
            yield lp
        finally:
            if lp.worker_task is not None:
                lp.worker_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await lp.worker_task
            await worker_redis.aclose()
            await redis.aclose()


async def stop_station(station: SimStation, runner: asyncio.Task[Any], link: JosevHlcLink | None = None,
                       timeout_s: float = 10.0) -> None:
    """A Josev test's teardown: stop the link's SECC/EVCC processes (their JVMs) and namespaces, then
    the station; wait `timeout_s` for its run task, then cancel it."""
    if link is not None:
        await link.close()
    await stop_stations([station], [runner], timeout_s)


async def stop_stations(stations: list[SimStation], runners: list[asyncio.Task[Any]],
                        timeout_s: float = 10.0) -> None:
    """Stop every station; wait `timeout_s` for their run tasks, then cancel the ones still running."""
    for station in stations:
        station.stop()
    if runners:
        _done, pending = await asyncio.wait(runners, timeout=timeout_s)
        for task in pending:
            task.cancel()


def print_bridge_events(sessions: Iterable[JosevHlc], t0: float = 0.0, width: int = 200) -> None:
    """Print each bridge's event log (times since `t0`): what makes a failed Josev test readable."""
    for hlc in sessions:
        print("bridge events:", [(round(t - t0, 1), k, str(d)[:width]) for t, k, d in hlc.events])


@pytest.fixture
def anyio_backend() -> str:
    """asyncio only."""
    return "asyncio"
