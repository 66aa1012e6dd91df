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
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from evse_sim.iso15118.messages import (
    AcEvChargeParameter,
    AuthorizationReq,
    AuthorizationRes,
    ChargeParameterDiscoveryReq,
    ChargeParameterDiscoveryRes,
    ChargeProgress,
    ChargingStatusReq,
    ChargingStatusRes,
    EvNeeds,
    EvRequest,
    EvseNotification,
    EvseProcessing,
    PaymentServiceSelectionReq,
    PaymentServiceSelectionRes,
    PowerDeliveryReq,
    PowerDeliveryRes,
    ProfileEntry,
    ResponseCode,
    SAScheduleTuple,
    SeccResponse,
    ServiceDiscoveryReq,
    ServiceDiscoveryRes,
    SessionSetupReq,
    SessionSetupRes,
    SessionStopReq,
    SessionStopRes,
)
from evse_sim.iso15118.needs import NeedsReference, is_new_request
from evse_sim.iso15118.schedules import (
    EvPlan,
    SecLimits,
    default_sa_schedules,
    ev_schedule_payload,
    needs_payload,
    plan_ev_profile,
    profile_respects_pmax,
    profile_to_sa_schedules,
    same_offer,
)


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


# --- SECC -------------------------------------------------------------------------------


class SeccState(StrEnum):
    """States of the SECC model."""

    IDLE = "Idle"
    SESSION_SETUP = "SessionSetup"
    SERVICE_DISCOVERY = "ServiceDiscovery"
    PAYMENT_SELECTED = "PaymentSelected"
    AUTHORIZED = "Authorized"
    SCHEDULE_PENDING = "SchedulePending"
    SCHEDULE_OFFERED = "ScheduleOffered"
    CHARGING = "Charging"
    RENEGOTIATING = "Renegotiating"
    STOPPED = "Stopped"
    ENDED = "Ended"


@dataclass(frozen=True)
class CsmsProfile:
    """Internal event: the station accepted a TxProfile for this EVSE (OCPP ChargingProfile)."""

    profile: dict[str, Any]


@dataclass(frozen=True)
class ScheduleTimeout:
    """Internal event: the SECC's wait for the CSMS's schedule ran out."""


SeccEvent = EvRequest | CsmsProfile | ScheduleTimeout

S = SeccState
SECC_TRANSITIONS: dict[tuple[SeccState, type], SeccState] = {
    (S.IDLE, SessionSetupReq): S.SESSION_SETUP,
    (S.SESSION_SETUP, ServiceDiscoveryReq): S.SERVICE_DISCOVERY,
    (S.SERVICE_DISCOVERY, PaymentServiceSelectionReq): S.PAYMENT_SELECTED,
    (S.PAYMENT_SELECTED, AuthorizationReq): S.AUTHORIZED,
    (S.AUTHORIZED, ChargeParameterDiscoveryReq): S.SCHEDULE_PENDING,
    (S.SCHEDULE_PENDING, CsmsProfile): S.SCHEDULE_OFFERED,
    (S.SCHEDULE_PENDING, ScheduleTimeout): S.SCHEDULE_OFFERED,
    (S.SCHEDULE_OFFERED, PowerDeliveryReq): S.CHARGING,
    (S.CHARGING, ChargingStatusReq): S.CHARGING,
    (S.CHARGING, PowerDeliveryReq): S.CHARGING,  # Renegotiate -> RENEGOTIATING, Stop -> STOPPED
    (S.RENEGOTIATING, ChargeParameterDiscoveryReq): S.SCHEDULE_PENDING,
    (S.STOPPED, SessionStopReq): S.ENDED,
    (S.CHARGING, SessionStopReq): S.ENDED,
}
# Events accepted in any state without a state change (a TxProfile can come at any time).
SECC_ANY_STATE: frozenset[type] = frozenset({CsmsProfile, ScheduleTimeout})


@dataclass
class SeccConfig:
    """Static facts of the simulated EVSE and its timing."""

    evse_id: int = 1
    evse_id_text: str = "DE*EVF*E0001*1"
    limits: SecLimits = field(default_factory=lambda: SecLimits(evse_max_power_w=11_000.0))
    schedule_wait_s: float = 1.5
    enforce_pmax: bool = True  # V2G2-225; False simulates a lenient SECC (lets bad EV plans through)


class SeccSession:
    """The SECC of one EVSE for one session: EV requests and CSMS profiles in, commands out."""

    def __init__(self, config: SeccConfig, session_id: str = "00AB12CD34EF5678") -> None:
        self.config = config
        self.session_id = session_id
        self.state = SeccState.IDLE
        self.profile: dict[str, Any] | None = None  # latest accepted TxProfile
        self.profile_version = 0
        self.offered_version = -1  # profile version offered (-1: default schedule)
        self.offered: tuple[SAScheduleTuple, ...] = ()
        self.offered_at: float = 0.0
        self.selected_tuple_id: int | None = None
        self.ev_profile: tuple[ProfileEntry, ...] | None = None
        self.renegotiation_pending = False
        self.renegotiations = 0
        self.needs: ChargeParameterDiscoveryReq | None = None
        self.needs_at: float = 0.0
        self.needs_ref: NeedsReference | None = None  # the request last forwarded to the CSMS
        self.needs_repeated = 0  # ChargeParameterDiscoveryReqs that repeated the same request
        self.renegotiations_requested = 0  # ReNegotiation notifications raised (one per new offer)
        self.history: list[str] = []

    def _next(self, event: SeccEvent) -> SeccState:
        key = (self.state, type(event))
        if key not in SECC_TRANSITIONS:
            raise RemoteProtocolError(f"SECC in state {self.state} cannot take {type(event).__name__}")
        return SECC_TRANSITIONS[key]

    def handle(self, event: SeccEvent, now_s: float, meter_wh: float | None = None) -> list[Command]:
        """Apply one event at clock time `now_s` (EVSE meter `meter_wh`); return the commands to carry out."""
        if isinstance(event, CsmsProfile):
            return self._on_profile(event, now_s)
        if isinstance(event, ScheduleTimeout):
            if self.state != SeccState.SCHEDULE_PENDING:
                return []  # a late timer after the profile already answered: nothing to do
            # no (new) TxProfile in time: the current one still holds; the default only before any
            return self._offer(now_s, from_profile=self.profile is not None)
        if self.state == SeccState.ENDED:
            raise RemoteProtocolError(f"session ended; got {type(event).__name__}")
        next_state = self._next(event)
        self.history.append(type(event).__name__)
        if isinstance(event, SessionSetupReq):
            self.state = next_state
            return [Send(SessionSetupRes(ResponseCode.OK, self.session_id, self.config.evse_id_text))]
        if isinstance(event, ServiceDiscoveryReq):
            self.state = next_state
            return [Send(ServiceDiscoveryRes(ResponseCode.OK))]
        if isinstance(event, PaymentServiceSelectionReq):
            self.state = next_state
            return [Send(PaymentServiceSelectionRes(ResponseCode.OK))]
        if isinstance(event, AuthorizationReq):
            self.state = next_state
            return [Send(AuthorizationRes(ResponseCode.OK, EvseProcessing.FINISHED))]
        if isinstance(event, ChargeParameterDiscoveryReq):
            return self._on_charge_parameter_discovery(event, now_s, next_state, meter_wh)
        if isinstance(event, PowerDeliveryReq):
            return self._on_power_delivery(event, now_s)
        if isinstance(event, ChargingStatusReq):
            return [Send(self._status())]
        if isinstance(event, SessionStopReq):
            self.state = next_state
            return [Send(SessionStopRes(ResponseCode.OK)), SessionEnded(True, "SessionStop")]
        raise RemoteProtocolError(f"unexpected event {event!r}")

    def _status(self) -> ChargingStatusRes:
        notification = EvseNotification.NONE
        if self.renegotiation_pending:
            notification = EvseNotification.RE_NEGOTIATION
            self.renegotiation_pending = False
        return ChargingStatusRes(ResponseCode.OK, self.config.evse_id_text, self.selected_tuple_id or 1,
                                 notification, self._max_current_a())

    def _max_current_a(self) -> float:
        lim = self.config.limits
        return lim.evse_max_power_w / (lim.voltage_v * lim.phases)

    def _on_charge_parameter_discovery(self, req: ChargeParameterDiscoveryReq, now_s: float,
                                       next_state: SeccState, meter_wh: float | None) -> list[Command]:
        commands: list[Command] = []
        changed = is_new_request(self.needs_ref, req, now_s, meter_wh)
        self.needs = req
        self.needs_at = now_s
        self.state = next_state
        if not changed:
            self.needs_repeated += 1
        else:
            self.needs_ref = NeedsReference(req, now_s, meter_wh)
            received_at = datetime.fromtimestamp(now_s, UTC)
            commands.append(NotifyChargingNeeds(needs_payload(self.config.evse_id, req, received_at)))
        if self.profile is not None and (self.profile_version != self.offered_version or not changed):
            # a profile not offered yet, or the same request again: the current profile answers it
            return commands + self._offer(now_s, from_profile=True)
        commands.append(StartTimer("schedule_wait", self.config.schedule_wait_s))
        return commands

    def _offer(self, now_s: float, from_profile: bool) -> list[Command]:
        assert self.needs is not None
        ac = self.needs.ac_ev_charge_parameter
        departure = ac.departure_time_s
        if departure:
            departure = max(1, int(departure - (now_s - self.needs_at)))
        tuples: tuple[SAScheduleTuple, ...]
        if from_profile and self.profile is not None:
            tuples = profile_to_sa_schedules(self.profile, datetime.fromtimestamp(now_s, UTC),
                                             self.config.limits, departure,
                                             self.needs.max_entries_sa_schedule_tuple)
            self.offered_version = self.profile_version
        else:
            tuples = default_sa_schedules(self.config.limits.evse_max_power_w, departure)
            self.offered_version = -1
        self.offered = tuples
        self.offered_at = now_s
        self.state = SECC_TRANSITIONS[(SeccState.SCHEDULE_PENDING, CsmsProfile)]
        res = ChargeParameterDiscoveryRes(ResponseCode.OK, EvseProcessing.FINISHED, tuples,
                                          self._max_current_a(), self.config.limits.voltage_v)
        return [CancelTimer("schedule_wait"), Send(res)]

    def _on_profile(self, event: CsmsProfile, now_s: float) -> list[Command]:
        offered = self.profile if self.offered_version == self.profile_version else None
        self.profile = event.profile
        self.profile_version += 1
        if self.state == SeccState.SCHEDULE_PENDING:
            self._next(event)
            return self._offer(now_s, from_profile=True)
        if self.state in (SeccState.SCHEDULE_OFFERED, SeccState.CHARGING):
            if offered is not None and self.config.enforce_pmax and self._same_offer(offered, now_s):
                self.offered_version = self.profile_version  # same SAScheduleList: nothing to renegotiate
                return []
            if not self.renegotiation_pending:
                self.renegotiations_requested += 1
            self.renegotiation_pending = True
        return []

    def _same_offer(self, offered: dict[str, Any], now_s: float) -> bool:
        assert self.profile is not None
        departure, max_entries = None, None
        if self.needs is not None:
            departure = self.needs.ac_ev_charge_parameter.departure_time_s
            if departure:
                departure = max(1, int(departure - (now_s - self.needs_at)))
            max_entries = self.needs.max_entries_sa_schedule_tuple
        return same_offer(offered, self.profile, datetime.fromtimestamp(now_s, UTC), self.config.limits,
                          departure, max_entries)

    def _on_power_delivery(self, req: PowerDeliveryReq, now_s: float) -> list[Command]:
        if req.charge_progress == ChargeProgress.STOP:
            if self.state != SeccState.CHARGING:
                raise RemoteProtocolError("PowerDeliveryReq(Stop) before charging started")
            self.state = SeccState.STOPPED
            return [Send(PowerDeliveryRes(ResponseCode.OK))]
        if req.charge_progress == ChargeProgress.RENEGOTIATE:
            if self.state != SeccState.CHARGING:
                raise RemoteProtocolError("PowerDeliveryReq(Renegotiate) before charging started")
            self.state = SeccState.RENEGOTIATING
            self.renegotiations += 1
            self.renegotiation_pending = False
            return [Send(PowerDeliveryRes(ResponseCode.OK))]
        if self.state != SeccState.SCHEDULE_OFFERED:
            raise RemoteProtocolError(f"PowerDeliveryReq(Start) in state {self.state}")
        chosen = next((t for t in self.offered if t.sa_schedule_tuple_id == req.sa_schedule_tuple_id), None)
        if chosen is None:
            return self._fail(f"SAScheduleTupleID {req.sa_schedule_tuple_id} was not offered",
                              ResponseCode.FAILED_TARIFF_SELECTION_INVALID)
        if req.charging_profile and self.config.enforce_pmax and not profile_respects_pmax(
                chosen, req.charging_profile):
            return self._fail("V2G2-225: EV ChargingProfile exceeds PMax",
                              ResponseCode.FAILED_CHARGING_PROFILE_INVALID)
        self.selected_tuple_id = req.sa_schedule_tuple_id
        self.ev_profile = req.charging_profile
        self.state = SeccState.CHARGING
        commands: list[Command] = [Send(PowerDeliveryRes(ResponseCode.OK))]
        if req.charging_profile:
            time_base = datetime.fromtimestamp(self.offered_at, UTC)
            payload = ev_schedule_payload(self.config.evse_id, time_base, req.sa_schedule_tuple_id,
                                          req.charging_profile)
            commands.append(NotifyEvSchedule(payload))
        return commands

    def _fail(self, reason: str, code: ResponseCode) -> list[Command]:
        self.state = SeccState.ENDED
        return [Send(PowerDeliveryRes(code)), SessionEnded(False, reason)]


# --- EVCC -------------------------------------------------------------------------------


class EvccState(StrEnum):
    """States of the EVCC model (named after the response it waits for)."""

    IDLE = "Idle"
    WAIT_SESSION_SETUP = "WaitSessionSetupRes"
    WAIT_SERVICE_DISCOVERY = "WaitServiceDiscoveryRes"
    WAIT_PAYMENT = "WaitPaymentServiceSelectionRes"
    WAIT_AUTHORIZATION = "WaitAuthorizationRes"
    WAIT_CHARGE_PARAMETERS = "WaitChargeParameterDiscoveryRes"
    WAIT_POWER_DELIVERY = "WaitPowerDeliveryRes"
    CHARGING = "Charging"
    WAIT_CHARGING_STATUS = "WaitChargingStatusRes"
    WAIT_RENEGOTIATE = "WaitRenegotiateRes"
    WAIT_STOP = "WaitStopRes"
    WAIT_SESSION_STOP = "WaitSessionStopRes"
    ENDED = "Ended"
    FAILED = "Failed"


@dataclass(frozen=True)
class Plugged:
    """Internal event: the EV is plugged in and starts HLC with these needs."""

    needs: EvNeeds


@dataclass(frozen=True)
class LoopTick:
    """Internal event: time for the next ChargingStatusReq."""


@dataclass(frozen=True)
class MessageTimeout:
    """Internal event: the response the EVCC waits for did not come in time."""


@dataclass(frozen=True)
class EvStop:
    """Internal event: the EV wants to stop (full, or leaving)."""


@dataclass(frozen=True)
class EvRenegotiate:
    """Internal event: the EV's needs changed; it renegotiates (OCPP K17)."""

    needs: EvNeeds


EvccEvent = SeccResponse | Plugged | LoopTick | MessageTimeout | EvStop | EvRenegotiate

E = EvccState
EVCC_TRANSITIONS: dict[tuple[EvccState, type], EvccState] = {
    (E.IDLE, Plugged): E.WAIT_SESSION_SETUP,
    (E.WAIT_SESSION_SETUP, SessionSetupRes): E.WAIT_SERVICE_DISCOVERY,
    (E.WAIT_SERVICE_DISCOVERY, ServiceDiscoveryRes): E.WAIT_PAYMENT,
    (E.WAIT_PAYMENT, PaymentServiceSelectionRes): E.WAIT_AUTHORIZATION,
    (E.WAIT_AUTHORIZATION, AuthorizationRes): E.WAIT_CHARGE_PARAMETERS,
    (E.WAIT_CHARGE_PARAMETERS, ChargeParameterDiscoveryRes): E.WAIT_POWER_DELIVERY,
    (E.WAIT_POWER_DELIVERY, PowerDeliveryRes): E.CHARGING,
    (E.CHARGING, LoopTick): E.WAIT_CHARGING_STATUS,
    (E.WAIT_CHARGING_STATUS, ChargingStatusRes): E.CHARGING,  # ReNegotiation -> WAIT_RENEGOTIATE
    (E.CHARGING, EvRenegotiate): E.WAIT_RENEGOTIATE,
    (E.WAIT_RENEGOTIATE, PowerDeliveryRes): E.WAIT_CHARGE_PARAMETERS,
    (E.CHARGING, EvStop): E.WAIT_STOP,
    (E.WAIT_STOP, PowerDeliveryRes): E.WAIT_SESSION_STOP,
    (E.WAIT_SESSION_STOP, SessionStopRes): E.ENDED,
}

# V2G_EVCC_Msg_Timeout per request (ISO 15118-2 Table 109), seconds.
EV_TIMEOUTS_S: dict[type, float] = {
    SessionSetupReq: 2.0, ServiceDiscoveryReq: 2.0, PaymentServiceSelectionReq: 2.0,
    AuthorizationReq: 2.0, ChargeParameterDiscoveryReq: 2.0, PowerDeliveryReq: 5.0,
    ChargingStatusReq: 2.0, SessionStopReq: 2.0,
}


class EvccSession:
    """The EVCC of one simulated EV: SECC responses and EV events in, commands out."""

    def __init__(self, loop_interval_s: float = 1.0, ignore_pmax: bool = False) -> None:
        self.ignore_pmax = ignore_pmax  # a misbehaving EV: plans at its own maximum whatever PMax says
        self.state = EvccState.IDLE
        self.needs: EvNeeds | None = None
        self.needs_at = 0.0
        self.loop_interval_s = loop_interval_s
        self.plan: EvPlan | None = None
        self.plan_time_base: float = 0.0
        self.plans: list[EvPlan] = []
        self.stop_after_renegotiation = False
        self.failure: str | None = None

    def set_needs(self, needs: EvNeeds, now_s: float) -> None:
        """Refresh the EV's needs (remaining energy; departure relative to `now_s`) for the next request."""
        self.needs = needs
        self.needs_at = now_s

    def _departure_left_s(self, now_s: float) -> int | None:
        if self.needs is None or not self.needs.departure_time_s:
            return None
        return max(1, int(self.needs.departure_time_s - (now_s - self.needs_at)))

    def _send(self, req: EvRequest) -> list[Command]:
        return [Send(req), StartTimer("msg_timeout", EV_TIMEOUTS_S[type(req)])]

    def _cpd_req(self, now_s: float) -> ChargeParameterDiscoveryReq:
        assert self.needs is not None
        n = self.needs
        return ChargeParameterDiscoveryReq(
            n.energy_transfer_mode,
            AcEvChargeParameter(self._departure_left_s(now_s), n.energy_wh, n.ev_max_voltage_v,
                                n.ev_max_current_a, n.ev_min_current_a),
            n.max_entries_sa_schedule_tuple)

    def handle(self, event: EvccEvent, now_s: float) -> list[Command]:
        """Apply one event at clock time `now_s`; return the commands to carry out."""
        if isinstance(event, MessageTimeout):
            if self.state in (EvccState.ENDED, EvccState.FAILED, EvccState.CHARGING, EvccState.IDLE):
                return []
            return self._failed(f"timeout waiting in {self.state}")
        if self.state in (EvccState.ENDED, EvccState.FAILED):
            if isinstance(event, (LoopTick, EvStop, EvRenegotiate)):
                return []
            raise RemoteProtocolError(f"EVCC session over; got {type(event).__name__}")
        if isinstance(event, EvRenegotiate) and self.state != EvccState.CHARGING:
            self.set_needs(event.needs, now_s)  # taken into account at the next ChargeParameterDiscoveryReq
            return []
        if isinstance(event, (EvStop, LoopTick)) and self.state != EvccState.CHARGING:
            if isinstance(event, EvStop):
                self.stop_after_renegotiation = True
            return []
        key = (self.state, type(event))
        if key not in EVCC_TRANSITIONS:
            raise RemoteProtocolError(f"EVCC in state {self.state} cannot take {type(event).__name__}")
        next_state = EVCC_TRANSITIONS[key]
        code = getattr(event, "response_code", ResponseCode.OK)
        if code != ResponseCode.OK:
            return self._failed(f"{type(event).__name__} {code}")
        commands: list[Command] = [CancelTimer("msg_timeout")]
        if isinstance(event, Plugged):
            self.set_needs(event.needs, now_s)
            self.state = next_state
            return self._send(SessionSetupReq(event.needs.evcc_id))
        self.state = next_state
        if isinstance(event, SessionSetupRes):
            return commands + self._send(ServiceDiscoveryReq())
        if isinstance(event, ServiceDiscoveryRes):
            return commands + self._send(PaymentServiceSelectionReq())
        if isinstance(event, PaymentServiceSelectionRes):
            return commands + self._send(AuthorizationReq())
        if isinstance(event, AuthorizationRes):
            return commands + self._send(self._cpd_req(now_s))
        if isinstance(event, ChargeParameterDiscoveryRes):
            return commands + self._on_schedules(event, now_s)
        if isinstance(event, PowerDeliveryRes):
            if next_state == EvccState.CHARGING:
                if self.stop_after_renegotiation:
                    self.state = EvccState.WAIT_STOP
                    return commands + self._send(PowerDeliveryReq(ChargeProgress.STOP, self._tuple_id()))
                return commands + [StartTimer("loop", self.loop_interval_s)]
            if next_state == EvccState.WAIT_CHARGE_PARAMETERS:
                return commands + self._send(self._cpd_req(now_s))
            return commands + self._send(SessionStopReq())
        if isinstance(event, LoopTick):
            return self._send(ChargingStatusReq())
        if isinstance(event, ChargingStatusRes):
            if event.evse_notification == EvseNotification.RE_NEGOTIATION:
                self.state = EvccState.WAIT_RENEGOTIATE
                return commands + self._send(PowerDeliveryReq(ChargeProgress.RENEGOTIATE, self._tuple_id()))
            if event.evse_notification == EvseNotification.STOP_CHARGING:
                self.state = EvccState.WAIT_STOP
                return commands + self._send(PowerDeliveryReq(ChargeProgress.STOP, self._tuple_id()))
            return commands + [StartTimer("loop", self.loop_interval_s)]
        if isinstance(event, EvRenegotiate):
            self.set_needs(event.needs, now_s)
            return self._send(PowerDeliveryReq(ChargeProgress.RENEGOTIATE, self._tuple_id()))
        if isinstance(event, EvStop):
            return [CancelTimer("loop")] + self._send(PowerDeliveryReq(ChargeProgress.STOP, self._tuple_id()))
        if isinstance(event, SessionStopRes):
            return commands + [CancelTimer("loop"), SessionEnded(True, "SessionStop")]
        raise RemoteProtocolError(f"unexpected event {event!r}")

    def _tuple_id(self) -> int:
        return self.plan.sa_schedule_tuple_id if self.plan else 1

    def _on_schedules(self, res: ChargeParameterDiscoveryRes, now_s: float) -> list[Command]:
        assert self.needs is not None
        if res.evse_processing != EvseProcessing.FINISHED or not res.sa_schedule_list:
            return self._failed("SECC answered ChargeParameterDiscovery without a schedule")
        n = self.needs
        max_power_w = min(n.ev_max_power_w, res.evse_max_current_a * n.voltage_v * n.phases
                          if res.evse_max_current_a else n.ev_max_power_w)
        plan = plan_ev_profile(res.sa_schedule_list, n.energy_wh, max_power_w, self._departure_left_s(now_s))
        if self.ignore_pmax:
            plan = EvPlan(plan.sa_schedule_tuple_id, (ProfileEntry(0, round(n.ev_max_power_w, 1)),
                                                      ProfileEntry(plan.horizon_s, 0.0)),
                          plan.planned_energy_wh, plan.cost, plan.horizon_s)
        self.plan = plan
        self.plan_time_base = now_s
        self.plans.append(plan)
        req = PowerDeliveryReq(ChargeProgress.START, plan.sa_schedule_tuple_id, plan.profile)
        return [FollowPlan(plan, now_s), *self._send(req)]

    def _failed(self, reason: str) -> list[Command]:
        self.state = EvccState.FAILED
        self.failure = reason
        return [CancelTimer("msg_timeout"), CancelTimer("loop"), SessionEnded(False, reason)]
