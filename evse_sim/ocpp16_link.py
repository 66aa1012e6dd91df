"""The OCPP 1.6J side of a simulated station: the same station, EVs and profile store as 2.0.1.

`StationLink16` is the `ocpp` library's v16 `ChargePoint` bound to one WebSocket of a station
core (`evse_sim.core.StationCore`) whose `config.ocpp_version` is "1.6". The core keeps queuing
the messages of its 2.0.1 model and takes the same decisions as under 2.0.1 (`install_profile`,
`composite_schedule`, `remote_start` ...); `call()` sends each message as its 1.6 counterpart
and hands the core a 2.0.1-shaped answer, so physics, offline queue and replays stay one implementation:

- BootNotification, Heartbeat, Authorize (idTag), StatusNotification (connector = EVSE; Occupied
  becomes Preparing, Charging, SuspendedEV/EVSE or Finishing), MeterValues (string values, with
  the CSMS's transactionId);
- TransactionEvent Started -> StartTransaction (held back until the id token is authorized: 1.6
  has no transaction without an idTag), Updated -> MeterValues of the transaction, Ended ->
  StopTransaction with transactionData; the CSMS's integer transactionId is kept per station
  (`Tx16Ids`, survives reconnects), a resent StartTransaction gets the same id;
- 2.0.1-only messages (NotifyEVChargingNeeds, NotifyReport ...) are not sent (1.6 cars give no needs).

CSMS requests: SetChargingProfile/ClearChargingProfile/GetCompositeSchedule with the 1.6 rules
(ChargePointMaxProfile on connector 0 is the station maximum, at most `MAX_PERIODS` periods,
NotSupported for a charger without smart charging), RemoteStart/StopTransaction, Reset,
ChangeAvailability, UnlockConnector, TriggerMessage, Get/ChangeConfiguration, ClearCache,
local list, reservations (Rejected), GetDiagnostics, UpdateFirmware, DataTransfer.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from decimal import Decimal
from types import SimpleNamespace
from typing import Any

from ocpp.routing import after, on
from ocpp.v16 import ChargePoint, call, call_result
from ocpp.v16.enums import Action
from ocpp.v201 import call as call201
from ocpp.v201 import call_result as result201

from evse_sim.core import StationCore
from evse_sim.smart_charging import ChargingProfile, ProfileError, Purpose, RateUnit
from evse_sim.station import SimStation

MAX_PERIODS = 24
"""ChargingScheduleMaxPeriods of a simulated 1.6 charger."""
_STOP_REASON = {
    "EVDeparted": "EVDisconnected",
    "EVDisconnected": "EVDisconnected",
    "Remote": "Remote",
    "DeAuthorized": "DeAuthorized",
    "ImmediateReset": "HardReset",
    "Local": "Local",
    "PowerLoss": "PowerLoss",
    "Reboot": "Reboot",
    "EmergencyStop": "EmergencyStop",
    "UnlockCommand": "UnlockCommand",
}
_PURPOSE_201 = {
    "ChargePointMaxProfile": "ChargingStationMaxProfile",
    "TxDefaultProfile": "TxDefaultProfile",
    "TxProfile": "TxProfile",
}
_TRIGGER_201 = {
    "BootNotification": "BootNotification",
    "Heartbeat": "Heartbeat",
    "MeterValues": "MeterValues",
    "StatusNotification": "StatusNotification",
}
_FREE_ID_TAG = "FREEVEND"


@dataclass
class Tx16Ids:
    """A 1.6 station's view of its transactions: station tx id <-> the CSMS's integer id."""

    ids: dict[str, int] = field(default_factory=dict)
    pending_start: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Started events held back until the transaction has an authorized idTag."""

    def station_tx(self, transaction_id: int) -> str | None:
        """The station's own id of a CSMS transactionId."""
        return next((k for k, v in self.ids.items() if v == transaction_id), None)


def tx16(station: StationCore | SimStation) -> Tx16Ids:
    """The station's 1.6 transaction ids (created on first use, kept in its core across connections)."""
    core = station.core if isinstance(station, SimStation) else station
    state = getattr(core, "ocpp16_tx", None)
    if state is None:
        state = Tx16Ids()
        core.ocpp16_tx = state  # type: ignore[attr-defined]
    return state


def _num(value: Any) -> Any:
    """Decimals the library parsed -> float (nested)."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dict):
        return {k: _num(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_num(v) for v in value]
    return value


def meter_16(meter_value: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """2.0.1 MeterValue list (snake_case) -> 1.6 (value as string, `unit`)."""
    out = []
    for mv in meter_value or []:
        values = []
        for sv in mv.get("sampled_value") or []:
            v16 = {"value": f"{float(sv['value']):g}"}
            for name in ("context", "measurand", "phase", "location"):
                if sv.get(name):
                    v16[name] = sv[name]
            unit = (sv.get("unit_of_measure") or {}).get("unit")
            if unit:
                v16["unit"] = unit
            values.append(v16)
        out.append({"timestamp": mv["timestamp"], "sampled_value": values})
    return out


def _energy_wh(meter_value: list[dict[str, Any]] | None) -> int:
    for mv in reversed(meter_value or []):
        for sv in mv.get("sampled_value") or []:
            if sv.get("measurand") == "Energy.Active.Import.Register":
                return int(float(sv["value"]))
    return 0


def profile_201(cs: dict[str, Any], connector_id: int, ids: Tx16Ids) -> dict[str, Any]:
    """A 1.6 csChargingProfiles (snake_case) as the 2.0.1 chargingProfile the station model reads."""
    cs = _num(cs)
    schedule = dict(cs["charging_schedule"])
    schedule.setdefault("id", int(cs["charging_profile_id"]))
    out = {
        "id": int(cs["charging_profile_id"]),
        "stack_level": int(cs["stack_level"]),
        "charging_profile_purpose": _PURPOSE_201[cs["charging_profile_purpose"]],
        "charging_profile_kind": cs["charging_profile_kind"],
        "charging_schedule": [schedule],
    }
    for name in ("recurrency_kind", "valid_from", "valid_to"):
        if cs.get(name) is not None:
            out[name] = cs[name]
    if cs.get("transaction_id") is not None:
        out["transaction_id"] = ids.station_tx(int(cs["transaction_id"])) or f"unknown-{cs['transaction_id']}"
    return out


class StationLink16(ChargePoint):
    """A simulated station speaking OCPP 1.6J (see the module docstring)."""

    def __init__(self, station: StationCore, connection: Any, response_timeout_s: float) -> None:
        super().__init__(station.id, connection, response_timeout=response_timeout_s)
        self.station = station
        self.ids = tx16(station)
        station.profiles.max_periods = MAX_PERIODS

    async def route_message(self, raw_msg: str) -> None:
        """Count every received frame, then route it as the library does."""
        self.station.stats.received += 1
        await super().route_message(raw_msg)

    # --- outbound: the station's 2.0.1 messages as 1.6 ----------------------------------------
    async def call(
        self,
        payload: Any,
        suppress: bool = True,
        unique_id: Any = None,
        skip_schema_validation: bool = False,
    ) -> Any:
        """Send the 1.6 counterpart of a 2.0.1 message; return a 2.0.1-shaped answer."""
        if isinstance(payload, call201.TransactionEvent):
            return await self._transaction_event(payload)
        msg = self._translate(payload)
        if msg is None:  # nothing to send in 1.6
            return SimpleNamespace(status="Accepted", id_token_info=None)
        result = await super().call(msg, suppress=suppress)
        if isinstance(payload, call201.Authorize):
            return result201.Authorize(id_token_info=dict(result.id_tag_info))
        return result

    def _translate(self, p: Any) -> Any:
        st = self.station
        if isinstance(p, call201.BootNotification):
            cfg = st.config
            return call.BootNotification(
                charge_point_vendor=cfg.vendor[:20],
                charge_point_model=cfg.model[:20],
                charge_point_serial_number=cfg.serial_number[:25] or None,
                firmware_version=cfg.firmware_version[:50] or None,
            )
        if isinstance(p, call201.Heartbeat):
            return call.Heartbeat()
        if isinstance(p, call201.Authorize):
            return call.Authorize(id_tag=str(p.id_token["id_token"])[:20])
        if isinstance(p, call201.StatusNotification):
            return call.StatusNotification(
                connector_id=p.evse_id,
                error_code="NoError",
                status=self._status_16(p.evse_id, p.connector_status),
                timestamp=p.timestamp,
            )
        if isinstance(p, call201.MeterValues):
            evse = st.evses.get(p.evse_id)
            txid = self.ids.ids.get(evse.tx.transaction_id) if evse is not None and evse.tx else None
            return call.MeterValues(
                connector_id=p.evse_id, transaction_id=txid, meter_value=meter_16(p.meter_value)
            )
        return None

    def _status_16(self, evse_id: int, status: str) -> str:
        if status != "Occupied":
            return status
        evse = self.station.evses.get(evse_id)
        if evse is None or evse.tx is None:
            return "Finishing" if evse is not None and evse.ev is not None else "Preparing"
        if not evse.tx.authorized:
            return "Preparing"
        state = evse.tx.charging_state
        return state if state in ("Charging", "SuspendedEV", "SuspendedEVSE") else "Charging"

    async def _transaction_event(self, p: Any) -> Any:
        info = p.transaction_info
        sim_tx = str(info["transaction_id"])
        evse_id = int((p.evse or {}).get("id", 1))
        token = (p.id_token or {}).get("id_token")
        if p.event_type == "Started":
            self.ids.pending_start[sim_tx] = {
                "connector_id": evse_id,
                "meter_start": _energy_wh(p.meter_value),
                "timestamp": p.timestamp,
            }
            evse = self.station.evses.get(evse_id)
            free = evse is not None and evse.ev is not None and evse.ev.spec.id_token in (None, "")
            if token is None and not free:
                return result201.TransactionEvent()  # wait for the authorized idTag (Updated)
            token = token or _FREE_ID_TAG
        if (
            sim_tx not in self.ids.ids
            and sim_tx in self.ids.pending_start
            and (token or p.event_type == "Ended")
        ):
            if p.event_type == "Ended" and token is None:
                self.ids.pending_start.pop(sim_tx)  # never authorized: no 1.6 transaction existed
                return result201.TransactionEvent()
            start = self.ids.pending_start[sim_tx]
            res = await super().call(call.StartTransaction(id_tag=str(token)[:20], **start), suppress=False)
            self.ids.ids[sim_tx] = int(res.transaction_id)
            self.ids.pending_start.pop(sim_tx)
            if p.event_type != "Ended":
                return result201.TransactionEvent(id_token_info=dict(res.id_tag_info))
        txid = self.ids.ids.get(sim_tx)
        if txid is None:
            return result201.TransactionEvent()
        if p.event_type == "Ended":
            reason = _STOP_REASON.get(str(info.get("stopped_reason") or "Local"), "Other")
            await super().call(
                call.StopTransaction(
                    meter_stop=_energy_wh(p.meter_value),
                    timestamp=p.timestamp,
                    transaction_id=txid,
                    reason=reason,
                    transaction_data=meter_16(p.meter_value) or None,
                ),
                suppress=False,
            )
            return result201.TransactionEvent()
        if p.meter_value:
            await super().call(
                call.MeterValues(
                    connector_id=evse_id, transaction_id=txid, meter_value=meter_16(p.meter_value)
                ),
                suppress=False,
            )
        return result201.TransactionEvent()

    # --- inbound: smart charging ----------------------------------------------------------
    def _smart(self) -> bool:
        return self.station.smart_charging

    @on(Action.set_charging_profile)
    def on_set_charging_profile(
        self, connector_id: int, cs_charging_profiles: dict[str, Any], **_: Any
    ) -> call_result.SetChargingProfile:
        """Install a profile (connector 0: station-wide) with the 1.6 rules."""
        if not self._smart():
            return call_result.SetChargingProfile(status="NotSupported")
        st = self.station
        data = profile_201(cs_charging_profiles, connector_id, self.ids)
        if (data["charging_profile_purpose"] == "ChargingStationMaxProfile") != (connector_id == 0):
            return call_result.SetChargingProfile(status="Rejected")
        try:
            profile = ChargingProfile.from_ocpp(data)
        except ProfileError:
            return call_result.SetChargingProfile(status="Rejected")
        if not st.install_profile(connector_id, profile).accepted:
            return call_result.SetChargingProfile(status="Rejected")
        return call_result.SetChargingProfile(status="Accepted")

    @on(Action.clear_charging_profile)
    def on_clear_charging_profile(
        self,
        id: int | None = None,
        connector_id: int | None = None,  # noqa: A002
        charging_profile_purpose: str | None = None,
        stack_level: int | None = None,
        **_: Any,
    ) -> call_result.ClearChargingProfile:
        """Remove profiles by id or criteria."""
        if not self._smart():
            return call_result.ClearChargingProfile(status="Unknown")
        removed = self.station.profiles.clear(
            profile_id=id,
            evse_id=connector_id,
            purpose=Purpose(_PURPOSE_201[charging_profile_purpose]) if charging_profile_purpose else None,
            stack_level=stack_level,
        )
        return call_result.ClearChargingProfile(status="Accepted" if removed else "Unknown")

    @on(Action.get_composite_schedule)
    def on_get_composite_schedule(
        self, connector_id: int, duration: int, charging_rate_unit: str | None = None, **_: Any
    ) -> call_result.GetCompositeSchedule:
        """The composite schedule of a connector (0: the station-wide limit)."""
        st = self.station
        now = st.clock.now().replace(microsecond=0)
        comp = st.composite_schedule(connector_id, duration, now) if self._smart() else None
        if comp is None:
            return call_result.GetCompositeSchedule(status="Rejected")
        sched = comp.to_ocpp(RateUnit(charging_rate_unit) if charging_rate_unit else RateUnit.A)
        periods = [
            {
                "start_period": p["startPeriod"],
                "limit": p["limit"],
                **({"number_phases": p["numberPhases"]} if p.get("numberPhases") else {}),
            }
            for p in sched["chargingSchedulePeriod"]
        ]
        return call_result.GetCompositeSchedule(
            status="Accepted",
            connector_id=connector_id,
            schedule_start=sched["scheduleStart"],
            charging_schedule={
                "duration": sched["duration"],
                "start_schedule": sched["scheduleStart"],
                "charging_rate_unit": sched["chargingRateUnit"],
                "charging_schedule_period": periods,
            },
        )

    # --- inbound: remote control and configuration -------------------------------------
    @on(Action.remote_start_transaction)
    def on_remote_start_transaction(
        self, id_tag: str, connector_id: int | None = None, **_: Any
    ) -> call_result.RemoteStartTransaction:
        """Start (or authorize) a transaction for `id_tag`."""
        ok, _tx = self.station.remote_start(
            connector_id, {"id_token": id_tag, "type": "Central"}, next(_REMOTE_IDS), None
        )
        return call_result.RemoteStartTransaction(status="Accepted" if ok else "Rejected")

    @on(Action.remote_stop_transaction)
    def on_remote_stop_transaction(self, transaction_id: int, **_: Any) -> call_result.RemoteStopTransaction:
        """Stop the transaction the CSMS knows as `transaction_id`."""
        sim_tx = self.ids.station_tx(int(transaction_id))
        ok = sim_tx is not None and self.station.remote_stop(sim_tx)
        return call_result.RemoteStopTransaction(status="Accepted" if ok else "Rejected")

    @on(Action.reset)
    def on_reset(self, type: str, **_: Any) -> call_result.Reset:  # noqa: A002
        """Hard = Immediate, Soft = OnIdle."""
        return call_result.Reset(
            status=self.station.request_reset("Immediate" if type == "Hard" else "OnIdle", None)
        )

    @after(Action.reset)
    def after_reset(self, **_: Any) -> None:
        """Reboot after the Reset answer has been sent."""
        self.station.perform_pending_reset()

    @on(Action.change_availability)
    def on_change_availability(
        self,
        connector_id: int,
        type: str,  # noqa: A002
        **_: Any,
    ) -> call_result.ChangeAvailability:
        """Connector 0: the whole station."""
        return call_result.ChangeAvailability(
            status=self.station.change_availability(type == "Operative", connector_id or None)
        )

    @on(Action.unlock_connector)
    def on_unlock_connector(self, connector_id: int, **_: Any) -> call_result.UnlockConnector:
        """Unlocked / UnlockFailed."""
        status = self.station.unlock(connector_id, 1)
        return call_result.UnlockConnector(
            status=status if status in ("Unlocked", "UnlockFailed") else "UnlockFailed"
        )

    @on(Action.trigger_message)
    def on_trigger_message(
        self, requested_message: str, connector_id: int | None = None, **_: Any
    ) -> call_result.TriggerMessage:
        """Queue the requested message (DiagnosticsStatus/FirmwareStatus: NotImplemented)."""
        name = _TRIGGER_201.get(requested_message)
        status = self.station.trigger(name, connector_id) if name else "NotImplemented"
        return call_result.TriggerMessage(
            status=status if status in ("Accepted", "Rejected") else "NotImplemented"
        )

    @on(Action.get_configuration)
    def on_get_configuration(self, key: list[str] | None = None, **_: Any) -> call_result.GetConfiguration:
        """The configuration keys the CSMS reads after boot (smart charging facts)."""
        st = self.station
        profiles = "Core,FirmwareManagement,LocalAuthListManagement,Reservation,RemoteTrigger"
        values = {
            "SupportedFeatureProfiles": profiles + (",SmartCharging" if self._smart() else ""),
            "ChargingScheduleAllowedChargingRateUnit": "Current,Power",
            "ChargingScheduleMaxPeriods": str(MAX_PERIODS),
            "ChargeProfileMaxStackLevel": "8",
            "MaxChargingProfilesInstalled": "16",
            "NumberOfConnectors": str(len(st.evses)),
            "HeartbeatInterval": str(st.heartbeat_s),
            "MeterValueSampleInterval": str(st.tx_updated_s),
        }
        wanted = key or list(values)
        return call_result.GetConfiguration(
            configuration_key=[
                {"key": k, "readonly": k != "HeartbeatInterval", "value": values[k]}
                for k in wanted
                if k in values
            ],
            unknown_key=[k for k in wanted if k not in values] or None,
        )

    @on(Action.change_configuration)
    def on_change_configuration(self, key: str, value: str, **_: Any) -> call_result.ChangeConfiguration:
        """Only HeartbeatInterval can be changed."""
        if key != "HeartbeatInterval":
            return call_result.ChangeConfiguration(status="NotSupported")
        if not value.isdigit() or int(value) <= 0:
            return call_result.ChangeConfiguration(status="Rejected")
        self.station.heartbeat_s = int(value)
        return call_result.ChangeConfiguration(status="Accepted")

    @on(Action.clear_cache)
    def on_clear_cache(self, **_: Any) -> call_result.ClearCache:
        """No authorization cache: Accepted."""
        return call_result.ClearCache(status="Accepted")

    @on(Action.get_local_list_version)
    def on_get_local_list_version(self, **_: Any) -> call_result.GetLocalListVersion:
        """No local list installed."""
        return call_result.GetLocalListVersion(list_version=0)

    @on(Action.send_local_list)
    def on_send_local_list(self, list_version: int, update_type: str, **_: Any) -> call_result.SendLocalList:
        """Local lists are not kept."""
        return call_result.SendLocalList(status="NotSupported")

    @on(Action.reserve_now)
    def on_reserve_now(self, connector_id: int, **_: Any) -> call_result.ReserveNow:
        """Reservations are not simulated."""
        return call_result.ReserveNow(status="Rejected")

    @on(Action.cancel_reservation)
    def on_cancel_reservation(self, reservation_id: int, **_: Any) -> call_result.CancelReservation:
        """Reservations are not simulated."""
        return call_result.CancelReservation(status="Rejected")

    @on(Action.get_diagnostics)
    def on_get_diagnostics(self, location: str, **_: Any) -> call_result.GetDiagnostics:
        """No diagnostics file to upload."""
        return call_result.GetDiagnostics()

    @on(Action.update_firmware)
    def on_update_firmware(self, location: str, retrieve_date: str, **_: Any) -> call_result.UpdateFirmware:
        """Accepted (the simulated firmware does not change)."""
        return call_result.UpdateFirmware()

    @on(Action.data_transfer)
    def on_data_transfer(self, vendor_id: str, **_: Any) -> call_result.DataTransfer:
        """No vendor extensions."""
        return call_result.DataTransfer(status="UnknownVendorId")


_REMOTE_IDS = itertools.count(1)
