"""Sans-IO EVCC (EV side) of the ISO 15118-2 AC model: `EVCC_TRANSITIONS` and `EvccSession`.

See `evse_sim.iso15118.session` for the design and timing rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from evfleet.profile import a_to_w
from evse_sim.iso15118.commands import (
    CancelTimer,
    Command,
    FollowPlan,
    RemoteProtocolError,
    Send,
    SessionEnded,
    StartTimer,
)
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
    SeccResponse,
    ServiceDiscoveryReq,
    ServiceDiscoveryRes,
    SessionSetupReq,
    SessionSetupRes,
    SessionStopReq,
    SessionStopRes,
)
from evse_sim.iso15118.schedules import (
    EvPlan,
    plan_ev_profile,
)


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
        max_power_w = min(n.ev_max_power_w, a_to_w(res.evse_max_current_a, n.phases, n.voltage_v)
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
