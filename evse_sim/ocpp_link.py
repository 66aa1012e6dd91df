"""The OCPP 2.0.1 side of a simulated station: handlers of CSMS requests over the `ocpp` library.

`StationLink` is the library's v201 `ChargePoint` bound to one WebSocket of a station's
sans-IO core (`evse_sim.core.StationCore`, connected by `evse_sim.station.SimStation`).
Handlers are short: payload -> station/profile-store call -> `call_result`. They never
await an outbound call (the library runs them on its receive loop); anything the station
must send in reaction (ReportChargingProfiles, NotifyReport, triggered messages) is queued
in the core and sent by the driver's sender task after the answer.
"""

from __future__ import annotations

from typing import Any

from ocpp.exceptions import NotImplementedError as OcppNotImplemented
from ocpp.routing import after, on
from ocpp.v201 import ChargePoint, call, call_result
from ocpp.v201.enums import Action

from evfleet.clock import Clock
from evfleet.profile import format_time
from evse_sim.core import StationCore
from evse_sim.smart_charging import ChargingProfile, ProfileError, Purpose, RateUnit


def _no_smart_charging(station: StationCore, action: str) -> None:
    """The `no_smart_charging` quirk: CALLERROR NotImplemented for smart-charging requests."""
    if not station.smart_charging:
        raise OcppNotImplemented(description=f"{action} is not implemented by this charger")


def _info(reason: str, detail: str = "") -> dict[str, str]:
    out = {"reason_code": reason[:20]}
    if detail:
        out["additional_info"] = detail[:512]
    return out


class StationLink(ChargePoint):
    """A station's handlers for the CSMS-initiated messages it supports."""

    def __init__(self, station: StationCore, connection: Any, response_timeout_s: float) -> None:
        super().__init__(station.id, connection, response_timeout=response_timeout_s)
        self.station = station

    @property
    def clock(self) -> Clock:
        """The station's clock."""
        return self.station.clock

    async def route_message(self, raw_msg: str) -> None:
        """Count every received frame, then route it as the library does."""
        self.station.stats.received += 1
        await super().route_message(raw_msg)

    # --- K: smart charging ------------------------------------------------------------
    @on(Action.set_charging_profile)
    def on_set_charging_profile(
        self, evse_id: int, charging_profile: dict[str, Any], **_: Any
    ) -> call_result.SetChargingProfile:
        """K01: validate and install a profile."""
        _no_smart_charging(self.station, "SetChargingProfile")
        st = self.station
        if "reject_profiles" in st.config.quirks:
            return call_result.SetChargingProfile(
                status="Rejected", status_info=_info("UnsupportedRequest", "this station ignores profiles"))
        try:
            profile = ChargingProfile.from_ocpp(charging_profile)
        except ProfileError as err:
            return call_result.SetChargingProfile(
                status="Rejected", status_info=_info(err.reason_code, err.detail)
            )
        outcome = st.install_profile(evse_id, profile)
        if not outcome.accepted:
            return call_result.SetChargingProfile(
                status="Rejected", status_info=_info(outcome.reason_code, outcome.detail)
            )
        return call_result.SetChargingProfile(status="Accepted")

    @on(Action.clear_charging_profile)
    def on_clear_charging_profile(
        self,
        charging_profile_id: int | None = None,
        charging_profile_criteria: dict[str, Any] | None = None,
        **_: Any,
    ) -> call_result.ClearChargingProfile:
        """K10: remove profiles by id or by criteria."""
        _no_smart_charging(self.station, "ClearChargingProfile")
        crit = charging_profile_criteria or {}
        purpose = crit.get("charging_profile_purpose")
        if purpose == Purpose.EXTERNAL.value:
            return call_result.ClearChargingProfile(status="Unknown", status_info=_info("InvalidProfile"))
        removed = self.station.profiles.clear(
            profile_id=charging_profile_id,
            evse_id=crit.get("evse_id"),
            purpose=Purpose(purpose) if purpose else None,
            stack_level=crit.get("stack_level"),
        )
        return call_result.ClearChargingProfile(status="Accepted" if removed else "Unknown")

    @on(Action.get_charging_profiles)
    def on_get_charging_profiles(
        self, request_id: int, charging_profile: dict[str, Any], evse_id: int | None = None, **_: Any
    ) -> call_result.GetChargingProfiles:
        """K09: answer at once, then queue ReportChargingProfiles (one per EVSE)."""
        _no_smart_charging(self.station, "GetChargingProfiles")
        purpose = charging_profile.get("charging_profile_purpose")
        found = self.station.profiles.query(
            evse_id=evse_id,
            purpose=Purpose(purpose) if purpose else None,
            stack_level=charging_profile.get("stack_level"),
            ids=charging_profile.get("charging_profile_id"),
        )
        sources = charging_profile.get("charging_limit_source")
        if sources and "CSO" not in sources:
            found = []
        if not found:
            return call_result.GetChargingProfiles(status="NoProfiles")
        by_evse: dict[int, list[dict[str, Any]]] = {}
        for inst in found:
            by_evse.setdefault(inst.evse_id, []).append(_snake(inst.profile.to_ocpp()))
        items = sorted(by_evse.items())
        for i, (eid, profiles) in enumerate(items):
            self.station.queue(
                call.ReportChargingProfiles(
                    request_id=request_id,
                    charging_limit_source="CSO",
                    charging_profile=profiles,
                    evse_id=eid,
                    tbc=True if i < len(items) - 1 else None,
                )
            )
        return call_result.GetChargingProfiles(status="Accepted")

    @on(Action.get_composite_schedule)
    def on_get_composite_schedule(
        self, duration: int, evse_id: int, charging_rate_unit: str | None = None, **_: Any
    ) -> call_result.GetCompositeSchedule:
        """K08: the composite schedule of an EVSE (evse 0: the station-wide limit)."""
        _no_smart_charging(self.station, "GetCompositeSchedule")
        st = self.station
        if evse_id != 0 and evse_id not in st.evses:
            return call_result.GetCompositeSchedule(status="Rejected", status_info=_info("UnknownEvse"))
        comp = st.composite_schedule(evse_id, duration, self.clock.now().replace(microsecond=0))
        if comp is None:
            return call_result.GetCompositeSchedule(status="Rejected", status_info=_info("InvalidValue"))
        unit = RateUnit(charging_rate_unit) if charging_rate_unit else RateUnit.W
        return call_result.GetCompositeSchedule(status="Accepted", schedule=_snake(comp.to_ocpp(unit)))

    # --- F: remote control ----------------------------------------------------------------
    @on(Action.request_start_transaction)
    def on_request_start_transaction(
        self,
        id_token: dict[str, Any],
        remote_start_id: int,
        evse_id: int | None = None,
        charging_profile: dict[str, Any] | None = None,
        **_: Any,
    ) -> call_result.RequestStartTransaction:
        """F01/F02: start or authorize a transaction."""
        profile = None
        if charging_profile is not None:
            try:
                profile = ChargingProfile.from_ocpp(charging_profile)
            except ProfileError as err:
                return call_result.RequestStartTransaction(
                    status="Rejected", status_info=_info(err.reason_code, err.detail)
                )
        ok, tx_id = self.station.remote_start(evse_id, id_token, remote_start_id, profile)
        return call_result.RequestStartTransaction(
            status="Accepted" if ok else "Rejected", transaction_id=tx_id
        )

    @on(Action.request_stop_transaction)
    def on_request_stop_transaction(
        self, transaction_id: str, **_: Any
    ) -> call_result.RequestStopTransaction:
        """F03: stop a running transaction."""
        ok = self.station.remote_stop(transaction_id)
        return call_result.RequestStopTransaction(status="Accepted" if ok else "Rejected")

    @on(Action.get_transaction_status)
    def on_get_transaction_status(
        self, transaction_id: str | None = None, **_: Any
    ) -> call_result.GetTransactionStatus:
        """E14: are messages of this transaction still queued?"""
        st = self.station
        queued = st.outbox.holds_transaction(transaction_id)
        ongoing = None
        if transaction_id is not None:
            ongoing = any(
                e.tx is not None and e.tx.transaction_id == transaction_id for e in st.evses.values()
            )
        return call_result.GetTransactionStatus(messages_in_queue=queued, ongoing_indicator=ongoing)

    @on(Action.trigger_message)
    def on_trigger_message(
        self, requested_message: str, evse: dict[str, Any] | None = None, **_: Any
    ) -> call_result.TriggerMessage:
        """F06: queue the requested message."""
        status = self.station.trigger(requested_message, (evse or {}).get("id"))
        return call_result.TriggerMessage(status=status)

    @on(Action.unlock_connector)
    def on_unlock_connector(self, evse_id: int, connector_id: int, **_: Any) -> call_result.UnlockConnector:
        """F05."""
        return call_result.UnlockConnector(status=self.station.unlock(evse_id, connector_id))

    # --- B / G: provisioning and availability -------------------------------------------
    @on(Action.reset)
    def on_reset(self, type: str, evse_id: int | None = None, **_: Any) -> call_result.Reset:  # noqa: A002
        """B11/B12."""
        return call_result.Reset(status=self.station.request_reset(type, evse_id))

    @after(Action.reset)
    def after_reset(self, **_: Any) -> None:
        """Reboot after the Reset answer has been sent."""
        self.station.perform_pending_reset()

    @on(Action.change_availability)
    def on_change_availability(
        self, operational_status: str, evse: dict[str, Any] | None = None, **_: Any
    ) -> call_result.ChangeAvailability:
        """G03/G04."""
        status = self.station.change_availability(operational_status == "Operative", (evse or {}).get("id"))
        return call_result.ChangeAvailability(status=status)

    @on(Action.get_variables)
    def on_get_variables(self, get_variable_data: list[dict[str, Any]], **_: Any) -> call_result.GetVariables:
        """B06."""
        return call_result.GetVariables(
            get_variable_result=_snake_list(self.station.device.get_variables(get_variable_data))
        )

    @on(Action.set_variables)
    def on_set_variables(self, set_variable_data: list[dict[str, Any]], **_: Any) -> call_result.SetVariables:
        """B05."""
        return call_result.SetVariables(
            set_variable_result=_snake_list(self.station.device.set_variables(set_variable_data))
        )

    @on(Action.get_base_report)
    def on_get_base_report(self, request_id: int, report_base: str, **_: Any) -> call_result.GetBaseReport:
        """B07: answer, then queue NotifyReport in chunks of ItemsPerMessage."""
        st = self.station
        data = [_snake(d) for d in st.device.report(report_base)]
        chunk = int(st.device.get("DeviceDataCtrlr", "ItemsPerMessage"))
        now = format_time(self.clock.now())
        parts = [data[i : i + chunk] for i in range(0, len(data), chunk)] or [[]]
        for seq, part in enumerate(parts):
            st.queue(
                call.NotifyReport(
                    request_id=request_id,
                    generated_at=now,
                    seq_no=seq,
                    report_data=part or None,
                    tbc=True if seq < len(parts) - 1 else None,
                ),
                on_link=True,  # the CSMS asks right after its boot answer, before `link_up`
            )
        return call_result.GetBaseReport(status="Accepted")


def _snake(obj: Any) -> Any:
    """camelCase JSON -> snake_case (the library camel-cases results again on the way out)."""
    from ocpp.charge_point import camel_to_snake_case

    return camel_to_snake_case(obj)


def _snake_list(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [_snake(i) for i in items]
