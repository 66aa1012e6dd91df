"""OCPP 1.6J Core: StatusNotification (as block G for 2.0.1); connector N is EVSE N.

Public names: `AvailabilityBlock16`.
"""

from __future__ import annotations

from typing import Any

from ocpp.routing import on
from ocpp.v16 import call_result
from ocpp.v16.enums import Action

from csms.protocol.base import BlockBase
from csms.protocol.v16.mapping import connector_status, status_event
from evfleet.events import EventType
from evfleet.keys import parse_tx_ref


class AvailabilityBlock16(BlockBase):
    """StatusNotification: stored as the 2.0.1 connector status (the 1.6 one in the event)."""

    @on(Action.status_notification)
    async def on_status_notification(self, connector_id: int, error_code: str, status: str,
                                     **_: Any) -> call_result.StatusNotification:
        """Connector 0 (the charge point) -> station `station_status`; others -> EVSE connector 1."""
        ts = str(self.payload.get("timestamp") or self.now_iso())
        detail = {"ocpp16_status": status, "error_code": error_code, "info": self.payload.get("info"),
                  "vendor_error_code": self.payload.get("vendorErrorCode")}
        if int(connector_id) == 0:
            await self.env.store.record_event(EventType.CONNECTOR_STATUS, self.id, self.site_id, {
                "connector_id": 0, "status": status, "station_ts": ts, **detail},
                station_fields={"station_status": status})
            return call_result.StatusNotification()
        await self.env.store.connector_status(self.id, self.site_id, int(connector_id), 1,
                                              connector_status(status), ts)
        ref = await self.env.store.evse_transaction(self.id, int(connector_id))
        event = status_event(parse_tx_ref(ref).transaction_id, int(connector_id), status, ts) if ref else None
        if event is not None:  # the running transaction's charging state
            await self.env.store.transaction_event(self.id, self.site_id, event, self.payload)
        if error_code != "NoError" or status != connector_status(status):
            await self.env.store.record_event(EventType.REPORT, self.id, self.site_id, {
                "kind": "StatusNotification", **detail}, evse_id=int(connector_id))
        return call_result.StatusNotification()
