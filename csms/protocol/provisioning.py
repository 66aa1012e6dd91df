"""Block B (provisioning): BootNotification, Heartbeat, NotifyReport.

Public names: `ProvisioningBlock`, `evse_facts_from_report`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping
from typing import Any

from ocpp.routing import on
from ocpp.v201 import call_result
from ocpp.v201.enums import Action

from csms.protocol.base import BlockBase
from evfleet.events import EventType

SUPPLY_PHASES = frozenset({0, 1, 2, 3})
"""`EVSE.SupplyPhases` values an EVSE can report (0: DC)."""


def evse_facts_from_report(report_data: Iterable[Mapping[str, Any]]) -> dict[int, dict[str, str]]:
    """EVSE hardware facts from NotifyReport data: `EVSE.Power` maxLimit -> max_power_w,
    `EVSE.SupplyPhases` -> phases, 0 (DC) -> rate unit W (camelCase reportData entries). A value no
    EVSE can have (a maximum that is not a positive finite number, phases outside 0-3, text) is
    passed over: that EVSE keeps the default, and the rest of the report counts."""
    facts: dict[int, dict[str, str]] = {}
    for item in report_data:
        comp = item.get("component") or {}
        evse = comp.get("evse") or {}
        if comp.get("name") != "EVSE" or "id" not in evse:
            continue
        name = (item.get("variable") or {}).get("name")
        eid = int(evse["id"])
        chars = item.get("variableCharacteristics") or {}
        actual = next((a.get("value") for a in item.get("variableAttribute") or []
                       if a.get("type", "Actual") == "Actual"), None)
        try:
            if name == "Power" and chars.get("maxLimit") is not None:
                max_power_w = float(chars["maxLimit"])
                if not math.isfinite(max_power_w) or max_power_w <= 0:  # no power the csms could budget
                    continue
                facts.setdefault(eid, {})["max_power_w"] = repr(max_power_w)
            elif name == "SupplyPhases" and actual not in (None, ""):
                phases = int(float(actual))
                if phases not in SUPPLY_PHASES:  # "7", "-3": no EVSE has them; the default stays
                    continue
                if phases == 0:  # OCPP 2.0.1 device model: 0 = DC. Its profiles go in W: amperes of a DC
                    # EVSE depend on the battery voltage, which the csms does not know (at the 230 V
                    # default a 400 V DC EVSE would draw 1.74x the power the csms counts)
                    facts.setdefault(eid, {}).update({"phases": "1", "rate_unit": "W"})
                else:
                    facts.setdefault(eid, {})["phases"] = str(phases)
        except (TypeError, ValueError, OverflowError):  # "abc", "nan", "inf": the default stays
            continue
    return facts


class ProvisioningBlock(BlockBase):
    """B01-B04, B07-B08."""

    @on(Action.boot_notification)
    async def on_boot_notification(self, charging_station: dict[str, Any], reason: str,
                                   **_: Any) -> call_result.BootNotification:
        """Store vendor/model/serial/firmware; Accepted with the configured heartbeat interval."""
        interval = self.env.settings.heartbeat_interval_s
        cs = self.payload.get("chargingStation", {})
        info = {"vendor": cs.get("vendorName"), "model": cs.get("model"),
                "serial_number": cs.get("serialNumber"), "firmware_version": cs.get("firmwareVersion")}
        await self.env.store.boot(self.id, self.site_id, info, reason, interval)
        self.booted.set()
        for callback in self.env.boot_accepted:  # run once the answer is on the wire
            self.after_answer(functools.partial(callback, self.id))
        return call_result.BootNotification(current_time=self.now_iso(), interval=interval, status="Accepted")

    @on(Action.heartbeat)
    async def on_heartbeat(self, **_: Any) -> call_result.Heartbeat:
        """Record `last_seen`; answer the clock time."""
        await self.env.store.seen(self.id)
        return call_result.Heartbeat(current_time=self.now_iso())

    @on(Action.notify_report)
    async def on_notify_report(self, request_id: int, seq_no: int, **_: Any) -> call_result.NotifyReport:
        """Record the report as an event; keep EVSE max power / phases when reported."""
        data = self.payload.get("reportData") or []
        for evse_id, facts in evse_facts_from_report(data).items():
            await self.env.store.set_evse_facts(self.id, evse_id, facts)
        await self.env.store.record_event(EventType.REPORT, self.id, self.site_id, {
            "request_id": request_id, "seq_no": seq_no, "tbc": self.payload.get("tbc", False),
            "generated_at": self.payload.get("generatedAt"), "report_data": data})
        return call_result.NotifyReport()
