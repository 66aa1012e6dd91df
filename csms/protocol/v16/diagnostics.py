"""OCPP 1.6J: DataTransfer, DiagnosticsStatusNotification, FirmwareStatusNotification.

Public names: `DiagnosticsBlock16`.
"""

from __future__ import annotations

from typing import Any

from ocpp.routing import on
from ocpp.v16 import call_result
from ocpp.v16.enums import Action

from csms.protocol.base import BlockBase
from evfleet.events import EventType


class DiagnosticsBlock16(BlockBase):
    """Recorded as the same events as their 2.0.1 counterparts."""

    @on(Action.data_transfer)
    async def on_data_transfer(self, vendor_id: str, **_: Any) -> call_result.DataTransfer:
        """No vendor extensions are implemented: record it and answer UnknownVendorId."""
        await self.env.store.record_event(EventType.DATA_TRANSFER, self.id, self.site_id, {
            "vendor_id": vendor_id, "message_id": self.payload.get("messageId"),
            "data": self.payload.get("data"), "status": "UnknownVendorId"})
        return call_result.DataTransfer(status="UnknownVendorId")

    @on(Action.diagnostics_status_notification)
    async def on_diagnostics_status_notification(self, status: str, **_: Any
                                                 ) -> call_result.DiagnosticsStatusNotification:
        """A diagnostics upload status (answer to GetDiagnostics), as a `log.status` event."""
        await self.env.store.record_event(EventType.LOG_STATUS, self.id, self.site_id, {
            "status": status, "kind": "Diagnostics"})
        return call_result.DiagnosticsStatusNotification()

    @on(Action.firmware_status_notification)
    async def on_firmware_status_notification(self, status: str, **_: Any
                                              ) -> call_result.FirmwareStatusNotification:
        """A firmware update status (kept on the station hash too)."""
        await self.env.store.record_event(EventType.FIRMWARE_STATUS, self.id, self.site_id,
                                          {"status": status}, station_fields={"firmware_status": status})
        return call_result.FirmwareStatusNotification()
