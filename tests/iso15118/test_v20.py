"""ISO 15118-20 AC mapping on the station side (pure): needs, EV power parameters, what the EV draws."""

from __future__ import annotations

from datetime import UTC, datetime

from evse_sim.iso15118.messages import AcEvChargeParameter, EnergyTransferMode, EvNeeds
from evse_sim.iso15118.needs import NeedsReference, is_new_request
from evse_sim.iso15118.schedules import SecLimits, needs_payload
from evse_sim.iso15118.v20 import ev_draw_w, ev_power_params, needs_from_v20

RAW = {"protocol": "20", "departure_time_s": 18000, "e_amount_wh": 41810, "e_max_wh": 41810, "e_min_wh": 0,
       "ev_max_power_w": 10350, "ev_min_power_w": 4140, "max_entries": 1024}


def test_v20_needs_become_notify_ev_charging_needs_in_amperes() -> None:
    req = needs_from_v20(RAW, SecLimits(11_000.0, 230.0, 3))
    assert req.requested_energy_transfer_mode is EnergyTransferMode.AC_THREE_PHASE
    ev = req.ev_charge_parameter
    assert isinstance(ev, AcEvChargeParameter)
    assert (ev.departure_time_s, ev.e_amount_wh) == (18000, 41810)
    assert (ev.ev_max_current_a, ev.ev_min_current_a) == (15, 6)
    payload = needs_payload(1, req, datetime(2026, 12, 6, 12, 0, tzinfo=UTC))
    assert payload["chargingNeeds"]["acChargingParameters"] == {
        "energyAmount": 41810, "evMinCurrent": 6, "evMaxCurrent": 15, "evMaxVoltage": 230}
    assert payload["chargingNeeds"]["departureTime"].startswith("2026-12-06T17:00:00")
    assert payload["maxScheduleTuples"] == 1024
    single = needs_from_v20(RAW, SecLimits(7_400.0, 230.0, 1))
    assert single.requested_energy_transfer_mode is EnergyTransferMode.AC_SINGLE_PHASE


def test_v20_needs_without_target_use_the_maximum_and_missing_departure_stays_none() -> None:
    raw = {**RAW, "e_amount_wh": None, "e_max_wh": 5000, "departure_time_s": None}
    ev = needs_from_v20(raw, SecLimits(11_000.0)).ev_charge_parameter
    assert ev.e_amount_wh == 5000 and ev.departure_time_s is None


def test_a_repeated_v20_request_is_not_new() -> None:
    limits = SecLimits(11_000.0)
    first = needs_from_v20(RAW, limits)
    ref = NeedsReference(first, 0.0, 0.0)
    later = needs_from_v20({**RAW, "departure_time_s": 18000 - 600, "e_amount_wh": 41810 - 1000}, limits)
    assert not is_new_request(ref, later, 600.0, 1000.0)  # 10 min later, 1 kWh delivered: the same request
    assert is_new_request(ref, needs_from_v20({**RAW, "departure_time_s": 7200}, limits), 600.0, 1000.0)


def test_ev_power_params_and_draw() -> None:
    needs = EvNeeds(departure_time_s=3600, energy_wh=10_000, ev_max_current_a=16, ev_min_current_a=6)
    assert ev_power_params(needs) == {"ev_max_power_w": 11040.0, "ev_min_power_w": 4140.0}
    assert ev_draw_w(7000.0, None) == 7000.0  # before the charge loop: its own plan
    assert ev_draw_w(7000.0, 3000.0) == 3000.0  # then the SECC's EVSETargetActivePower
    assert ev_draw_w(7000.0, -5.0) == 0.0
