"""OCPP 1.6J Core: BootNotification, Heartbeat (as block B for 2.0.1).

Public names: `ProvisioningBlock16`.
"""

from __future__ import annotations

import functools
from typing import Any

from ocpp.routing import on
from ocpp.v16 import call_result
from ocpp.v16.enums import Action

from csms.protocol.base import BlockBase
from csms.protocol.v16.mapping import boot_info


class ProvisioningBlock16(BlockBase):
    """BootNotification and Heartbeat."""

    @on(Action.boot_notification)
    async def on_boot_notification(self, charge_point_vendor: str, charge_point_model: str,
                                   **_: Any) -> call_result.BootNotification:
        """Store vendor/model/serial/firmware; Accepted with the configured heartbeat interval.
        The node then reads the station's configuration (GetConfiguration) from a task."""
        interval = self.env.settings.heartbeat_interval_s
        await self.env.store.boot(self.id, self.site_id, boot_info(self.payload), "", interval)
        self.booted.set()
        for callback in self.env.boot_accepted:  # run once the answer is on the wire
            self.after_answer(functools.partial(callback, self.id))
        return call_result.BootNotification(current_time=self.now_iso(), interval=interval, status="Accepted")

    @on(Action.heartbeat)
    async def on_heartbeat(self, **_: Any) -> call_result.Heartbeat:
        """Record `last_seen`; answer the clock time."""
        await self.env.store.seen(self.id)
        return call_result.Heartbeat(current_time=self.now_iso())
