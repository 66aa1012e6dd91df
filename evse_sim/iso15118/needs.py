"""When is an EV's ChargeParameterDiscoveryReq a *new* request? (pure; shared by both SECCs)

An EV repeats its needs at every ChargeParameterDiscoveryReq, including each renegotiation.
ISO 15118-2 gives the departure as "seconds from now", so it shrinks with elapsed time, and an
EV that reports what it still needs gives a smaller energy amount as it charges. Neither is a
new request: the station forwards NotifyEVChargingNeeds only when the request itself changed.

`is_new_request(reference, req, now_s, meter_wh)` compares with the request the station last
forwarded (`NeedsReference`: the message, the clock time it came, the EVSE meter then):

- the energy transfer mode, MaxEntriesSAScheduleTuple, or the EV's current/voltage (DC: and power)
  limits changed (a DC EV's state of charge rises as it charges: that is not a change);
- a departure appeared or disappeared, or the absolute departure (arrival time of the message +
  seconds left) moved by more than `DEPARTURE_TOLERANCE_S`;
- the energy differs from what is left of the referenced request (its amount minus what the
  EVSE metered since) by more than `energy_tolerance_wh` (500 Wh or 5 %, whichever is larger;
  metering lags by up to a meter interval). Without a meter, only an increase counts.

The modelled SECC (`session.SeccSession`) and the real one (`bridge.JosevHlc`) both use this,
so the 500-station model sees exactly the drift the real bridge sees. The reference moves only
when a new request is forwarded, so drift never accumulates into a "change".
"""

from __future__ import annotations

from dataclasses import dataclass

from evse_sim.iso15118.messages import ChargeParameterDiscoveryReq, DcEvChargeParameter, EvChargeParameter

DEPARTURE_TOLERANCE_S = 120.0
ENERGY_TOLERANCE_WH = 500.0
ENERGY_TOLERANCE_SHARE = 0.05
CURRENT_TOLERANCE_A = 0.5
MAX_POWER_TOLERANCE_W = 100.0  # DC: the EV's power limit (the csms uses the same tolerance)


def _max_power_w(param: EvChargeParameter) -> float:
    return (param.ev_max_power_w or 0.0) if isinstance(param, DcEvChargeParameter) else 0.0


@dataclass(frozen=True)
class NeedsReference:
    """The request the station last forwarded: the EV's message, when (clock s), the EVSE meter (Wh)."""

    req: ChargeParameterDiscoveryReq
    at_s: float
    meter_wh: float | None = None


def energy_tolerance_wh(amount_wh: float) -> float:
    """How far an energy amount may be off what is left of the request and still be the same."""
    return max(ENERGY_TOLERANCE_WH, ENERGY_TOLERANCE_SHARE * max(0.0, amount_wh))


def is_new_request(ref: NeedsReference | None, req: ChargeParameterDiscoveryReq, now_s: float,
                   meter_wh: float | None = None) -> bool:
    """True when `req` (received at clock time `now_s`, EVSE meter `meter_wh`) is a new request."""
    if ref is None:
        return True
    old, new = ref.req.ev_charge_parameter, req.ev_charge_parameter
    if (ref.req.requested_energy_transfer_mode != req.requested_energy_transfer_mode
            or ref.req.max_entries_sa_schedule_tuple != req.max_entries_sa_schedule_tuple
            or abs(old.ev_max_current_a - new.ev_max_current_a) > CURRENT_TOLERANCE_A
            or abs(old.ev_min_current_a - new.ev_min_current_a) > CURRENT_TOLERANCE_A
            or abs(old.ev_max_voltage_v - new.ev_max_voltage_v) > 1.0
            or abs(_max_power_w(old) - _max_power_w(new)) > MAX_POWER_TOLERANCE_W):
        return True
    if (old.departure_time_s is None) != (new.departure_time_s is None):
        return True
    if old.departure_time_s is not None and new.departure_time_s is not None:
        moved_s = (now_s + new.departure_time_s) - (ref.at_s + old.departure_time_s)
        if abs(moved_s) > DEPARTURE_TOLERANCE_S:
            return True
    tol = energy_tolerance_wh(old.e_amount_wh)
    if meter_wh is None or ref.meter_wh is None:
        return new.e_amount_wh > old.e_amount_wh + tol
    left_wh = max(0.0, old.e_amount_wh - max(0.0, meter_wh - ref.meter_wh))
    return abs(new.e_amount_wh - left_wh) > tol
