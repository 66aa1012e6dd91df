"""Seed 002: an EV aggregator maximising profit with V2G under day-ahead prices and battery wear.

The paper maximises Σ_t (P_sell E_discharge − P_buy E_charge − C_battery) under energy balance,
battery capacity limits and a grid limit, on "real-world electricity market data" it does not
publish. Here: 12 fleet EVs on bidirectional 11 kW chargers, parked over an evening price peak,
a day-ahead-shaped hourly price (selling pays the price minus a 1 ct/kWh fee), a 2.5 ct/kWh
degradation cost, and a floor of 30 % SOC for V2G. Compare `profit` with `cost` on the same fleet
without V2G (`without_v2g`) and with `uncontrolled` charging.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np

from optimizer.problem import EV, Charger, Instance, Objective, Site, Tariff

START = datetime.fromisoformat("2025-01-15T12:00:00+01:00")
N_EVS, CHARGER_KW, STEPS = 12, 11.0, 24


def day_ahead_price(steps: int = STEPS) -> list[float]:
    """Hourly day-ahead-shaped price from 12:00 [EUR/kWh]: evening peak ~0.32, night trough ~0.07."""
    h = (12 + np.arange(steps)) % 24
    price = 0.14 + 0.18 * np.exp(-((h - 18.5) ** 2) / 3.0) - 0.07 * np.exp(-(((h - 3.0) % 24) ** 2) / 8.0)
    return price.round(4).tolist()


def aggregator(seed: int = 2, v2g: bool = True) -> Instance:
    """The seed 002 instance (profit objective); `v2g=False` gives the same fleet without discharge."""
    rng = np.random.default_rng(seed)
    capacity = rng.choice([58.0, 64.0, 77.0, 82.0], size=N_EVS)
    initial = np.round(capacity * rng.uniform(0.45, 0.7, size=N_EVS), 2)
    target = np.round(capacity * rng.uniform(0.8, 0.9, size=N_EVS), 2)
    arrival = rng.integers(3, 7, size=N_EVS)  # 15:00-18:00
    departure = rng.integers(18, 22, size=N_EVS)  # 06:00-09:00
    price = day_ahead_price()
    return Instance(
        start=START,
        step_minutes=60,
        steps=STEPS,
        site=Site(import_limit_kw=120.0, export_limit_kw=100.0),
        tariff=Tariff(import_price=price, export_price=[round(p - 0.01, 4) for p in price]),
        chargers=[Charger(id=f"v2g{i + 1:02d}", max_kw=CHARGER_KW, bidirectional=True) for i in range(N_EVS)],
        evs=[
            EV(
                id=f"ev{i + 1:02d}",
                charger=f"v2g{i + 1:02d}",
                arrival=int(arrival[i]),
                departure=int(departure[i]),
                energy_kwh=round(float(target[i] - initial[i]), 2),
                max_kw=CHARGER_KW,
                capacity_kwh=float(capacity[i]),
                initial_kwh=float(initial[i]),
                min_kwh=round(float(0.3 * capacity[i]), 2),
                efficiency=0.95,
                v2g=v2g,
            )
            for i in range(N_EVS)
        ],
        objective=Objective(kind="profit", degradation_per_kwh=0.025),
    )
