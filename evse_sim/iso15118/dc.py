"""ISO 15118-2 DC charge loop on the station side (pure): what the EVSE grants, what the EV asks.

The Josev runner (`josev_dc.py`) asks the bridge twice per CurrentDemand cycle:

- the SECC, with the EV's CurrentDemandReq targets: `evse_answer` gives the EVSE's power limit
  now (the TxProfile's limit at this instant, as the SAScheduleList would say it, capped at the
  EVSE maximum; the maximum while no TxProfile came) and what the EVSE delivers:
  min(target voltage x target current, limit). In PreCharge it delivers 0 A at the EV's target
  voltage.
- the EV, with the EVSEMaxPowerLimit it decoded from the last CurrentDemandRes: `ev_request`
  gives its next target current: its own maximum, at most the EVSE's limit, 0 once full.

A DC session does not renegotiate (Josev's EVCC cannot, see `josev_dc.py`): a new TxProfile
reaches the EV as the limit in the next CurrentDemandRes, one cycle (1 s real) later. The
station's own composite-limit enforcement caps the draw meanwhile, so the site limit holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from evse_sim.iso15118.messages import EvNeeds
from evse_sim.iso15118.schedules import ScheduleConversionError, SecLimits, profile_to_sa_schedules

FULL_WH = 1.0  # the EV asks for nothing once less than this is left


def evse_limit_w(profile: dict[str, Any] | None, now: datetime, limits: SecLimits) -> float:
    """The EVSE's power limit at `now`: the TxProfile's (first schedule) limit, or the EVSE maximum."""
    if profile is None:
        return limits.evse_max_power_w
    try:
        tuples = profile_to_sa_schedules(profile, now, limits)
    except (ScheduleConversionError, KeyError, TypeError, ValueError):
        return 0.0  # a profile we cannot read: grant nothing rather than too much
    return min(limits.evse_max_power_w, tuples[0].pmax_at(0)) if tuples else 0.0


@dataclass(frozen=True)
class EvseAnswer:
    """What the SECC reports in PreChargeRes/CurrentDemandRes."""

    limit_w: float
    present_voltage_v: float
    present_current_a: float
    target_w: float

    @property
    def delivered_w(self) -> float:
        """Power the EVSE delivers now."""
        return self.present_voltage_v * self.present_current_a

    def to_json(self) -> dict[str, float]:
        """The bridge's answer to the SECC."""
        return {"limit_w": self.limit_w, "present_voltage_v": self.present_voltage_v,
                "present_current_a": self.present_current_a, "target_w": self.target_w}


def evse_answer(limit_w: float, target_voltage_v: float, target_current_a: float,
                precharge: bool) -> EvseAnswer:
    """The EVSE's side of one PreCharge/CurrentDemand cycle."""
    voltage_v = max(0.0, target_voltage_v)
    target_w = voltage_v * max(0.0, target_current_a)
    if precharge or voltage_v <= 0:
        return EvseAnswer(limit_w, voltage_v, 0.0, target_w)
    delivered_w = min(target_w, max(0.0, limit_w))
    return EvseAnswer(limit_w, voltage_v, delivered_w / voltage_v, target_w)


def ev_request(needs: EvNeeds, evse_limit_w: float | None, stop: bool) -> dict[str, Any]:
    """The EV's next CurrentDemandReq targets (its state of charge, target voltage and current)."""
    assert needs.dc is not None
    complete = needs.energy_wh < FULL_WH
    power_w = 0.0 if complete or stop else needs.dc.ev_max_power_w
    if evse_limit_w is not None:
        power_w = min(power_w, max(0.0, evse_limit_w))
    voltage_v = needs.dc.dc_voltage_v
    return {"continue": not stop, "soc": needs.dc.soc_pct, "target_voltage_v": voltage_v,
            "target_current_a": round(power_w / voltage_v, 1), "complete": complete}
