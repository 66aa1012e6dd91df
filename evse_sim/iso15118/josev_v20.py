"""ISO 15118-20 AC (scheduled control mode) for the Josev runner: SECC and EV hooks bridged to evfleet.

Like `josev_wire.py`, this runs under `.iso15118-venv/bin/python` and imports only the standard
library and `iso15118`; `josev_runner.py` finds it beside itself. The bridge side is
`evse_sim/iso15118/v20.py` (pure mapping) with `bridge.py`.

The -20 AC exchange over the bridge, on the same JSON tuples as ISO 15118-2 (`josev_wire.py`):

- ACChargeParameterDiscovery: the EV's maximum/minimum power (`ev_params`); the SECC answers
  with the EVSE's maximum (`get_ac_charge_params_v20`).
- ScheduleExchange: the EV's departure and energy (target = maximum = what it still needs)
  reach Josev's `ev_data_context`; the SECC's `get_scheduled_se_params` sends them to the bridge
  (`schedules`, `protocol: 20`: NotifyEVChargingNeeds), which answers with the TxProfile's
  schedule tuples (or the default one after its wait); each becomes a ScheduleTuple whose
  PowerSchedule is the PMax schedule (consecutive durations from TimeAnchor = now) and whose
  PriceLevelSchedule is the tariff's price levels (one level when there is no tariff: -20 needs a
  price schedule). The EV picks and plans (`plan`, the same code as -2) and answers with an
  EVPowerProfile in PowerDeliveryReq; the patched SECC PowerDelivery forwards it
  (`power_delivery`: NotifyEVChargingSchedule).
- AC_ChargeLoop: each ACChargeLoopRes carries the TxProfile's limit now as
  EVSETargetActivePower (`ac_limit`; the SECC's session limits follow it); the patched EVCC state
  hands the decoded response to the EV (`ac_res`), which draws at most that.

Josev 0.31.2 limits designed around here (see docs/iso15118.md):
- its EVCC raises NotImplementedError for any EVSENotification in ACChargeLoopRes other than
  Terminate/ServiceRenegotiation (`evcc/states/iso15118_20_states.py`, `ACChargeLoop`), so the
  SECC never sets ScheduleRenegotiation: a new TxProfile reaches the EV as EVSETargetActivePower;
- the SECC does not hand the EVPowerProfile to its controller (PowerDelivery is wrapped), nor
  the EVCC the ACChargeLoopRes (ACChargeLoop is wrapped);
- `SimEVController.process_scheduled_se_params` answers EVProcessing=Ongoing at random: replaced.
"""

from __future__ import annotations

import time
from typing import Any

DAY_S = 86400
EVSE_MIN_POWER_W = 1380.0  # 6 A x 230 V: the smallest AC current an EVSE grants (IEC 61851-1)
NOMINAL_FREQUENCY_HZ = 50


def rational(value: float) -> Any:
    """A -20 RationalNumber (value x 10^exponent, 16-bit value)."""
    from iso15118.shared.messages.iso15118_20.common_types import RationalNumber

    return RationalNumber.get_rational_repr(float(value))


def _durations(starts: list[int], end: int) -> list[int]:
    """Consecutive durations of periods starting at `starts` (ascending), the last ending at `end`."""
    out = []
    for i, start in enumerate(starts):
        stop = starts[i + 1] if i + 1 < len(starts) else max(end, start + 1)
        out.append(max(1, int(stop - start)))
    return out


def tuples_to_v20(tuples: list[dict], time_anchor: int) -> list[Any]:
    """Bridge JSON tuples (PMax [start, W, duration], tariff levels) -> -20 ScheduleTuples."""
    from iso15118.shared.messages.iso15118_20.common_messages import (
        ChargingSchedule,
        PowerSchedule,
        PowerScheduleEntry,
        PowerScheduleEntryList,
        PriceLevelSchedule,
        PriceLevelScheduleEntry,
        PriceLevelScheduleEntryList,
        ScheduleTuple,
    )

    out = []
    for t in tuples:
        pmax = sorted(t["pmax"], key=lambda e: e[0])
        last = pmax[-1]
        end = int(last[0] + (last[2] if last[2] is not None else DAY_S))
        durations = _durations([int(e[0]) for e in pmax], end)
        power = PowerSchedule(time_anchor=time_anchor, schedule_entry_list=PowerScheduleEntryList(
            entries=[PowerScheduleEntry(duration=d, power=rational(e[1]))
                     for e, d in zip(pmax, durations, strict=True)]))
        levels: list[tuple[int, int]] = [(0, 0)]
        num_levels = 1
        if t.get("tariff"):
            entries = sorted(t["tariff"]["entries"], key=lambda e: e[0])
            levels = [(int(e[0]), int(e[1] if e[1] is not None else 0)) for e in entries]
            num_levels = max([int(t["tariff"].get("levels") or 0)] + [lvl + 1 for _, lvl in levels])
        price_durations = _durations([s for s, _ in levels], end)
        prices = PriceLevelSchedule(
            time_anchor=time_anchor, schedule_id=int(t["tariff"]["id"]) if t.get("tariff") else int(t["id"]),
            num_price_levels=num_levels, schedule_entries=PriceLevelScheduleEntryList(entries=[
                PriceLevelScheduleEntry(duration=d, price_level=lvl)
                for (_, lvl), d in zip(levels, price_durations, strict=True)]))
        out.append(ScheduleTuple(schedule_tuple_id=int(t["id"]), charging_schedule=ChargingSchedule(
            power_schedule=power, price_level_schedule=prices)))
    return out


def tuples_from_v20(schedule_tuples: list[Any]) -> list[dict]:
    """-20 ScheduleTuples -> bridge JSON tuples (starts relative to the PowerSchedule's TimeAnchor).

    A PriceLevelSchedule with one level everywhere is no tariff (what `tuples_to_v20` sends when
    the TxProfile has none)."""
    out = []
    for t in schedule_tuples:
        schedule = t.charging_schedule
        pmax, start = [], 0
        for e in schedule.power_schedule.schedule_entry_list.entries:
            pmax.append([start, e.power.get_decimal_value(), e.duration])
            start += e.duration
        tariff = None
        prices = schedule.price_level_schedule
        if prices is not None:
            entries, start = [], 0
            for e in prices.schedule_entries.entries:
                entries.append([start, e.price_level, e.duration, None])
                start += e.duration
            if prices.num_price_levels > 1 or len({e[1] for e in entries}) > 1:
                tariff = {"id": prices.schedule_id, "levels": prices.num_price_levels, "entries": entries}
        out.append({"id": t.schedule_tuple_id, "pmax": pmax, "tariff": tariff})
    return out


def needs_from_v20_context(ev_data_context: Any, max_supporting_points: int) -> dict:
    """The EV's -20 needs as Josev's SECC holds them after ScheduleExchangeReq, in bridge JSON."""
    ac = ev_data_context.rated_limits.ac_limits
    return {"protocol": "20", "departure_time_s": ev_data_context.departure_time or None,
            "e_amount_wh": ev_data_context.target_energy_request,
            "e_max_wh": ev_data_context.max_energy_request, "e_min_wh": ev_data_context.min_energy_request,
            "ev_max_power_w": getattr(ac, "max_charge_power", None),
            "ev_min_power_w": getattr(ac, "min_charge_power", None),
            "max_entries": max_supporting_points}


def v20_secc_class(base: Any, bridge: Any, evse_max_power_w: float, schedule_wait_s: float,
                   timeout_s: float) -> Any:
    """A subclass of the bridged SECC controller `base` whose -20 AC hooks go through the bridge."""
    from iso15118.secc.controller.common import UnknownEnergyService
    from iso15118.shared.messages.enums import ControlMode, ServiceV20
    from iso15118.shared.messages.iso15118_20.ac import (
        ACChargeParameterDiscoveryResParams,
        ScheduledACChargeLoopResParams,
    )
    from iso15118.shared.messages.iso15118_20.common_messages import ScheduledScheduleExchangeResParams

    class V20BridgedEVSEController(base):
        """The evfleet AC EVSE behind a Josev SECC speaking ISO 15118-20 (scheduled control mode)."""

        async def get_ac_charge_params_v20(self, energy_service: Any) -> Any:
            if energy_service != ServiceV20.AC:
                raise UnknownEnergyService(f"only AC is bridged, not {energy_service}")
            return ACChargeParameterDiscoveryResParams(
                evse_max_charge_power=rational(evse_max_power_w),
                evse_min_charge_power=rational(min(EVSE_MIN_POWER_W, evse_max_power_w)),
                evse_nominal_frequency=rational(NOMINAL_FREQUENCY_HZ))

        async def get_schedule_exchange_params(self, selected_energy_service: Any, control_mode: Any,
                                               schedule_exchange_req: Any) -> Any:
            if control_mode != ControlMode.SCHEDULED:  # dynamic control mode is not bridged
                return await super().get_schedule_exchange_params(selected_energy_service, control_mode,
                                                                  schedule_exchange_req)
            return await self.get_scheduled_se_params(selected_energy_service, schedule_exchange_req)

        async def get_scheduled_se_params(self, selected_energy_service: Any,
                                          schedule_exchange_req: Any) -> Any:
            needs = needs_from_v20_context(self.ev_data_context, schedule_exchange_req.max_supporting_points)
            try:
                result = await bridge.request("schedules", schedule_wait_s, needs=needs)
            except TimeoutError:
                result = None
            tuples = result.get("tuples") if result else None
            if not tuples:  # the station did not answer in time: the EVSE maximum until departure
                horizon = min(int(needs["departure_time_s"] or DAY_S), DAY_S)
                tuples = [{"id": 1, "pmax": [[0, evse_max_power_w, horizon]], "tariff": None}]
            self.set_session_limit(float(tuples[0]["pmax"][0][1]))
            return ScheduledScheduleExchangeResParams(schedule_tuples=tuples_to_v20(tuples, int(time.time())))

        def set_session_limit(self, limit_w: float) -> None:
            """The SECC's AC session limits follow the TxProfile: charge up to `limit_w`, no discharge."""
            limits = self.evse_data_context.session_limits.ac_limits
            limits.max_charge_power = limit_w
            for name in ("max_charge_power_l2", "max_charge_power_l3", "max_discharge_power_l2",
                         "max_discharge_power_l3", "max_charge_reactive_power_l2",
                         "max_charge_reactive_power_l3", "max_discharge_reactive_power_l2",
                         "max_discharge_reactive_power_l3"):
                setattr(limits, name, None)
            limits.max_discharge_power = 0
            limits.max_charge_reactive_power = limits.max_discharge_reactive_power = 0

        async def get_ac_charge_loop_params_v20(self, control_mode: Any, selected_service: Any) -> Any:
            if control_mode != ControlMode.SCHEDULED or selected_service != ServiceV20.AC:
                return await super().get_ac_charge_loop_params_v20(control_mode, selected_service)
            answer = await bridge.request("ac_limit", timeout_s)
            limit_w = float(answer["limit_w"])
            self.set_session_limit(limit_w)
            return ScheduledACChargeLoopResParams(evse_target_active_power=rational(limit_w))

    return V20BridgedEVSEController


def v20_ev_class(base: Any, bridge: Any, timeout_s: float) -> Any:
    """A subclass of the bridged EV controller `base` whose -20 AC hooks come from the simulated EV."""
    from iso15118.shared.messages.enums import ControlMode
    from iso15118.shared.messages.iso15118_20.ac import (
        ACChargeParameterDiscoveryReqParams,
        ScheduledACChargeLoopReqParams,
    )
    from iso15118.shared.messages.iso15118_20.common_messages import ChargeProgress as ChargeProgressV20
    from iso15118.shared.messages.iso15118_20.common_messages import (
        EVPowerProfile,
        EVPowerScheduleEntry,
        EVPowerScheduleEntryList,
        PowerToleranceAcceptance,
        ScheduledEVPowerProfile,
        ScheduledScheduleExchangeReqParams,
    )

    class V20BridgedEVController(base):
        """The simulated evfleet EV behind a Josev EVCC speaking ISO 15118-20 AC."""

        def __init__(self) -> None:
            super().__init__()
            self.v20: dict[str, Any] = {}
            self.evse_target_w: float | None = None  # EVSETargetActivePower of the last ACChargeLoopRes

        async def get_charge_params_v20(self, selected_service: Any) -> Any:
            self.v20 = await bridge.request("ev_params", timeout_s)
            return ACChargeParameterDiscoveryReqParams(
                ev_max_charge_power=rational(self.v20["ev_max_power_w"]),
                ev_min_charge_power=rational(self.v20["ev_min_power_w"]))

        async def get_scheduled_se_params(self, selected_energy_service: Any) -> Any:
            self.v20 = await bridge.request("ev_params", timeout_s)  # departure counted from now
            energy = float(self.v20["e_amount_wh"])
            departure = int(self.v20["departure_time_s"] or 0)
            return ScheduledScheduleExchangeReqParams(
                departure_time=departure or None, ev_target_energy_request=rational(energy),
                ev_max_energy_request=rational(energy), ev_min_energy_request=rational(0))

        async def process_scheduled_se_params(self, scheduled_params: Any, pause: bool) -> Any:
            tuples = scheduled_params.schedule_tuples
            anchor = tuples[0].charging_schedule.power_schedule.time_anchor
            plan = await bridge.request("plan", timeout_s, tuples=tuples_from_v20(tuples))
            entries = sorted(plan["entries"], key=lambda e: e[0])
            departure = int(self.v20.get("departure_time_s") or 0) or DAY_S
            durations = _durations([int(s) for s, _ in entries], departure)
            profile = EVPowerProfile(
                time_anchor=anchor,
                entry_list=EVPowerScheduleEntryList(entries=[
                    EVPowerScheduleEntry(duration=d, power=rational(w))
                    for (_, w), d in zip(entries, durations, strict=True)]),
                scheduled_profile=ScheduledEVPowerProfile(
                    selected_schedule_tuple_id=plan["tuple_id"],
                    power_tolerance_acceptance=PowerToleranceAcceptance.CONFIRMED))
            return profile, (ChargeProgressV20.STOP if pause else ChargeProgressV20.START)

        async def get_ac_charge_loop_params_v20(self, control_mode: Any, selected_service: Any) -> Any:
            if control_mode != ControlMode.SCHEDULED:
                return await super().get_ac_charge_loop_params_v20(control_mode, selected_service)
            # no bridge round trip here (the EVCC's 2 s timeout): the EV reports what it may draw
            max_w = float(self.v20.get("ev_max_power_w") or 0)
            present_w = min(max_w, self.evse_target_w) if self.evse_target_w is not None else 0.0
            return ScheduledACChargeLoopReqParams(ev_present_active_power=rational(present_w),
                                                  ev_max_charge_power=rational(max_w))

        def on_ac_charge_loop_res(self, res: Any) -> None:
            """What the EVSE said in an ACChargeLoopRes (called by the patched EVCC state)."""
            params = res.scheduled_params
            if params is not None and params.evse_target_active_power is not None:
                self.evse_target_w = float(params.evse_target_active_power.get_decimal_value())
            bridge.notify("ac_res", target_w=self.evse_target_w)

    return V20BridgedEVController


_patched = {"secc": False, "evcc": False}


def patch_secc_v20_states() -> None:
    """Forward each accepted -20 PowerDeliveryReq (progress, tuple, EVPowerProfile) to the bridge."""
    if _patched["secc"]:
        return
    _patched["secc"] = True
    from iso15118.secc.states import iso15118_20_states as states
    from iso15118.shared.states import Terminate

    original = states.PowerDelivery.process_message

    async def power_delivery(self: Any, message: Any, message_exi: bytes | None = None) -> None:
        await original(self, message, message_exi)
        req = getattr(message, "power_delivery_req", None) or getattr(
            getattr(message, "body", None), "power_delivery_req", None)
        if req is None and type(message).__name__ == "PowerDeliveryReq":
            req = message
        hook = getattr(self.comm_session.evse_controller, "bridge_power_delivery", None)
        if req is None or hook is None or self.next_state is Terminate:
            return
        entries, tuple_id = None, None
        profile = req.ev_power_profile
        if profile is not None and profile.scheduled_profile is not None:
            tuple_id = profile.scheduled_profile.selected_schedule_tuple_id
            entries, start = [], 0
            for e in profile.entry_list.entries:
                entries.append([start, e.power.get_decimal_value()])
                start += e.duration
        hook(str(req.charge_progress.value), tuple_id, entries)

    states.PowerDelivery.process_message = power_delivery


def patch_evcc_v20_states() -> None:
    """Hand each decoded -20 ACChargeLoopRes to the EV controller (Josev's EVCC does not)."""
    if _patched["evcc"]:
        return
    _patched["evcc"] = True
    from iso15118.evcc.states import iso15118_20_states as states

    original = states.ACChargeLoop.process_message

    async def ac_charge_loop(self: Any, message: Any, message_exi: bytes | None = None) -> None:
        hook = getattr(self.comm_session.ev_controller, "on_ac_charge_loop_res", None)
        if hook is not None and type(message).__name__ == "ACChargeLoopRes":
            hook(message)
        await original(self, message, message_exi)

    states.ACChargeLoop.process_message = ac_charge_loop


def encode_v20(tuples: list[dict]) -> dict:
    """EXI-encode bridge JSON tuples as the SECC's ScheduleExchangeRes and decode them back
    (`josev_runner.py encode --iso15118 20`); the codec must be set (`EXI().set_exi_codec`)."""
    from iso15118.shared.exi_codec import EXI
    from iso15118.shared.messages.enums import Namespace
    from iso15118.shared.messages.iso15118_20.common_messages import (
        ScheduledScheduleExchangeResParams,
        ScheduleExchangeRes,
    )
    from iso15118.shared.messages.iso15118_20.common_types import MessageHeader, Processing, ResponseCode

    res = ScheduleExchangeRes(
        header=MessageHeader(session_id="00AB12CD34EF5678", timestamp=int(time.time())),
        response_code=ResponseCode.OK, evse_processing=Processing.FINISHED,
        scheduled_params=ScheduledScheduleExchangeResParams(
            schedule_tuples=tuples_to_v20(tuples, int(time.time()))))
    exi = EXI().to_exi(res, Namespace.ISO_V20_COMMON_MSG)
    back = EXI().from_exi(exi, Namespace.ISO_V20_COMMON_MSG)
    return {"ok": True, "bytes": len(exi), "decoded": tuples_from_v20(back.scheduled_params.schedule_tuples)}
