"""Battery taper, EV charging and energy accounting (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from evse_sim.battery import Battery, BatteryError
from evse_sim.ev import Ev, EvSpec


def test_constant_power_below_transition_then_taper() -> None:
    b = Battery(capacity_wh=50_000, soc=0.5, max_power_w=11_000, efficiency=1.0)
    assert b.acceptance_w() == 11_000
    assert b.acceptance_w(0.9) == pytest.approx(5_500)
    assert b.acceptance_w(1.0) == 0.0
    drawn = b.charge(11_000, 3600)
    assert drawn == pytest.approx(11_000)
    assert b.soc == pytest.approx(0.72)


def test_efficiency_losses_and_target_stop() -> None:
    b = Battery(capacity_wh=10_000, soc=0.1, max_power_w=7_000, efficiency=0.9)
    drawn_w = b.charge(7_000, 3600, target_soc=0.5)
    assert b.soc == pytest.approx(0.5)
    assert drawn_w * 1.0 == pytest.approx(4_000 / 0.9)  # 4 kWh into cells over one hour


def test_invalid_parameters_raise() -> None:
    with pytest.raises(BatteryError, match="soc"):
        Battery(capacity_wh=1, soc=1.5, max_power_w=1)
    with pytest.raises(BatteryError, match="capacity"):
        Battery(capacity_wh=0, soc=0.5, max_power_w=1)


@given(st.floats(0, 0.99), st.floats(0, 200_000), st.floats(1, 3600), st.floats(0.5, 1.0))
def test_never_draws_above_offer_or_overfills(soc: float, offered_w: float, dt_s: float, eff: float) -> None:
    b = Battery(capacity_wh=40_000, soc=soc, max_power_w=50_000, efficiency=eff)
    drawn = b.charge(offered_w, dt_s)
    assert 0 <= drawn <= offered_w + 1e-6
    assert drawn <= 50_000 + 1e-6
    assert soc <= b.soc <= 1.0


def test_ev_ac_dc_limits_and_need() -> None:
    t = datetime(2026, 1, 1, tzinfo=UTC)
    spec = EvSpec("ev1", "m", 60.0, 0.2, 0.8, 11.0, 100.0, t, t + timedelta(hours=8))
    ev = Ev(spec)
    assert spec.energy_need_kwh == pytest.approx(36.0)
    assert ev.max_power_w(dc=False) == 11_000
    assert ev.max_power_w(dc=True) == 100_000
    drawn = ev.charge(22_000, 60, dc=False)
    assert drawn == pytest.approx(11_000)
    assert ev.delivered_wh == pytest.approx(11_000 / 60)
    for _ in range(200):
        ev.charge(11_000, 600, dc=False)
    assert ev.full and ev.remaining_need_wh == pytest.approx(0.0, abs=1e-6)
