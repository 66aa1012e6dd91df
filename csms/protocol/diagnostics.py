"""Security (A), firmware (L), diagnostics (N) and DataTransfer (P) messages from stations.

Public names: `DiagnosticsBlock`.
"""

from __future__ import annotations

from typing import Any

from ocpp.routing import on
from ocpp.v201 import call_result
from ocpp.v201.enums import Action

from csms.protocol.base import BlockBase
from evfleet.events import EventType


class DiagnosticsBlock(BlockBase):
    """A04, L01, N01, N07, P01: recorded as events."""

    @on(Action.security_event_notification)
    async def on_security_event_notification(self, type: str, timestamp: str,
                                             **_: Any) -> call_result.SecurityEventNotification:
        """Record a security event."""
        await self.env.store.record_event(EventType.SECURITY_EVENT, self.id, self.site_id, {
            "type": type, "timestamp": timestamp, "tech_info": self.payload.get("techInfo")})
        return call_result.SecurityEventNotification()

    @on(Action.firmware_status_notification)
    async def on_firmware_status_notification(self, status: str,
                                              **_: Any) -> call_result.FirmwareStatusNotification:
        """Record a firmware update status (kept on the station hash too)."""
        await self.env.store.record_event(
            EventType.FIRMWARE_STATUS, self.id, self.site_id,
            {"status": status, "request_id": self.payload.get("requestId")},
            station_fields={"firmware_status": status})
        return call_result.FirmwareStatusNotification()

    @on(Action.log_status_notification)
    async def on_log_status_notification(self, status: str, **_: Any) -> call_result.LogStatusNotification:
        """Record a log upload status."""
        await self.env.store.record_event(EventType.LOG_STATUS, self.id, self.site_id, {
            "status": status, "request_id": self.payload.get("requestId")})
        return call_result.LogStatusNotification()

    @on(Action.notify_event)
    async def on_notify_event(self, generated_at: str, seq_no: int, **_: Any) -> call_result.NotifyEvent:
        """Record device-model events (alerts, monitoring) as a report."""
        await self.env.store.record_event(EventType.REPORT, self.id, self.site_id, {
            "kind": "NotifyEvent", "generated_at": generated_at, "seq_no": seq_no,
            "event_data": self.payload.get("eventData")})
        return call_result.NotifyEvent()

    @on(Action.data_transfer)
    async def on_data_transfer(self, vendor_id: str, **_: Any) -> call_result.DataTransfer:
        """No vendor extensions are implemented: record it and answer UnknownVendorId."""
        await self.env.store.record_event(EventType.DATA_TRANSFER, self.id, self.site_id, {
            "vendor_id": vendor_id, "message_id": self.payload.get("messageId"),
            "data": self.payload.get("data"), "status": "UnknownVendorId"})
        return call_result.DataTransfer(status="UnknownVendorId")
