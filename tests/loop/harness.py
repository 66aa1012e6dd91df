"""Closed-loop test harness: csms node + optimizer worker + OCPP 2.0.1 stations over real Redis/WebSockets.

The stations are `ocpp` v201 ChargePoint clients that accept (or refuse) SetChargingProfile,
keep the profiles they accepted and can tell the limit in force at any instant, so a monitor
can check the site budget from the stations' side throughout a test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import websockets
from ocpp.charge_point import snake_to_camel_case
from ocpp.exceptions import NotImplementedError as OcppNotImplemented
from ocpp.routing import on
from ocpp.v201 import ChargePoint, call, call_result
from ocpp.v201.enums import Action
from redis.asyncio import Redis

from csms.app import CsmsNode, running_csms
from csms.core.security import basic_auth_header
from csms.settings import CsmsSettings
from csms.store.provisioning import provision_station
from evfleet.clock import RealClock
from evfleet.keys import Keys
from evfleet.store.client import connect_redis
from evfleet.store.layout import resolve_keys
from evfleet.txprofile import profile_series_w, value_at
from optimizer.worker import OptimizerWorker, WorkerConfig

PASSWORD = "loop-test-pass"
LIMIT_GRACE_S = 1.0
"""Seconds the csms gets to bring the applied limits under a lowered site limit."""
SITE = "depot"


def iso(ts: datetime) -> str:
    """OCPP timestamp."""
    return ts.astimezone(UTC).isoformat().replace("+00:00", "Z")


class LoopStation(ChargePoint):
    """A one-EVSE AC station that obeys TxProfiles (3 phases, 230 V, 16 A = 11 kW)."""

    def __init__(self, station_id: str, connection: Any) -> None:
        super().__init__(station_id, connection)
        self.profiles: list[dict[str, Any]] = []  # accepted TxProfiles
        self.defaults: list[dict[str, Any]] = []  # accepted TxDefaultProfiles
        self.refuse_with: str | None = None  # "NotImplemented" or "Rejected"
        self.got_profile = asyncio.Event()
        self.seq = 0
        self.tx_id = ""  # running transaction (a TxProfile applies only to its own transaction)
        self.ignore_limits = False  # non-compliant: accepts profiles and draws its maximum anyway
        self.drawing: dict[str, bool] | None = None  # the loop's `active` map (`Loop.add_station`)

    @on(Action.set_charging_profile)
    async def on_set_charging_profile(self, evse_id: int, charging_profile: dict[str, Any],
                                      **_: Any) -> call_result.SetChargingProfile:
        """Accept and keep the profile (or refuse as configured)."""
        if self.refuse_with == "NotImplemented":
            raise OcppNotImplemented(description="this charger cannot be steered")
        if self.refuse_with == "Rejected":
            return call_result.SetChargingProfile(status="Rejected")
        payload = snake_to_camel_case({"evse_id": evse_id, "charging_profile": charging_profile})
        if payload["chargingProfile"]["chargingProfilePurpose"] == "TxDefaultProfile":
            self.defaults.append(payload)
            return call_result.SetChargingProfile(status="Accepted")
        self.profiles.append(payload)
        self.got_profile.set()
        return call_result.SetChargingProfile(status="Accepted")

    def limit_w_at(self, at: datetime, tx_active: bool = True) -> float:
        """Limit in force at `at` from the last accepted profile (None profile = 11 kW max)."""
        if not tx_active:
            return 0.0
        fallback = 11_040.0
        if self.ignore_limits:
            return fallback
        if self.defaults:
            start, periods = profile_series_w(self.defaults[-1])
            fallback = value_at(periods, (at - start).total_seconds())
        mine = [p for p in self.profiles
                if not self.tx_id or p["chargingProfile"].get("transactionId") == self.tx_id]
        if not mine:
            return fallback
        start, periods = profile_series_w(mine[-1])
        if at < start:
            return fallback
        return value_at(periods, (at - start).total_seconds())

    async def boot(self) -> None:
        """BootNotification + StatusNotification."""
        await self.call(call.BootNotification(charging_station={"model": "Loop", "vendor_name": "Test"},
                                              reason="PowerUp"), suppress=False)
        await self.call(call.StatusNotification(timestamp=iso(datetime.now(UTC)),
                                                connector_status="Available", evse_id=1, connector_id=1),
                        suppress=False)

    async def reboot(self) -> None:
        """A power cycle that loses every profile (a station that keeps none across a reboot), then
        BootNotification + StatusNotification on the same connection."""
        self.profiles.clear()
        self.defaults.clear()
        self.tx_id = ""
        await self.boot()

    async def start_tx(self, txid: str, token: str = "TOKEN-1") -> None:
        """TransactionEvent Started on EVSE 1 (the station draws from before it reports the start)."""
        self.tx_id = txid
        self._draws(True)
        await self.call(call.TransactionEvent(
            event_type="Started", timestamp=iso(datetime.now(UTC)), trigger_reason="CablePluggedIn",
            seq_no=self._next(), transaction_info={"transaction_id": txid, "charging_state": "EVConnected"},
            evse={"id": 1, "connector_id": 1}, id_token={"id_token": token, "type": "ISO14443"}),
            suppress=False)

    async def end_tx(self, txid: str) -> None:
        """TransactionEvent Ended (the station stopped drawing before it reports the end)."""
        self._draws(False)
        await self.call(call.TransactionEvent(
            event_type="Ended", timestamp=iso(datetime.now(UTC)), trigger_reason="EVCommunicationLost",
            seq_no=self._next(),
            transaction_info={"transaction_id": txid, "stopped_reason": "EVDisconnected"},
            evse={"id": 1, "connector_id": 1}), suppress=False)
        self.tx_id = ""

    async def meter(self, txid: str, power_w: float) -> None:
        """TransactionEvent Updated with the power drawn now (what the csms meters)."""
        await self.call(call.TransactionEvent(
            event_type="Updated", timestamp=iso(datetime.now(UTC)), trigger_reason="MeterValuePeriodic",
            seq_no=self._next(), transaction_info={"transaction_id": txid, "charging_state": "Charging"},
            evse={"id": 1, "connector_id": 1},
            meter_value=[{"timestamp": iso(datetime.now(UTC)), "sampled_value": [
                {"value": power_w, "measurand": "Power.Active.Import"}]}]), suppress=False)

    async def needs(self, departure: datetime, energy_wh: int, max_current_a: int = 16,
                    max_tuples: int = 5) -> str:
        """NotifyEVChargingNeeds (AC); returns the CSMS status."""
        res = await self.call(call.NotifyEVChargingNeeds(
            evse_id=1, max_schedule_tuples=max_tuples,
            charging_needs={"requested_energy_transfer": "AC_three_phase", "departure_time": iso(departure),
                            "ac_charging_parameters": {"energy_amount": energy_wh, "ev_min_current": 6,
                                                       "ev_max_current": max_current_a,
                                                       "ev_max_voltage": 400}}), suppress=False)
        return str(res.status)

    async def ev_schedule(self, periods: list[tuple[int, float]], start: datetime) -> None:
        """NotifyEVChargingSchedule with A periods (3 phases) from `start`."""
        await self.call(call.NotifyEVChargingSchedule(
            time_base=iso(start), evse_id=1,
            charging_schedule={"id": 1, "charging_rate_unit": "A", "start_schedule": iso(start),
                               "charging_schedule_period": [
                                   {"start_period": s, "limit": lim, "number_phases": 3}
                                   for s, lim in periods]}),
            suppress=False)

    def _draws(self, drawing: bool) -> None:
        """Mark in the loop's `active` map, at once, whether the EVSE draws power: the monitor must
        not count a session after its end while the test task waits to be woken up after the
        Ended call (under load the csms had re-shared the freed power by then: a false 29,256 W =
        the ended 7,314 + 11,040 + 10,902), nor miss one that started drawing before its Started call
        was answered. Tests may still set the map themselves (same value)."""
        if self.drawing is not None:
            self.drawing[self.id] = drawing

    def _next(self) -> int:
        self.seq += 1
        return self.seq - 1


@dataclass
class Loop:
    """A running closed loop and its handles."""

    node: CsmsNode
    redis: Redis
    keys: Keys
    redis_url: str
    stations: dict[str, LoopStation] = field(default_factory=dict)
    active: dict[str, bool] = field(default_factory=dict)
    worker_task: asyncio.Task[None] | None = None
    worker: OptimizerWorker | None = None
    max_sum_w: float = 0.0
    samples: int = 0
    violations: list[tuple[str, float, float]] = field(default_factory=list)
    stopped: bool = False  # the monitor ends at its next sample (`_stop_tasks`)
    _tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    async def add_station(self, station_id: str,
                          station_class: type[LoopStation] | None = None) -> LoopStation:
        """Provision, connect and boot a station on the site (a `LoopStation`, or `station_class`)."""
        await provision_station(self.redis, self.keys, station_id, PASSWORD, site_id=SITE, iterations=1000)
        ws = await websockets.connect(
            self.node.station_url(station_id), subprotocols=["ocpp2.0.1"],  # type: ignore[list-item]
            additional_headers={"Authorization": basic_auth_header(station_id, PASSWORD)})
        cp = (station_class or LoopStation)(station_id, ws)
        self._tasks.append(asyncio.create_task(cp.start()))
        await cp.boot()
        await self.redis.hset(self.keys.station_evse(station_id, 1), mapping={
            "max_power_w": "11040", "phases": "3", "voltage_v": "230", "rate_unit": "A"})
        self.stations[station_id] = cp
        self.active[station_id] = False
        cp.drawing = self.active
        return cp

    async def set_limit(self, limit_kw: float) -> None:
        """Change the site limit through the one product function (hash + `site.limit`)."""
        from csms.store.provisioning import set_site_limit

        await set_site_limit(self.redis, self.keys, SITE, limit_kw, source="test")

    async def site_limit_w(self) -> float:
        """Current site limit."""
        return float(await self.redis.hget(self.keys.site(SITE), "limit_kw") or 0) * 1000

    def start_worker(self, **overrides: Any) -> None:
        """Run an optimizer worker in this event loop."""
        cfg = WorkerConfig(**{"debounce_s": 0.2, "max_delay_s": 1.0, "solve_timeout_s": 10.0,
                              "block_ms": 100, **overrides})
        self.worker = OptimizerWorker(connect_redis(self.redis_url), self.keys, cfg, clock=RealClock())
        self.worker_task = asyncio.create_task(self.worker.run())

    async def stop_worker(self) -> None:
        """Stop the worker (the optimizer is down)."""
        if self.worker_task:
            self.worker_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.worker_task
            assert self.worker is not None
            await self.worker.redis.aclose()
            self.worker_task = None

    async def _monitor(self) -> None:
        """Every 20 ms: the sum of limits in force at the stations, and of the csms's records.

        After the site limit drops, the csms needs a moment to lower the stations' limits
        (`SmartChargingService.enforce_limit`): for `LIMIT_GRACE_S` the previous, higher limit
        is the bound.
        """
        bound_w, seen_w, lowered_at = 0.0, 0.0, -1e9
        while not self.stopped:
            limit_w = await self.site_limit_w()
            # after the await: a profile accepted during it may start after an earlier `now`, and
            # before its start `limit_w_at` falls back to the default (a false 11,040 W, seen at load 10)
            now = datetime.now(UTC)
            loop_now = asyncio.get_running_loop().time()
            if limit_w < seen_w:
                lowered_at = loop_now
            seen_w = limit_w
            if limit_w >= bound_w or loop_now - lowered_at > LIMIT_GRACE_S:
                bound_w = limit_w
            limit_w = max(limit_w, bound_w)
            station_sum = sum(cp.limit_w_at(now, self.active[sid]) for sid, cp in self.stations.items()
                              if cp.profiles or cp.defaults)
            record_sum = 0.0
            # the records are taken at their own instant, after the await: a record written during
            # it may start after `now` (before its first period `value_at` gives that period's limit)
            records = await self._live_records()
            records_at_s = datetime.now(UTC).timestamp()
            for record in records:
                record_sum += value_at([(t, w) for t, w in record["applied_series_w"]], records_at_s)
            self.samples += 1
            self.max_sum_w = max(self.max_sum_w, station_sum, record_sum)
            if limit_w and max(station_sum, record_sum) > limit_w + 1.0:
                self.violations.append((iso(now), station_sum, record_sum))
            await asyncio.sleep(0.02)

    async def _live_records(self) -> list[dict[str, Any]]:
        """The applied records of the running sessions: a record stays in Redis after its session
        ended (the csms budgets that EVSE at its default then), and counting it beside the shares
        re-given from it was a false 29,256 W (7,314 + 10,971 + 10,971).

        One MULTI/EXEC (records and the EVSEs' `tx_ref`): an atomic snapshot (separate reads could
        pair an old and a new record); a Redis Cluster has no transaction across slots, so there
        they are read one by one."""
        sids = list(self.stations)
        pipe = self.redis.pipeline(transaction=not self.keys.shards)
        for sid in sids:
            pipe.get(self.keys.applied_profile(sid, 1))
            pipe.hget(self.keys.station_evse(sid, 1), "tx_ref")
        replies = await pipe.execute()
        pairs = zip(replies[::2], replies[1::2], strict=True)
        records = [(json.loads(raw), live_ref) for raw, live_ref in pairs if raw]
        return [record for record, live_ref in records if _of_session(record, live_ref)]

    async def wait_for(self, predicate: Any, timeout: float = 10.0, what: str = "") -> Any:
        """Poll an async or sync predicate until truthy."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            value = predicate()
            if asyncio.iscoroutine(value):
                value = await value
            if value:
                return value
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"timed out waiting for {what or predicate}")
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def closed_loop(redis_url: str, limit_kw: float = 20.0, worker: bool = True,
                      services: tuple[str, ...] = (), **settings: Any) -> AsyncIterator[Loop]:
    """csms (smart charging + `services`) + worker + monitor on a fresh site."""
    base: dict[str, Any] = dict(redis_url=redis_url, host="127.0.0.1", port=0, node_id="loop-node",
                                api_enabled=False, heartbeat_interval_s=60, interim_profile_after_s=1.0,
                                replan_threshold_kw=0.5, call_timeout_s=5.0)
    base.update(settings)
    redis = connect_redis(redis_url)
    keys = await resolve_keys(redis, "evfleet", settings.get("redis_shards"))
    await redis.hset(keys.site(SITE), mapping={"limit_kw": repr(limit_kw), "name": "Depot"})
    await redis.sadd(keys.sites(), SITE)
    async with running_csms(CsmsSettings(**base),
                            services=["csms.smart_charging.service:run", *services]) as node:
        lp = Loop(node=node, redis=redis, keys=keys, redis_url=redis_url)
        monitor = asyncio.create_task(lp._monitor())
        lp._tasks.append(monitor)
        if worker:
            lp.start_worker()
        try:
            yield lp
        finally:
            await lp.stop_worker()
            # a monitor that died mid-test stopped checking: that fails the test, it is not swallowed
            died = monitor.exception() if monitor.done() and not monitor.cancelled() else None
            lp.stopped = True
            await _stop_tasks(lp._tasks)  # before Redis closes: the monitor must not be mid-read then
            for cp in lp.stations.values():
                with contextlib.suppress(Exception):
                    await cp._connection.close()
            await redis.aclose()
            if died is not None:
                raise AssertionError(f"the site monitor stopped mid-test: {died!r}") from died


def _of_session(record: dict[str, Any], live_ref: str | None) -> bool:
    """Whether an applied record belongs to the EVSE's running session (one without a `tx_ref`
    counts: nothing says it is over)."""
    return not record.get("tx_ref") or record["tx_ref"] == live_ref


async def _stop_tasks(tasks: list[asyncio.Task[Any]], timeout_s: float = 5.0) -> None:
    """Cancel the loop's tasks (monitor, station readers) and wait until they ended, before the
    connections close under them. A cancel alone did not always end the monitor: one that lands
    while the redis client reads a reply can be swallowed (seen here: the monitor still sampling
    after `cancel()`), and the monitor then died on the closed connection, logged as "Task
    exception was never retrieved ... ConnectionError" after a passing test. The monitor also
    stops on `Loop.stopped`; the wait is bounded so a stuck task cannot hang the teardown."""
    for t in tasks:
        t.cancel()
    done, _ = await asyncio.wait(tasks, timeout=timeout_s)
    for t in done:
        if not t.cancelled():
            t.exception()  # retrieved: a station reader ends with its closed connection


def later(hours: float) -> datetime:
    """Now + hours."""
    return datetime.now(UTC) + timedelta(hours=hours)
