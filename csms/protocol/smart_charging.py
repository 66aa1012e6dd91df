"""Block K, messages from stations: NotifyEVChargingNeeds (K15), NotifyEVChargingSchedule (K17),
ReportChargingProfiles, NotifyChargingLimit, ClearedChargingLimit.

Public names: `SmartChargingBlock`.

Outgoing SetChargingProfile & co. go through the command protocol; deciding *what* to send
(and the K17 check of an EV schedule) belongs to `csms.smart_charging`.
"""

from __future__ import annotations

from typing import Any

from ocpp.routing import on
from ocpp.v201 import call_result
from ocpp.v201.enums import Action

from csms.core.charging_needs import charging_needs_record, ev_schedule_record, is_repeated_request
from csms.protocol.base import BlockBase
from evfleet.events import EventType
from evfleet.keys import parse_tx_ref


class SmartChargingBlock(BlockBase):
    """K11-K17 (station side)."""

    @on(Action.notify_ev_charging_needs)
    async def on_notify_ev_charging_needs(self, evse_id: int, **_: Any) -> call_result.NotifyEVChargingNeeds:
        """Rejected without an active transaction on the EVSE; a repeat of the session's request
        (`is_repeated_request`) is Accepted and changes nothing; else store the needs and answer
        Processing (a schedule will follow, smart charging on) or Accepted."""
        eid = int(evse_id)
        ref = await self.env.store.evse_transaction(self.id, eid)
        if not ref:
            await self.env.store.record_event(EventType.EV_CHARGING_NEEDS, self.id, self.site_id, {
                "status": "Rejected", "reason": "no active transaction on this EVSE"}, evse_id=eid)
            return call_result.NotifyEVChargingNeeds(
                status="Rejected", status_info={"reason_code": "NoTransaction"})
        stored, meter_wh = await self.env.store.session_needs(self.id, eid, ref)
        txid = parse_tx_ref(ref).transaction_id
        record = charging_needs_record(self.payload, txid, self.now_iso(), meter_wh, ref)
        repeated = is_repeated_request(stored, record, meter_wh)
        # a repeat changes nothing: the current schedule stands (Accepted), no re-plan, no profile
        status = "Processing" if self.env.settings.smart_charging and not repeated else "Accepted"
        record["status"] = "Repeated" if repeated else status
        await self.env.store.charging_needs(self.id, self.site_id, eid, ref, record, repeated=repeated)
        return call_result.NotifyEVChargingNeeds(status=status)

    @on(Action.notify_ev_charging_schedule)
    async def on_notify_ev_charging_schedule(self, evse_id: int, **_: Any
                                             ) -> call_result.NotifyEVChargingSchedule:
        """Store the EV's own schedule and emit `ev.charging_schedule` (K17 check: smart charging)."""
        eid = int(evse_id)
        ref = await self.env.store.evse_transaction(self.id, eid)
        txid = parse_tx_ref(ref).transaction_id if ref else ""
        record = ev_schedule_record(self.payload, txid, self.now_iso(), ref)
        await self.env.store.ev_schedule(self.id, self.site_id, eid, ref, record)
        return call_result.NotifyEVChargingSchedule(status="Accepted")

    @on(Action.report_charging_profiles)
    async def on_report_charging_profiles(self, request_id: int, evse_id: int,
                                          **_: Any) -> call_result.ReportChargingProfiles:
        """Record the reported profiles (answer to GetChargingProfiles) as `profile.reported`."""
        await self.env.store.record_event(EventType.PROFILE_REPORTED, self.id, self.site_id, {
            "request_id": request_id, "charging_limit_source": self.payload.get("chargingLimitSource"),
            "charging_profile": self.payload.get("chargingProfile"), "tbc": self.payload.get("tbc", False)},
            evse_id=int(evse_id))
        return call_result.ReportChargingProfiles()

    @on(Action.notify_charging_limit)
    async def on_notify_charging_limit(self, **_: Any) -> call_result.NotifyChargingLimit:
        """An external limit (e.g. a local EMS) on the station: recorded as `site.limit` data."""
        await self.env.store.record_event(EventType.PROFILE_REPORTED, self.id, self.site_id, {
            "external_limit": True, **self.payload}, evse_id=self.payload.get("evseId"))
        return call_result.NotifyChargingLimit()

    @on(Action.cleared_charging_limit)
    async def on_cleared_charging_limit(self, **_: Any) -> call_result.ClearedChargingLimit:
        """An external limit was cleared."""
        await self.env.store.record_event(EventType.PROFILE_REPORTED, self.id, self.site_id, {
            "external_limit_cleared": True, **self.payload}, evse_id=self.payload.get("evseId"))
        return call_result.ClearedChargingLimit()
