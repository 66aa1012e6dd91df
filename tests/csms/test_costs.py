"""Session cost from meter samples and a price series (pure), hand-computed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from csms.core.costs import PriceSeries, session_cost, uncontrolled_cost

T0 = datetime(2026, 3, 2, 0, 0, tzinfo=UTC)
PRICES = PriceSeries(T0, timedelta(hours=1), (0.1, 0.3, 0.2))


def sample(minutes: float, energy_wh: float, power_w: float = 0.0) -> dict[str, object]:
    return {"ts": (T0 + timedelta(minutes=minutes)).isoformat(), "energy_wh": energy_wh, "power_w": power_w}


def test_energy_is_priced_in_the_steps_it_was_drawn() -> None:
    # 10 kWh evenly from 00:30 to 01:30: 5 kWh at 0.1, 5 kWh at 0.3
    assert abs(session_cost([sample(30, 0), sample(90, 10_000)], PRICES) - 2.0) < 1e-9
    # a register that starts high: only the difference counts; samples in any order
    samples = [sample(150, 13_000), sample(120, 12_000), sample(60, 2_000)]
    assert abs(session_cost(samples, PRICES) - (10 * 0.3 + 1 * 0.2)) < 1e-9


def test_uncontrolled_is_the_same_energy_at_once_from_plug_in() -> None:
    # 10 kWh at 20 kW from 00:30: done by 01:00, all at 0.1
    samples = [sample(30, 0, 20_000), sample(90, 10_000, 5_000)]
    assert abs(uncontrolled_cost(samples, PRICES) - 1.0) < 1e-9
    # at the EVSE's 5 kW: 00:30-02:30 -> 2.5 kWh at 0.1, 5 at 0.3, 2.5 at 0.2
    assert abs(uncontrolled_cost(samples, PRICES, max_power_w=5_000) - (0.25 + 1.5 + 0.5)) < 1e-9


def test_energy_outside_the_series_is_not_priced() -> None:
    assert session_cost([sample(150, 0), sample(200, 1_000)], PRICES) is None
    assert session_cost([sample(10, 0), sample(20, 1_000)], None) is None
    assert session_cost([sample(10, 0)], PRICES) == 0.0
    assert PriceSeries.from_document({"start": "nope", "step_minutes": 15, "import_price": [1]}) is None
