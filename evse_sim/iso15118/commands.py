"""Errors and commands (outputs) shared by the sans-IO ISO 15118-2 SECC and EVCC models.

See `evse_sim.iso15118.session` for the design (h11-style: events in, commands out).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from evse_sim.iso15118.messages import ResponseCode
from evse_sim.iso15118.schedules import EvPlan


class ProtocolError(Exception):
    """Base of the ISO 15118 model's errors; carries the ISO 15118-2 response code."""

    def __init__(self, message: str,
                 response_code: ResponseCode = ResponseCode.FAILED_SEQUENCE_ERROR) -> None:
        super().__init__(message)
        self.response_code = response_code


class RemoteProtocolError(ProtocolError):
    """The peer sent something the current state does not allow."""


class LocalProtocolError(ProtocolError):
    """Our own side was asked to do something the current state does not allow."""


# --- commands (outputs) ----------------------------------------------------------------


@dataclass(frozen=True)
class Send:
    """Send `message` to the peer."""

    message: Any


@dataclass(frozen=True)
class StartTimer:
    """(Re)start timer `name` to fire `delay_s` seconds from now."""

    name: str
    delay_s: float


@dataclass(frozen=True)
class CancelTimer:
    """Cancel timer `name` if it runs."""

    name: str


@dataclass(frozen=True)
class NotifyChargingNeeds:
    """Station -> CSMS: NotifyEVChargingNeeds with this payload."""

    payload: dict[str, Any]


@dataclass(frozen=True)
class NotifyEvSchedule:
    """Station -> CSMS: NotifyEVChargingSchedule with this payload."""

    payload: dict[str, Any]


@dataclass(frozen=True)
class FollowPlan:
    """EV side: from `time_base` (POSIX s) draw at most the profile of `plan`."""

    plan: EvPlan
    time_base: float


@dataclass(frozen=True)
class SessionEnded:
    """The HLC session ended (`ok` False: failed; the EV falls back to basic charging)."""

    ok: bool
    reason: str


Command = Send | StartTimer | CancelTimer | NotifyChargingNeeds | NotifyEvSchedule | FollowPlan | SessionEnded
