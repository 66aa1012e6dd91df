"""Block C (authorization): Authorize against id tokens stored in Redis.

Public names: `AuthorizationBlock`.
"""

from __future__ import annotations

from typing import Any

from ocpp.routing import on
from ocpp.v201 import call_result
from ocpp.v201.enums import Action

from csms.core.authorization import authorization_status
from csms.protocol.base import BlockBase
from evfleet.events import EventType


class AuthorizationBlock(BlockBase):
    """C01-C03 (local tokens; no certificate checks)."""

    async def token_status(self, id_token: str, token_type: str | None = None) -> str:
        """Authorization status of an id token (accept-all honoured; NoAuthorization accepted)."""
        if token_type == "NoAuthorization":
            return "Accepted"
        record = await self.env.store.id_token_status(id_token) if id_token else {}
        return authorization_status(record, self.env.settings.accept_all_tokens)

    @on(Action.authorize)
    async def on_authorize(self, id_token: dict[str, Any], **_: Any) -> call_result.Authorize:
        """Look the token up; Unknown when not stored (Accepted with accept-all)."""
        raw = self.payload.get("idToken") or {}
        token, token_type = str(raw.get("idToken", "")), raw.get("type")
        status = await self.token_status(token, token_type)
        await self.env.store.record_event(EventType.AUTHORIZED, self.id, self.site_id, {
            "id_token": token, "type": token_type, "status": status})
        return call_result.Authorize(id_token_info={"status": status})
