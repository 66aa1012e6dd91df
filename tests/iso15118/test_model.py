"""Pure tests of the modelled ISO 15118-2 SECC/EVCC (no sockets, no asyncio)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from evse_sim.iso15118.messages import (
    ChargeParameterDiscoveryRes,
    ChargeProgress,
    ChargingStatusReq,
    EvNeeds,
    EvseNotification,
    PowerDeliveryReq,
    ProfileEntry,
    ResponseCode,
    SessionSetupReq,
)
from evse_sim.iso15118.schedules import SecLimits, profile_respects_pmax, profile_to_sa_schedules
from evse_sim.iso15118.session import (
    EV_TIMEOUTS_S,
    CancelTimer,
    Command,
    CsmsProfile,
    EvccSession,
    EvccState,
    FollowPlan,
    LoopTick,
    MessageTimeout,
    NotifyChargingNeeds,
    NotifyEvSchedule,
    Plugged,
    RemoteProtocolError,
    ScheduleTimeout,
    SeccConfig,
    SeccSession,
    SeccState,
    Send,
    SessionEnded,
    StartTimer,
)

T0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC).timestamp()


class Link:
    """Runs an EVCC and a SECC against each other on a manual clock; timers fire explicitly."""

    def __init__(self, config: SeccConfig | None = None) -> None:
        self.secc = SeccSession(config or SeccConfig())
        self.evcc = EvccSession()
        self.now = T0
        self.timers: dict[tuple[str, str], float] = {}
        self.csms: list[tuple[str, dict[str, Any]]] = []
        self.ended: list[SessionEnded] = []
        self.sent: list[Any] = []

    def ev(self, event: Any) -> None:
        self._run("evcc", self.evcc.handle(event, self.now))

    def se(self, event: Any) -> None:
        self._run("secc", self.secc.handle(event, self.now))

    def _run(self, side: str, commands: list[Command]) -> None:
        for c in commands:
            if isinstance(c, Send):
                self.sent.append(c.message)
                (self.se if side == "evcc" else self.ev)(c.message)
            elif isinstance(c, StartTimer):
                self.timers[(side, c.name)] = self.now + c.delay_s
            elif isinstance(c, CancelTimer):
                self.timers.pop((side, c.name), None)
            elif isinstance(c, NotifyChargingNeeds):
                self.csms.append(("needs", c.payload))
            elif isinstance(c, NotifyEvSchedule):
                self.csms.append(("schedule", c.payload))
            elif isinstance(c, SessionEnded):
                self.ended.append(c)

    def advance(self, seconds: float) -> None:
        """Move the clock, firing due timers in order."""
        target = self.now + seconds
        while True:
            due = sorted((t, k) for k, t in self.timers.items() if t <= target)
            if not due:
                break
            t, (side, name) = due[0]
            del self.timers[(side, name)]
            self.now = t
            if side == "secc":
                self.se(ScheduleTimeout())
            elif name == "loop":
                self.ev(LoopTick())
            else:
                self.ev(MessageTimeout())
        self.now = target


NEEDS = EvNeeds(departure_time_s=4 * 3600, energy_wh=20_000, ev_max_current_a=16, ev_min_current_a=6)


def tx_profile(start: float, limits_w: list[float], step_s: int = 3600,
               tariff: bool = False) -> dict[str, Any]:
    """A TxProfile in W with hourly periods (and an hourly price tariff if asked)."""
    schedule: dict[str, Any] = {
        "id": 7, "startSchedule": datetime.fromtimestamp(start, UTC).isoformat(), "chargingRateUnit": "W",
        "chargingSchedulePeriod": [{"startPeriod": i * step_s, "limit": w} for i, w in enumerate(limits_w)],
    }
    if tariff:
        schedule["salesTariff"] = {"id": 3, "numEPriceLevels": 3, "salesTariffEntry": [
            {"relativeTimeInterval": {"start": i * step_s}, "ePriceLevel": lvl,
             "consumptionCost": [{"startValue": 0, "cost": [{"costKind": "RelativePricePercentage",
                                                              "amount": price}]}]}
            for i, (lvl, price) in enumerate([(3, 30), (1, 10), (2, 20), (3, 30)])]}
    return {"id": 11, "stackLevel": 0, "chargingProfilePurpose": "TxProfile",
            "chargingProfileKind": "Absolute", "chargingSchedule": [schedule]}


def test_full_sequence_profile_in_time_no_renegotiation() -> None:
    link = Link()
    link.ev(Plugged(NEEDS))
    assert link.secc.state == SeccState.SCHEDULE_PENDING
    kind, needs = link.csms[0]
    assert kind == "needs"
    ac = needs["chargingNeeds"]["acChargingParameters"]
    assert ac == {"energyAmount": 20000, "evMinCurrent": 6, "evMaxCurrent": 16, "evMaxVoltage": 400}
    departure = datetime.fromisoformat(needs["chargingNeeds"]["departureTime"].replace("Z", "+00:00"))
    assert departure == datetime.fromtimestamp(T0, UTC) + timedelta(hours=4)
    assert needs["maxScheduleTuples"] == 24 and needs["evseId"] == 1
    link.advance(0.8)  # CSMS answers within the SECC's wait
    link.se(CsmsProfile(tx_profile(link.now, [4000, 11000, 7000, 2000])))
    assert link.evcc.state == EvccState.CHARGING and link.secc.state == SeccState.CHARGING
    offered = [m for m in link.sent if isinstance(m, ChargeParameterDiscoveryRes)]
    assert len(offered) == 1
    pmax = [e.pmax_w for e in offered[0].sa_schedule_list[0].pmax_schedule]
    assert pmax == [4000, 11000, 7000, 2000]
    assert offered[0].sa_schedule_list[0].sa_schedule_tuple_id == 7
    kind, sched = link.csms[1]
    assert kind == "schedule" and sched["chargingSchedule"]["id"] == 7
    periods = sched["chargingSchedule"]["chargingSchedulePeriod"]
    assert periods[0] == {"startPeriod": 0, "limit": 4000.0}  # ASAP under PMax: 4 kWh in hour 1
    assert sum(1 for _ in periods) >= 2
    link.advance(5)  # charge loop runs, no renegotiation
    assert link.secc.renegotiations == 0
    assert link.evcc.plan is not None and link.evcc.plan.planned_energy_wh == pytest.approx(20_000)


def test_timing_fallback_default_schedule_then_renegotiation() -> None:
    link = Link()
    link.ev(Plugged(NEEDS))
    link.advance(1.6)  # no CSMS profile within 1.5 s: the SECC must answer before the EV's 2 s timeout
    assert EV_TIMEOUTS_S[type(link.secc.needs)] == 2.0
    assert link.evcc.state == EvccState.CHARGING, link.ended
    first = [m for m in link.sent if isinstance(m, ChargeParameterDiscoveryRes)]
    assert [e.pmax_w for e in first[0].sa_schedule_list[0].pmax_schedule] == [11000.0]
    assert first[0].sa_schedule_list[0].pmax_schedule[0].duration_s == 4 * 3600 - 2  # until departure
    assert [k for k, _ in link.csms] == ["needs", "schedule"]
    link.advance(3)
    link.se(CsmsProfile(tx_profile(link.now, [3000, 3000, 8000, 8000])))
    link.advance(1.01)  # next ChargingStatusRes carries ReNegotiation; the EV renegotiates at once
    statuses = [m for m in link.sent if type(m).__name__ == "ChargingStatusRes"]
    assert any(s.evse_notification == EvseNotification.RE_NEGOTIATION for s in statuses)
    assert link.secc.renegotiations == 1
    assert link.evcc.state == EvccState.CHARGING
    assert [k for k, _ in link.csms] == ["needs", "schedule", "schedule"]  # needs unchanged: no second needs
    second = link.csms[-1][1]["chargingSchedule"]["chargingSchedulePeriod"]
    assert second[0]["limit"] == 3000.0
    assert link.evcc.plan is not None and link.evcc.plan.sa_schedule_tuple_id == 7


def test_ev_picks_cheap_hours_from_sales_tariff() -> None:
    link = Link()
    link.ev(Plugged(EvNeeds(departure_time_s=4 * 3600, energy_wh=11_000, ev_max_current_a=16)))
    link.se(CsmsProfile(tx_profile(link.now, [11000, 11000, 11000, 11000], tariff=True)))
    plan = link.evcc.plan
    assert plan is not None
    # 11 kWh fits into the cheapest hour (level 1, hour 2): nothing in hours 1, 3, 4.
    assert [(e.start_s, e.max_power_w) for e in plan.profile] == [(0, 0.0), (3600, 11000.0), (7200, 0.0)]
    sent = link.csms[-1][1]["chargingSchedule"]["chargingSchedulePeriod"]
    assert sent[1] == {"startPeriod": 3600, "limit": 11000.0}


def test_ev_times_out_when_secc_never_answers() -> None:
    link = Link(SeccConfig(schedule_wait_s=5.0))  # a SECC that waits longer than the EV does
    link.ev(Plugged(NEEDS))
    link.advance(2.5)
    assert link.evcc.state == EvccState.FAILED
    assert link.ended and not link.ended[0].ok and "WaitChargeParameterDiscoveryRes" in link.ended[0].reason


def test_ev_initiated_renegotiation_sends_new_needs() -> None:
    link = Link()
    link.ev(Plugged(NEEDS))
    link.se(CsmsProfile(tx_profile(link.now, [11000] * 4)))
    link.advance(2)
    from evse_sim.iso15118.session import EvRenegotiate
    link.ev(EvRenegotiate(EvNeeds(departure_time_s=2 * 3600, energy_wh=5_000, ev_max_current_a=16)))
    kinds = [k for k, _ in link.csms]
    assert kinds.count("needs") == 2
    assert link.csms[-1][1]["chargingNeeds"]["acChargingParameters"]["energyAmount"] == 5000
    # the profile already offered is reused at once? No: no new profile, so the SECC waits, then defaults.
    link.advance(1.6)
    assert link.evcc.state == EvccState.CHARGING
    assert kinds.count("schedule") == 1 and [k for k, _ in link.csms].count("schedule") == 2


def test_secc_rejects_profile_above_pmax_v2g2_225() -> None:
    secc = SeccSession(SeccConfig())
    ev = EvccSession()
    _handshake(ev, secc)
    res = secc.handle(ScheduleTimeout(), T0 + 1.5)
    offered = next(c.message for c in res if isinstance(c, Send))
    tid = offered.sa_schedule_list[0].sa_schedule_tuple_id
    bad = PowerDeliveryReq(ChargeProgress.START, tid, (ProfileEntry(0, 22_000.0),))
    out = secc.handle(bad, T0 + 1.6)
    assert any(isinstance(c, Send) and c.message.response_code == ResponseCode.FAILED_CHARGING_PROFILE_INVALID
               for c in out)
    assert secc.state == SeccState.ENDED
    lenient = SeccSession(SeccConfig(enforce_pmax=False))
    ev2 = EvccSession()
    list(_handshake(ev2, lenient))
    lenient.handle(ScheduleTimeout(), T0 + 1.5)
    out = lenient.handle(bad, T0 + 1.6)
    assert any(isinstance(c, NotifyEvSchedule) for c in out)  # a lenient SECC relays the bad plan (K17 test)


def _handshake(ev: EvccSession, secc: SeccSession) -> list[Any]:
    """Drive both machines up to the SECC waiting for a schedule."""
    out = []
    pending = [c.message for c in ev.handle(Plugged(NEEDS), T0) if isinstance(c, Send)]
    while pending:
        msg = pending.pop(0)
        out.append(msg)
        for c in secc.handle(msg, T0):
            if isinstance(c, Send):
                out.append(c.message)
                pending += [x.message for x in ev.handle(c.message, T0) if isinstance(x, Send)]
    return out


def test_sequence_errors_are_protocol_errors() -> None:
    secc = SeccSession(SeccConfig())
    with pytest.raises(RemoteProtocolError) as err:
        secc.handle(ChargingStatusReq(), T0)
    assert err.value.response_code == ResponseCode.FAILED_SEQUENCE_ERROR
    secc.handle(SessionSetupReq("EV1"), T0)
    with pytest.raises(RemoteProtocolError):
        secc.handle(SessionSetupReq("EV1"), T0)
    ev = EvccSession()
    with pytest.raises(RemoteProtocolError):
        ev.handle(ChargeParameterDiscoveryRes(ResponseCode.OK, "Finished"), T0)  # type: ignore[arg-type]


def test_profile_in_amps_and_past_start_is_clipped_to_now() -> None:
    now = datetime(2026, 1, 5, 9, 30, tzinfo=UTC)
    profile = {"id": 1, "chargingSchedule": [{
        "id": 2, "startSchedule": "2026-01-05T08:00:00Z", "chargingRateUnit": "A", "duration": 4 * 3600,
        "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 6}, {"startPeriod": 3600, "limit": 10},
                                   {"startPeriod": 7200, "limit": 32, "numberPhases": 1}]}]}
    (t,) = profile_to_sa_schedules(profile, now, SecLimits(11_000, 230, 3), departure_time_s=3 * 3600)
    # now is 1.5 h into the schedule: 10 A x 3 x 230 for 30 min, then 32 A x 1 x 230, then the profile
    # ends (duration 4 h -> 2.5 h from now) and the EVSE maximum applies until departure.
    assert [(e.start_s, e.pmax_w, e.duration_s) for e in t.pmax_schedule] == [
        (0, 6900.0, None), (1800, 7360.0, None), (9000, 11000.0, 1800)]
    assert t.end_s() == 3 * 3600


def test_max_entries_is_respected_conservatively() -> None:
    now = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
    limits = [1000.0 * (i % 5 + 1) for i in range(48)]
    profile = tx_profile(now.timestamp(), limits, step_s=900)
    (t,) = profile_to_sa_schedules(profile, now, SecLimits(11_000), departure_time_s=12 * 3600, max_entries=5)
    assert len(t.pmax_schedule) == 5
    assert t.pmax_schedule[-1].pmax_w == 1000.0  # tail folded at its minimum
    link = Link()
    link.ev(Plugged(EvNeeds(departure_time_s=12 * 3600, energy_wh=50_000, ev_max_current_a=16)))
    link.se(CsmsProfile(tx_profile(link.now, limits, step_s=900)))
    plan = link.evcc.plan
    assert plan is not None and len(plan.profile) <= 24
    assert profile_respects_pmax(next(m for m in link.sent if isinstance(m, ChargeParameterDiscoveryRes))
                                 .sa_schedule_list[0], plan.profile)


def test_follow_plan_and_stop() -> None:
    link = Link()
    link.ev(Plugged(NEEDS))
    link.se(CsmsProfile(tx_profile(link.now, [5000] * 4)))
    assert isinstance(link.evcc.plan, type(link.evcc.plans[0]))
    from evse_sim.iso15118.session import EvStop
    link.ev(EvStop())
    assert link.evcc.state == EvccState.ENDED and link.secc.state == SeccState.ENDED
    assert link.ended[-1].ok
    assert isinstance(FollowPlan, type)
