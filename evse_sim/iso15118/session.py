"""Sans-IO ISO 15118-2 (AC, EIM) state machines for a simulated SECC and EVCC.

Rule 1 (after h11's `_state.py`): everything that decides a state change lives here, as
data: `SECC_TRANSITIONS` and `EVCC_TRANSITIONS` map (state, event type) to the next state.
An event that has no entry for the current state is a protocol error
(`RemoteProtocolError` with an ISO 15118-2 response code), never a silent no-op.

Both machines take an event and the current clock time (POSIX seconds) and return a list
of commands for the adapter to carry out (send a message, start/cancel a timer, notify the
CSMS). No sockets, no asyncio, no clock reads.

Timing (ISO 15118-2, AC): the EV waits `EV_TIMEOUTS_S[ChargeParameterDiscoveryReq]` = 2 s
for the ChargeParameterDiscoveryRes. The SECC therefore waits at most
`SeccConfig.schedule_wait_s` (1.5 s) for the CSMS's TxProfile; if none came, it offers its
default schedule (EVSE maximum) and asks the EV to renegotiate (EVSENotification =
ReNegotiation in the next ChargingStatusRes) once the TxProfile arrives. Every later
TxProfile triggers the same renegotiation; the EV reports each new plan, which the station
relays as NotifyEVChargingSchedule.

Split by responsibility: `evse_sim.iso15118.commands` (errors and commands out),
`evse_sim.iso15118.secc` (charger side) and `evse_sim.iso15118.evcc` (EV side); this module
re-exports them so `from evse_sim.iso15118.session import ...` keeps working.
"""

from evse_sim.iso15118.commands import (
    CancelTimer,
    Command,
    FollowPlan,
    LocalProtocolError,
    NotifyChargingNeeds,
    NotifyEvSchedule,
    ProtocolError,
    RemoteProtocolError,
    Send,
    SessionEnded,
    StartTimer,
)
from evse_sim.iso15118.evcc import (
    EV_TIMEOUTS_S,
    EVCC_TRANSITIONS,
    EvccEvent,
    EvccSession,
    EvccState,
    EvRenegotiate,
    EvStop,
    LoopTick,
    MessageTimeout,
    Plugged,
)
from evse_sim.iso15118.secc import (
    SECC_ANY_STATE,
    SECC_TRANSITIONS,
    CsmsProfile,
    ScheduleTimeout,
    SeccConfig,
    SeccEvent,
    SeccSession,
    SeccState,
)

__all__ = [
    "CancelTimer",
    "Command",
    "CsmsProfile",
    "EVCC_TRANSITIONS",
    "EV_TIMEOUTS_S",
    "EvRenegotiate",
    "EvStop",
    "EvccEvent",
    "EvccSession",
    "EvccState",
    "FollowPlan",
    "LocalProtocolError",
    "LoopTick",
    "MessageTimeout",
    "NotifyChargingNeeds",
    "NotifyEvSchedule",
    "Plugged",
    "ProtocolError",
    "RemoteProtocolError",
    "SECC_ANY_STATE",
    "SECC_TRANSITIONS",
    "ScheduleTimeout",
    "SeccConfig",
    "SeccEvent",
    "SeccSession",
    "SeccState",
    "Send",
    "SessionEnded",
    "StartTimer",
]
