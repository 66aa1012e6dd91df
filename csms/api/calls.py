"""Calls to stations for the API: the caller side of the documented command protocol.

`CommandClientCaller` uses `csms.commands.CommandClient`, which follows docs/redis-schema.md
("Command protocol"): check the station's node, LPUSH the request, BRPOP the one reply.
`call_or_raise` turns each outcome into the API's answer (offline -> 409, timeout -> 504,
CALLERROR -> 502, request rejected by the node -> 422).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from csms.api.errors import InvalidInput, StationCallFailed, StationOffline, StationTimeout
from csms.commands import CommandClient


@dataclass(frozen=True)
class CallReply:
    """The one reply to a call request."""

    station_id: str
    action: str
    outcome: str  # result | call_error | timeout | offline | invalid
    payload: dict[str, Any] | None
    error: dict[str, Any] | None
    request_id: str

    def to_dict(self) -> dict[str, Any]:
        """JSON view for API responses."""
        return {"request_id": self.request_id, "station_id": self.station_id, "action": self.action,
                "outcome": self.outcome, "payload": self.payload, "error": self.error}


class StationCaller(Protocol):
    """Sends one OCPP CALL to a station and returns its reply."""

    async def call(self, station_id: str, action: str, payload: dict[str, Any],
                   timeout_s: float) -> CallReply:
        """Send `action` with its camelCase `payload` and wait for the reply."""
        ...


class CommandClientCaller:
    """`StationCaller` over the csms core's `csms.commands.CommandClient` (works from any process)."""

    def __init__(self, client: CommandClient) -> None:
        self._client = client

    async def call(self, station_id: str, action: str, payload: dict[str, Any],
                   timeout_s: float) -> CallReply:
        """Route the call through Redis to the node holding the station and wait for its reply."""
        reply = await self._client.call(station_id, action, payload, timeout_s)
        return CallReply(station_id=reply.station_id, action=reply.action, outcome=reply.outcome.value,
                         payload=reply.payload, error=reply.error, request_id=reply.request_id)


async def call_or_raise(caller: StationCaller, station_id: str, action: str, payload: dict[str, Any],
                        timeout_s: float) -> CallReply:
    """Call and map a failed outcome to the matching ApiError."""
    reply = await caller.call(station_id, action, payload, timeout_s)
    details = reply.to_dict()
    if reply.outcome == "result":
        return reply
    if reply.outcome == "offline":
        raise StationOffline(f"station {station_id} is offline; {action} was not sent", details)
    if reply.outcome == "timeout":
        raise StationTimeout(f"station {station_id} did not answer {action} in time", details)
    if reply.outcome == "call_error":
        err = reply.error or {}
        raise StationCallFailed(
            f"station {station_id} answered {action} with {err.get('code', 'an error')}: "
            f"{err.get('description', '')}".rstrip(": "), details)
    err = reply.error or {}
    raise InvalidInput(f"{action} request rejected: {err.get('description') or err.get('code') or 'invalid'}",
                       details, code="invalid_call")
