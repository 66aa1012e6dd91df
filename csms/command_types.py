"""The command protocol's value types (pure): request, reply, outcome and the typed errors.

Public names: `Outcome`, `CommandRequest`, `CommandReply`, `CommandError`, `StationOfflineError`,
`CommandTimeoutError`, `StationCallError`, `InvalidCommandError`. The Redis side (sending a
request, waiting for its reply) is `csms.commands.CommandClient`; docs/redis-schema.md has the
wire format.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field


class Outcome(StrEnum):
    """How a command ended."""

    RESULT = "result"
    CALL_ERROR = "call_error"
    TIMEOUT = "timeout"
    OFFLINE = "offline"
    INVALID = "invalid"


class CommandRequest(BaseModel):
    """One request LPUSHed to `node:{node}:commands`."""

    request_id: str
    station_id: str
    action: str
    payload: dict[str, Any]
    timeout_s: float = Field(30.0, gt=0, le=600)
    reply_to: str
    sent_at: str = ""


class CommandError(Exception):
    """A command did not produce a station result."""

    def __init__(self, reply: CommandReply) -> None:
        super().__init__(f"{reply.action} to {reply.station_id}: {reply.outcome.value}"
                         + (f" {reply.error}" if reply.error else ""))
        self.reply = reply


class StationOfflineError(CommandError):
    """The station is not connected (or the node holding it is gone)."""


class CommandTimeoutError(CommandError):
    """The station (or its node) did not answer in time."""


class StationCallError(CommandError):
    """The station answered with a CALLERROR."""

    @property
    def code(self) -> str:
        """OCPP-J error code the station sent (e.g. NotImplemented)."""
        return str((self.reply.error or {}).get("code", ""))


class InvalidCommandError(CommandError):
    """The request was refused before sending (unknown action, schema violation)."""


_ERRORS: dict[Outcome, type[CommandError]] = {
    Outcome.OFFLINE: StationOfflineError, Outcome.TIMEOUT: CommandTimeoutError,
    Outcome.CALL_ERROR: StationCallError, Outcome.INVALID: InvalidCommandError,
}


class CommandReply(BaseModel):
    """The one reply to a request."""

    request_id: str
    station_id: str
    action: str
    outcome: Outcome
    payload: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    answered_at: str = ""

    @property
    def ok(self) -> bool:
        """True if the station answered with a CALLRESULT."""
        return self.outcome is Outcome.RESULT

    def raise_for_outcome(self) -> dict[str, Any]:
        """The station's payload, or raise the matching CommandError."""
        if self.outcome is Outcome.RESULT:
            return self.payload or {}
        raise _ERRORS[self.outcome](self)
