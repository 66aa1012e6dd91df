"""OCPP 1.6J test stations on the `ocpp` library's v16 ChargePoint, for the closed loop of
`tests.loop.harness` (same monitor: the sum of the limits in force at the stations)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import websockets
from ocpp.charge_point import snake_to_camel_case
from ocpp.routing import on
from ocpp.v16 import ChargePoint, call, call_result
from ocpp.v16.enums import Action

from csms.core.security import basic_auth_header
from csms.store.provisioning import provision_station
from evfleet.txprofile import profile_series_w, value_at
from tests.loop.harness import PASSWORD, SITE, Loop, iso

MAX_W = 11_040.0


def as_201(payload16: dict[str, Any]) -> dict[str, Any]:
    """A 1.6 SetChargingProfile payload in the 2.0.1 shape `profile_series_w` reads."""
    cp = payload16["csChargingProfiles"]
    return {"evseId": payload16["connectorId"], "chargingProfile": {**cp, "chargingSchedule": [
        cp["chargingSchedule"]]}}


class Station16(ChargePoint):
    """A one-connector 1.6J AC charge point (3 x 16 A) that obeys its profiles."""

    def __init__(self, station_id: str, connection: Any, max_periods: int = 3,
                 smart_charging: bool = True) -> None:
        super().__init__(station_id, connection)
        self.max_periods = max_periods
        self.smart_charging = smart_charging
        self.raw_profiles: list[dict[str, Any]] = []  # accepted, as received (1.6)
        self.profiles: list[dict[str, Any]] = []  # accepted TxProfiles, 2.0.1 shape
        self.defaults: list[dict[str, Any]] = []  # accepted TxDefault/ChargePointMax profiles
        self.config_asked = asyncio.Event()
        self.transaction_id: int | None = None
        self.remote_stops: list[int] = []
        self.tasks: list[asyncio.Task[Any]] = []

    @on(Action.get_configuration)
    async def on_get_configuration(self, key: list[str] | None = None,
                                   **_: Any) -> call_result.GetConfiguration:
        self.config_asked.set()
        profiles = "Core,FirmwareManagement,RemoteTrigger" + (",SmartCharging" if self.smart_charging else "")
        values = {"SupportedFeatureProfiles": profiles, "ChargingScheduleAllowedChargingRateUnit": "Current",
                  "ChargingScheduleMaxPeriods": str(self.max_periods), "ChargeProfileMaxStackLevel": "8",
                  "MaxChargingProfilesInstalled": "10", "NumberOfConnectors": "1"}
        wanted = key or list(values)
        return call_result.GetConfiguration(
            configuration_key=[{"key": k, "readonly": True, "value": values[k]}
                               for k in wanted if k in values],
            unknown_key=[k for k in wanted if k not in values] or None)

    @on(Action.set_charging_profile)
    async def on_set_charging_profile(self, connector_id: int, cs_charging_profiles: dict[str, Any],
                                      **_: Any) -> call_result.SetChargingProfile:
        if not self.smart_charging:
            return call_result.SetChargingProfile(status="NotSupported")
        payload = snake_to_camel_case({"connector_id": connector_id,
                                       "cs_charging_profiles": cs_charging_profiles})
        cp = payload["csChargingProfiles"]
        assert len(cp["chargingSchedule"]["chargingSchedulePeriod"]) <= self.max_periods
        if cp["chargingProfilePurpose"] == "TxProfile" and cp.get("transactionId") != self.transaction_id:
            return call_result.SetChargingProfile(status="Rejected")
        self.raw_profiles.append(payload)
        kept = self.profiles if cp["chargingProfilePurpose"] == "TxProfile" else self.defaults
        kept.append(as_201(payload))
        return call_result.SetChargingProfile(status="Accepted")

    @on(Action.get_composite_schedule)
    async def on_get_composite_schedule(self, connector_id: int, duration: int,
                                        **_: Any) -> call_result.GetCompositeSchedule:
        if not self.raw_profiles:
            return call_result.GetCompositeSchedule(status="Rejected")
        sched = self.raw_profiles[-1]["csChargingProfiles"]["chargingSchedule"]
        return call_result.GetCompositeSchedule(
            status="Accepted", connector_id=connector_id, schedule_start=sched["startSchedule"],
            charging_schedule={"duration": duration, "start_schedule": sched["startSchedule"],
                               "charging_rate_unit": sched["chargingRateUnit"],
                               "charging_schedule_period": [  # the library parses Decimal, cannot send it
                                   {"start_period": p["startPeriod"], "limit": float(p["limit"])}
                                   for p in sched["chargingSchedulePeriod"]]})

    @on(Action.remote_stop_transaction)
    async def on_remote_stop_transaction(self, transaction_id: int,
                                         **_: Any) -> call_result.RemoteStopTransaction:
        if transaction_id != self.transaction_id:
            return call_result.RemoteStopTransaction(status="Rejected")
        self.remote_stops.append(transaction_id)
        self.tasks.append(asyncio.create_task(self.stop_tx(reason="Remote")))
        return call_result.RemoteStopTransaction(status="Accepted")

    def limit_w_at(self, at: datetime, tx_active: bool = True) -> float:
        """Limit in force at `at` (no profile: the station maximum)."""
        if not tx_active:
            return 0.0
        fallback = MAX_W
        if self.defaults:
            start, periods = profile_series_w(self.defaults[-1])
            fallback = min(fallback, value_at(periods, (at - start).total_seconds()))
        if not self.profiles:
            return fallback
        start, periods = profile_series_w(self.profiles[-1])
        return fallback if at < start else value_at(periods, (at - start).total_seconds())

    async def boot(self) -> None:
        """BootNotification + StatusNotification Available."""
        res = await self.call(call.BootNotification(charge_point_vendor="Test", charge_point_model="Loop16"),
                              suppress=False)
        assert res.status == "Accepted"
        await self.call(call.StatusNotification(connector_id=1, error_code="NoError", status="Available"),
                        suppress=False)

    async def start_tx(self, id_tag: str = "TAG-1", meter_start: int = 1000) -> int:
        """StartTransaction on connector 1 (Preparing, then Charging)."""
        await self.call(call.StatusNotification(connector_id=1, error_code="NoError", status="Preparing"),
                        suppress=False)
        self.start_request = call.StartTransaction(connector_id=1, id_tag=id_tag, meter_start=meter_start,
                                                   timestamp=iso(datetime.now(UTC)))
        res = await self.call(self.start_request, suppress=False)
        self.transaction_id = int(res.transaction_id)
        await self.call(call.StatusNotification(connector_id=1, error_code="NoError", status="Charging"),
                        suppress=False)
        return self.transaction_id

    async def stop_tx(self, reason: str = "Local", meter_stop: int = 5000) -> None:
        """StopTransaction with transactionData, then Available."""
        assert self.transaction_id is not None
        now = iso(datetime.now(UTC))
        await self.call(call.StopTransaction(
            meter_stop=meter_stop, timestamp=now, transaction_id=self.transaction_id, reason=reason,
            id_tag="TAG-1", transaction_data=[{"timestamp": now, "sampled_value": [
                {"value": str(meter_stop), "measurand": "Energy.Active.Import.Register", "unit": "Wh"},
                {"value": "55", "measurand": "SoC", "unit": "Percent"}]}]), suppress=False)
        await self.call(call.StatusNotification(connector_id=1, error_code="NoError", status="Available"),
                        suppress=False)
        self.transaction_id = None


async def add_station16(lp: Loop, station_id: str, **kwargs: Any) -> Station16:
    """Provision, connect (subprotocol ocpp1.6) and boot a 1.6 station on the loop's site."""
    await provision_station(lp.redis, lp.keys, station_id, PASSWORD, site_id=SITE, iterations=1000)
    ws = await websockets.connect(
        lp.node.station_url(station_id), subprotocols=["ocpp1.6"],  # type: ignore[list-item]
        additional_headers={"Authorization": basic_auth_header(station_id, PASSWORD)})
    assert ws.subprotocol == "ocpp1.6"
    cp = Station16(station_id, ws, **kwargs)
    lp._tasks.append(asyncio.create_task(cp.start()))
    await lp.redis.hset(lp.keys.station_evse(station_id, 1), mapping={
        "max_power_w": str(MAX_W), "phases": "3", "voltage_v": "230"})
    await cp.boot()
    lp.stations[station_id] = cp  # type: ignore[assignment]
    lp.active[station_id] = False
    return cp


class SiteMonitor:
    """Samples, every 20 ms, the sum of the limits in force at every station with a running session
    (a station without any accepted profile counts at its maximum, like a car plugged into it)."""

    def __init__(self, lp: Loop, grace_s: float = 1.0) -> None:
        self.lp = lp
        self.grace_s = grace_s
        self.samples = 0
        self.max_sum_w = 0.0
        self.violations: list[tuple[str, float, float]] = []
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        bound_w, seen_w, lowered_at = 0.0, 0.0, -1e9
        loop = asyncio.get_running_loop()
        while True:
            limit_w = await self.lp.site_limit_w()
            if limit_w < seen_w:
                lowered_at = loop.time()
            seen_w = limit_w
            if limit_w >= bound_w or loop.time() - lowered_at > self.grace_s:
                bound_w = limit_w
            now = datetime.now(UTC)
            total = sum(cp.limit_w_at(now, self.lp.active[sid]) for sid, cp in self.lp.stations.items())
            self.samples += 1
            self.max_sum_w = max(self.max_sum_w, total)
            if total > max(limit_w, bound_w) + 1.0:
                self.violations.append((iso(now), total, max(limit_w, bound_w)))
            await asyncio.sleep(0.02)

    def stop(self) -> None:
        """Stop sampling."""
        self.task.cancel()
