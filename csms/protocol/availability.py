"""Block G (availability): StatusNotification.

Public names: `AvailabilityBlock`.
"""

from __future__ import annotations

from typing import Any

from ocpp.routing import on
from ocpp.v201 import call_result
from ocpp.v201.enums import Action

from csms.protocol.base import BlockBase


class AvailabilityBlock(BlockBase):
    """G01-G04 (the outgoing ChangeAvailability goes through the command protocol)."""

    @on(Action.status_notification)
    async def on_status_notification(self, timestamp: str, connector_status: str, evse_id: int,
                                     connector_id: int, **_: Any) -> call_result.StatusNotification:
        """Store the connector status."""
        await self.env.store.connector_status(self.id, self.site_id, int(evse_id), int(connector_id),
                                              str(connector_status), str(timestamp))
        return call_result.StatusNotification()
