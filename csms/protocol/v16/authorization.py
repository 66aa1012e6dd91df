"""OCPP 1.6J Core: Authorize (as block C for 2.0.1).

Public names: `AuthorizationBlock16`.
"""

from __future__ import annotations

from typing import Any

from ocpp.routing import on
from ocpp.v16 import call_result
from ocpp.v16.enums import Action

from csms.core.authorization import authorization_status
from csms.protocol.base import BlockBase
from csms.protocol.v16.mapping import id_tag_status
from evfleet.events import EventType


class AuthorizationBlock16(BlockBase):
    """Authorize against the same id tokens as 2.0.1 (1.6 idTags have no type)."""

    async def id_tag_status(self, id_tag: str) -> str:
        """1.6 AuthorizationStatus of an idTag (Unknown and other 2.0.1-only statuses: Invalid)."""
        record = await self.env.store.id_token_status(id_tag) if id_tag else {}
        return id_tag_status(authorization_status(record, self.env.settings.accept_all_tokens))

    @on(Action.authorize)
    async def on_authorize(self, id_tag: str, **_: Any) -> call_result.Authorize:
        """Look the idTag up; record an `authorization` event."""
        status = await self.id_tag_status(id_tag)
        await self.env.store.record_event(EventType.AUTHORIZED, self.id, self.site_id, {
            "id_token": id_tag, "type": None, "status": status})
        return call_result.Authorize(id_tag_info={"status": status})
