"""Adapters from the demo to the three products: fleet scenario, csms, optimizer worker, fleet runner.

Part of the composition root (`evfleet.app`): every import of a product's runtime happens here,
inside the function that needs it (so `evfleet --help` stays fast); a component that fails to
start is reported as one clear `ComponentError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from redis.asyncio import Redis

from evfleet.app.demo.config import DemoConfig, DemoConfigError
from evfleet.app.demo.replay import CarSpec, car_spec
from evfleet.app.demo.report import PriceSeries
from evfleet.clock import ScaledClock, publish_shared_clock
from evfleet.keys import Keys

log = logging.getLogger("evfleet.demo")

STATION_PASSWORD = "demo-station-secret-1"  # noqa: S105 - local demo only, on a private Redis


class ComponentError(RuntimeError):
    """A component the demo needs is missing or failed to start."""


@dataclass(frozen=True)
class FleetPlan:
    """The demo's fleet: stations, cars (the same for both runs), site limit and prices."""

    station_ids: list[str]
    cars: list[CarSpec]
    id_tokens: dict[str, str]
    site_limit_kw: float
    prices: PriceSeries
    site_id: str
    start: datetime
    sim: Any = None  # the simulator's own fleet description, handed to its runner
    notes: dict[str, Any] = field(default_factory=dict)


def connect(url: str) -> Redis:
    """A Redis client with str responses."""
    from evfleet.store.client import connect_redis

    return connect_redis(url)


def build_plan(cfg: DemoConfig) -> FleetPlan:
    """The scenario scaled to `cfg.stations`, moved to `cfg.start` (default: today, same time of day).

    Every car gets an id token (``DEMO-{car id}`` unless the scenario has one), so its
    transactions can be found in Redis; the site limit is the scenario's lowest headroom
    (a constant the csms and the optimizer both respect); prices are the scenario's.
    """
    from evse_sim import scenarios

    try:
        scenario = scenarios.load_scenario(cfg.scenario, stations=cfg.stations, seed=cfg.seed)
    except (scenarios.ScenarioError, ValueError) as err:
        raise DemoConfigError(f"--scenario {cfg.scenario!r}: {err}") from err
    start = cfg.start or datetime.combine(cfg.today, scenario.start.timetz())
    evs = [e.model_copy(update={"id_token": e.id_token or f"DEMO-{e.id}"[:36]}) for e in scenario.evs]
    scenario = scenario.at(start).model_copy(update={"evs": evs})
    evse_specs = {(st.id, i): e.spec() for st in scenario.stations for i, e in enumerate(st.evses, start=1)}
    first = scenario.stations[0]
    cars = [car_spec(ev.spec(start), ev.station or "", ev.evse,
                     evse_specs.get((ev.station or "", ev.evse), first.evses[0].spec()))
            for ev in scenario.evs]
    limits = scenario.series("import_limit_kw")
    prices = PriceSeries(start, scenario.step_minutes, tuple(scenario.series("import_price")))
    return FleetPlan(
        station_ids=[st.id for st in scenario.stations], cars=cars,
        id_tokens={ev.id: ev.id_token for ev in scenario.evs}, site_limit_kw=float(min(limits)),
        prices=prices, site_id=scenario.site.id or "default", start=start, sim=scenario,
        notes={"scenario": scenario.name, "description": scenario.description, "source": scenario.source,
               "scenario_headroom_kw": [min(limits), max(limits)]},
    )


async def provision(redis: Redis, keys: Keys, cfg: DemoConfig, plan: FleetPlan, clock: ScaledClock) -> None:
    """Shared clock, site limit and prices, stations with credentials, the cars' id tokens."""
    from csms.store.provisioning import add_id_token, provision_station, set_site_limit

    await publish_shared_clock(redis, keys.clock(), clock.spec(), "demo")  # its csms node keeps it alive
    now = clock.now()
    await set_site_limit(redis, keys, plan.site_id, plan.site_limit_kw, name="demo depot", now=now)
    await redis.set(keys.site_prices(plan.site_id), json.dumps(plan.prices.repeated(3).to_json()))
    for sid in plan.station_ids:
        await provision_station(redis, keys, sid, STATION_PASSWORD, plan.site_id, iterations=1000, now=now)
    for token in sorted(set(plan.id_tokens.values())):
        await add_id_token(redis, keys, token)


DEMO_RESERVE_KW_PER_EVSE = 0.0
"""The demo's reservation (TxDefaultProfile of every EVSE): the csms default, zero until admitted.

A plug-in draws nothing until its session's first TxProfile (a provisional share at its charging
needs, its plan, or an interim share when the plan is late). With a reservation of the EVSE
maximum (min(EVSE max, site limit / EVSEs), 3.6 kW here, the demo's setting until 2026-12-06) every
plug-in drew that power from 16:00 to 21:00 at 0.16-0.24 EUR/kWh for the loop's latency, which the
speed multiplies (0.3 s real = 3.6 simulated minutes at 720x): 4-12 kWh a day in the measured runs,
a dearer day and a peak 1.16-1.19x the min-peak of the same cost (docs/demo.md)."""


def reserve_kw_per_evse(plan: FleetPlan) -> float:
    """`reserve_kw_per_evse` the demo gives the csms (`DEMO_RESERVE_KW_PER_EVSE`, at most the largest car)."""
    return min(DEMO_RESERVE_KW_PER_EVSE, max((c.max_kw for c in plan.cars), default=0.0))


@contextlib.asynccontextmanager
async def csms_running(redis_url: str, keys: Keys, clock: ScaledClock, cfg: DemoConfig, plan: FleetPlan,
                       ocpp_port: int, api_port: int) -> AsyncIterator[Any]:
    """The csms (OCPP server, smart charging, dashboard without auth) until the block exits."""
    from csms import app
    from csms.settings import load_settings

    settings = load_settings(
        redis_url=redis_url, redis_prefix=keys.prefix, host="127.0.0.1", port=ocpp_port,
        api_host="127.0.0.1", api_port=api_port, api_auth=False,
        default_site=plan.site_id, default_site_limit_kw=plan.site_limit_kw,
        heartbeat_interval_s=3600, log_level="WARNING",
        # no interim_profile_after_s of its own: a plug-in draws nothing until admitted (the
        # reservation, below), an ISO 15118 car gets its provisional share of the unallocated headroom
        # at its needs, and a late plan only lets the unplanned sessions share what the plan leaves in
        # its cheapest steps, so the csms default (5 real s) serves at every speed (docs/demo.md)
        # default profiles on every EVSE (0 W, `DEMO_RESERVE_KW_PER_EVSE`): a plug-in never draws
        # before its first TxProfile, and the site limit holds even while the loop catches up
        fallback_limit_kw=max(c.max_kw for c in plan.cars) if plan.cars else None,
        reserve_kw_per_evse=reserve_kw_per_evse(plan),
    )
    async with app.running_csms(settings, clock=clock) as running:
        yield running


async def start_csms(redis_url: str, keys: Keys, clock: ScaledClock, cfg: DemoConfig, plan: FleetPlan,
                     ocpp_port: int, api_port: int) -> tuple[asyncio.Task[None], asyncio.Event]:
    """The csms in its own task (so its shutdown can be bounded); returns once it is serving."""
    ready: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    stop = asyncio.Event()

    async def body() -> None:
        async with csms_running(redis_url, keys, clock, cfg, plan, ocpp_port, api_port) as node:
            ready.set_result(node)
            await stop.wait()

    task = asyncio.create_task(body(), name="csms")
    await asyncio.wait({ready, task}, return_when=asyncio.FIRST_COMPLETED)
    if not ready.done():
        exc = task.exception() if not task.cancelled() else None
        raise ComponentError(f"the csms did not start: {type(exc).__name__}: {exc}") from exc
    return task, stop


async def stop_csms(task: asyncio.Task[None], stop: asyncio.Event, timeout_s: float = 20.0) -> None:
    """Let the csms close its connections and services; cancel it if that takes too long."""
    stop.set()
    await asyncio.wait({task}, timeout=timeout_s)
    await stop_task(task)


async def run_worker(redis_url: str, keys: Keys, clock: ScaledClock, cfg: DemoConfig,
                     plan: FleetPlan) -> None:
    """The optimizer worker until cancelled, on its own Redis connection and the shared clock.

    Debounce and maximum delay are real seconds: at `speed` x they are scaled down so a
    plug-in is planned within a few simulated minutes.
    """
    from optimizer import worker

    debounce_s = min(1.0, 60.0 / cfg.speed)  # at most one simulated minute
    wcfg = worker.WorkerConfig(
        sites=(plan.site_id,), strategy=cfg.strategy, debounce_s=debounce_s,
        max_delay_s=max(0.2, 5 * debounce_s), default_site=plan.site_id, default_limit_kw=plan.site_limit_kw,
        consumer="demo-worker",
    )
    redis = connect(redis_url)
    try:
        await worker.OptimizerWorker(redis, keys, wcfg, clock=clock).run()
    finally:
        await redis.aclose()


def fleet_timing(speed: float) -> dict[str, float]:
    """Simulator timings for a clock speed: a tick every ~30 simulated s, meter values every 5 min."""
    return {
        "tick_real_s": max(0.02, min(0.5, 30.0 / speed)),
        "tx_updated_interval_s": 300,
        "aligned_interval_s": 900,
        "heartbeat_s": 3600,
    }


async def run_fleet(csms_url: str, clock: ScaledClock, cfg: DemoConfig, plan: FleetPlan) -> None:
    """The simulated fleet (evse_sim.fleet.FleetRunner) until cancelled; stations stop cleanly."""
    from evse_sim import fleet

    timing = fleet_timing(cfg.speed)
    config = fleet.FleetConfig(
        csms_url=csms_url, password=STATION_PASSWORD, ramp_per_s=50.0, seed=cfg.seed,
        tick_real_s=timing["tick_real_s"], tx_updated_interval_s=int(timing["tx_updated_interval_s"]),
        aligned_interval_s=int(timing["aligned_interval_s"]), heartbeat_s=int(timing["heartbeat_s"]),
        backoff_base_s=0.2, backoff_max_s=5.0, ocpp=cfg.ocpp,
    )
    runner = fleet.FleetRunner(plan.sim, clock, config)
    # The orchestrator ends the run (cancel) at the end of the window; `run` stops every station.
    await runner.run(duration=cfg.duration * 2 + timedelta(days=1))


STOP_TIMEOUT_S = 20.0  # real seconds a component gets to stop after being cancelled


async def stop_task(task: asyncio.Task[None], timeout_s: float = STOP_TIMEOUT_S) -> None:
    """Cancel `task` and wait for it (bounded); a component's own crash is logged, not re-raised."""
    if not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=timeout_s)
        if not task.done():
            log.error("%s did not stop within %.0f s of being cancelled; cancelling again",
                      task.get_name(), timeout_s)
            task.cancel()
            await asyncio.wait({task}, timeout=5.0)
            if not task.done():
                log.error("%s still running; leaving it to the event loop's shutdown", task.get_name())
                return
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise  # we are being cancelled ourselves, not just the component
    except Exception:
        log.exception("%s failed", task.get_name())


def first_midnight(start: datetime) -> datetime:
    """Midnight (UTC) of the day `start` falls on."""
    return start.replace(hour=0, minute=0, second=0, microsecond=0)
