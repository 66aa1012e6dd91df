"""Sans-IO SECC (charger side) of the ISO 15118-2 AC model: `SECC_TRANSITIONS` and `SeccSession`.

See `evse_sim.iso15118.session` for the design and timing rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from evfleet.profile import w_to_a
from evse_sim.iso15118.commands import (
    CancelTimer,
    Command,
    NotifyChargingNeeds,
    NotifyEvSchedule,
    RemoteProtocolError,
    Send,
    SessionEnded,
    StartTimer,
)
from evse_sim.iso15118.messages import (
    AuthorizationReq,
    AuthorizationRes,
    ChargeParameterDiscoveryReq,
    ChargeParameterDiscoveryRes,
    ChargeProgress,
    ChargingStatusReq,
    ChargingStatusRes,
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
    ServiceDiscoveryReq,
    ServiceDiscoveryRes,
    SessionSetupReq,
    SessionSetupRes,
    SessionStopReq,
    SessionStopRes,
)
from evse_sim.iso15118.needs import NeedsReference, is_new_request
from evse_sim.iso15118.schedules import (
    SecLimits,
    default_sa_schedules,
    ev_schedule_payload,
    needs_payload,
    profile_respects_pmax,
    profile_to_sa_schedules,
    same_offer,
)


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
        return w_to_a(lim.evse_max_power_w, lim.phases, lim.voltage_v)

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
        ac = self.needs.ev_charge_parameter
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
            departure = self.needs.ev_charge_parameter.departure_time_s
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


