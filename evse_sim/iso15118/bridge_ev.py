"""The simulated EV behind a Josev EVCC: what `JosevHlc` answers the EVCC runner (its EV side).

The EVCC asks for the EV's needs (`ev_params`, departure counted from now), lets the EV pick a
schedule tuple and plan (`plan`, the same code as the modelled EV), asks whether to go on
(`continue`), in DC for its next CurrentDemand targets (`dc_state`); it reports what the EVSE said
in each CurrentDemandRes (`dc_res`) or ISO 15118-20 ACChargeLoopRes (`ac_res`). `ev_limit_w` is
what the EV lets itself draw now; the station's follower caps the EV model with it.
"""

from __future__ import annotations

from typing import Any

from evfleet.clock import Clock
from evse_sim.iso15118.bridge_json import tuples_to_json
from evse_sim.iso15118.dc import ev_request
from evse_sim.iso15118.messages import EvNeeds, SAScheduleTuple
from evse_sim.iso15118.netns import Iso15118UnavailableError
from evse_sim.iso15118.schedules import EvPlan, plan_ev_profile, profile_power_at
from evse_sim.iso15118.v20 import ev_draw_w, ev_power_params

EV_PLAN_MARGIN = 0.03  # the simulated EV plans 3 % more than it needs (see `_plan`)


class EvSide:
    """The EV half of `JosevHlc` (a mixin: `JosevHlc.__init__` sets these attributes)."""

    clock: Clock
    dc: bool
    v20: bool
    state: str
    failed: bool
    stop_requested: bool
    needs: EvNeeds | None
    needs_set_at: float
    needs_source: Any
    plan: EvPlan | None
    plan_time_base: float
    plans: list[EvPlan]
    offered_at: float
    dc_granted_w: float | None
    dc_ev_limit_w: float | None
    v20_target_w: float | None

    def _record(self, kind: str, data: dict[str, Any]) -> None:
        raise NotImplementedError

    def update_needs(self, needs: EvNeeds, renegotiate: bool = False) -> None:
        """Refresh the EV's needs (used at the next ChargeParameterDiscoveryReq)."""
        if renegotiate:
            raise NotImplementedError("EV-initiated renegotiation is only modelled (no Josev EVCC hook)")
        self.needs = needs
        self.needs_set_at = self.clock.timestamp()

    def ev_limit_w(self, now_s: float) -> float | None:
        """What the EV's own plan lets it draw at clock time `now_s` (None before a plan).

        DC: what the last CurrentDemand cycle delivers (0 before CurrentDemand and after it ended,
        also after a failure: a DC EV cannot charge without its HLC session). ISO 15118-20 AC: the
        SECC's EVSETargetActivePower once the charge loop runs (`v20.ev_draw_w`)."""
        if self.dc:
            return (self.dc_granted_w or 0.0) if self.state == "charging" and not self.failed else 0.0
        if self.plan is None or self.failed:
            return None
        plan_w = profile_power_at(self.plan.profile, now_s - self.plan_time_base)
        return ev_draw_w(plan_w, self.v20_target_w) if self.v20 else plan_w

    def _fresh_needs(self) -> None:
        fresh = self.needs_source() if self.needs_source is not None else None
        if fresh is not None:  # the EV reports what it still needs, departure from now
            self.needs, self.needs_set_at = fresh, self.clock.timestamp()

    def _dc_state(self, ev_seen_limit_w: float | None) -> dict[str, Any]:
        """The EV's next CurrentDemandReq targets, given the EVSE limit it decoded last."""
        self._fresh_needs()
        if self.needs is None or self.needs.dc is None:
            raise Iso15118UnavailableError("a DC EVCC asked for its state without DC needs")
        return ev_request(self.needs, ev_seen_limit_w, self.stop_requested)

    def _ev_params(self) -> dict[str, Any]:
        self._fresh_needs()
        n = self.needs
        if n is None:
            raise Iso15118UnavailableError("EVCC asked for needs before the EV plugged in")
        params: dict[str, Any] = {
            "departure_time_s": self._departure_left_s(), "e_amount_wh": n.energy_wh,
            "ev_max_current_a": n.ev_max_current_a, "ev_min_current_a": n.ev_min_current_a,
            "ev_max_voltage_v": n.ev_max_voltage_v, **ev_power_params(n)}
        if n.dc is not None:
            params["dc"] = {"max_power_w": n.dc.ev_max_power_w, "soc": n.dc.soc_pct,
                            "capacity_wh": n.dc.ev_energy_capacity_wh, "full_soc": n.dc.full_soc_pct,
                            "voltage_v": n.dc.dc_voltage_v}
        return params

    def _departure_left_s(self) -> int | None:
        """Seconds to departure now (the needs give it relative to when they were set)."""
        if self.needs is None or not self.needs.departure_time_s:
            return None
        return max(1, int(self.needs.departure_time_s - (self.clock.timestamp() - self.needs_set_at)))

    def _plan(self, tuples: tuple[SAScheduleTuple, ...]) -> dict[str, Any]:
        assert self.needs is not None
        n = self.needs
        # a real EV's plan keeps a small margin (its BMS stops at the target anyway): the schedule's
        # relative times reach it with latency, and a plan exactly at the need ends short
        plan = plan_ev_profile(tuples, n.energy_wh * (1 + EV_PLAN_MARGIN), n.ev_max_power_w,
                               self._departure_left_s())
        self.plan = plan
        self.plan_time_base = self.offered_at  # relative times count from the offered schedule
        self.plans.append(plan)
        self._record("ev_plan", {"tuple_id": plan.sa_schedule_tuple_id, "received": tuples_to_json(tuples),
                                 "entries": [[e.start_s, e.max_power_w] for e in plan.profile]})
        return {"tuple_id": plan.sa_schedule_tuple_id,
                "entries": [[e.start_s, e.max_power_w] for e in plan.profile]}

    def _on_ev_notice(self, op: str, msg: dict[str, Any]) -> bool:
        """What the EVSE said, as the EV decoded it (DC CurrentDemandRes, -20 ACChargeLoopRes);
        True when handled. Records only changes."""
        if op == "dc_res":
            seen, last = msg.get("limit_w"), self.dc_ev_limit_w
            if seen is not None and (last is None or abs(float(seen) - last) > 1.0):
                self._record("dc_ev_limit", {"limit_w": float(seen)})
            self.dc_ev_limit_w = None if seen is None else float(seen)
            return True
        if op == "ac_res":
            seen, last = msg.get("target_w"), self.v20_target_w
            self.v20_target_w = None if seen is None else float(seen)
            if seen is not None and (last is None or abs(float(seen) - last) > 1.0):
                self._record("v20_ev_target", {"target_w": float(seen)})
            return True
        return False
