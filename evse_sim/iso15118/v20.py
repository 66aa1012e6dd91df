"""ISO 15118-20 AC (scheduled control mode) on the station side (pure mapping, no I/O).

The Josev side is `josev_v20.py`; `bridge.py` calls these:

- `needs_from_v20`: the EV's -20 needs as the SECC holds them after ScheduleExchangeReq
  (EVMaximum/MinimumChargePower from AC_ChargeParameterDiscovery; DepartureTime and
  EVTargetEnergyRequest from ScheduleExchange; MaximumSupportingPoints) -> the same
  ChargeParameterDiscoveryReq the -2 path builds, so NotifyEVChargingNeeds, the "is this a new
  request" rule and the SAScheduleList conversion are shared. OCPP 2.0.1's acChargingParameters
  want currents: power / (EVSE voltage x EVSE phases); evMaxVoltage is the EVSE's nominal voltage
  (what the -2 EV reports too). -20 AC gives no phase count: a single-phase EV on a three-phase
  EVSE is announced with a third of its current.
- `ev_power_params`: the simulated EV's needs in -20 units (W) for the EVCC's
  AC_ChargeParameterDiscoveryReq.
- `ev_draw_w`: what the EV draws. Josev 0.31.2's EVCC cannot renegotiate a -20 schedule (see
  `josev_v20.py`), so the SECC's EVSETargetActivePower, the TxProfile's limit now in every
  ACChargeLoopRes, is the EV's ceiling once the charge loop runs; before that, its own plan.
"""

from __future__ import annotations

from typing import Any

from evfleet.profile import a_to_w
from evse_sim.iso15118.messages import (
    AcEvChargeParameter,
    ChargeParameterDiscoveryReq,
    EnergyTransferMode,
    EvNeeds,
)
from evse_sim.iso15118.schedules import SecLimits

PROTOCOL_2 = "2"
PROTOCOL_20 = "20"
PROTOCOLS = (PROTOCOL_2, PROTOCOL_20)
JOSEV_PROTOCOL = {PROTOCOL_2: "ISO_15118_2", PROTOCOL_20: "ISO_15118_20_AC"}  # Josev's names


def _num(data: dict[str, Any], key: str) -> float:
    value = data.get(key)
    return float(value) if value is not None else 0.0


def needs_from_v20(data: dict[str, Any], limits: SecLimits) -> ChargeParameterDiscoveryReq:
    """The SECC runner's -20 needs (`josev_v20.needs_from_v20_context`) -> our message (AC, currents)."""
    per_amp_w = limits.voltage_v * max(1, limits.phases)
    energy_wh = _num(data, "e_amount_wh") or _num(data, "e_max_wh")
    departure = data.get("departure_time_s")
    mode = EnergyTransferMode.AC_SINGLE_PHASE if limits.phases == 1 else EnergyTransferMode.AC_THREE_PHASE
    return ChargeParameterDiscoveryReq(
        mode,
        AcEvChargeParameter(int(departure) if departure else None, energy_wh, float(limits.voltage_v),
                            round(_num(data, "ev_max_power_w") / per_amp_w, 1),
                            round(_num(data, "ev_min_power_w") / per_amp_w, 1)),
        data.get("max_entries"))


def ev_power_params(needs: EvNeeds) -> dict[str, float]:
    """The EV's maximum and minimum charging power (W) for AC_ChargeParameterDiscoveryReq."""
    return {"ev_max_power_w": round(needs.ev_max_power_w, 1),
            "ev_min_power_w": round(a_to_w(needs.ev_min_current_a, needs.phases, needs.voltage_v), 1)}


def ev_draw_w(plan_w: float, evse_target_w: float | None) -> float:
    """What a -20 EV draws: the SECC's EVSETargetActivePower once it came, its own plan before."""
    return plan_w if evse_target_w is None else max(0.0, evse_target_w)
