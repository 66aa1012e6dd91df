"""optimizer.min_peak: the lowest peak of the same sessions at a given cost (hand-checkable LPs)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from optimizer.min_peak import Session, min_peak

T0 = datetime(2026, 1, 5, 22, 0, tzinfo=UTC)
H = timedelta(hours=1)


def test_flat_price_spreads_over_the_window() -> None:
    # 11 kWh over 4 h at a flat price: 2.75 kW; a 30-min presence in the last step is counted exactly
    out = min_peak([Session(T0, T0 + 4 * H, 11.0, 11.0)], T0, T0 + 4 * H, 3600, [0.25] * 4, 100.0)
    assert out.peak_kw == pytest.approx(2.75, abs=1e-6)
    assert out.min_cost == pytest.approx(11.0 * 0.25, abs=1e-6)


def test_cost_bound_keeps_energy_in_the_cheap_hours() -> None:
    # two cars, 2 cheap hours then 2 dear ones: at the cheapest cost both charge in the cheap hours
    cars = [Session(T0, T0 + 4 * H, 10.0, 11.0), Session(T0, T0 + 4 * H, 10.0, 11.0)]
    prices = [0.1, 0.1, 0.3, 0.3]
    cheapest = min_peak(cars, T0, T0 + 4 * H, 3600, prices, 100.0)
    assert cheapest.peak_kw == pytest.approx(10.0, abs=1e-6)  # 20 kWh in 2 h
    # allowed to spend 1.0 more, 5 kWh move to the dear hours: 15 kWh / 2 h in the cheap ones
    richer = min_peak(cars, T0, T0 + 4 * H, 3600, prices, 100.0, max_cost=cheapest.min_cost + 1.0)
    assert richer.peak_kw == pytest.approx(7.5, abs=1e-6)


def test_energy_capped_by_window_and_partial_steps() -> None:
    car = Session(T0 + timedelta(minutes=30), T0 + 2 * H, 50.0, 10.0)  # only 15 kWh fit
    out = min_peak([car], T0, T0 + 2 * H, 3600, [0.2, 0.2], 100.0)
    assert out.peak_kw == pytest.approx(10.0, abs=1e-6)  # full power throughout: step averages 5 and 10
