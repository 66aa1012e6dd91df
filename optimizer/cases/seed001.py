"""Seed 000/001: an overnight fleet under site headroom and time-of-use prices (the 278-car fleet LP).

The paper's fleet: 278 cars in ten models (Latvian 2024 market shares, its table below), daily
driving energy from Gamma laws, 1 MW of aggregate charger power guaranteed, headroom h_t left by
household load, and a 24 h horizon minimising Σ_t price_t Σ_i P_it. We do not have its smart-meter
data or Nord Pool prices, so the household load and the tariff are synthetic (documented in
docs/optimizer.md); everything else follows the paper. `fleet(n)` scales the same fleet to any size.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np

from optimizer.problem import EV, Charger, Instance, Objective, Site, Tariff

# model, battery kWh, consumption kWh/km, cars in the 278-car fleet (seed 001's table)
FLEET_MODELS: tuple[tuple[str, float, float, int], ...] = (
    ("Tesla Model 3", 57.5, 0.139, 64),
    ("Tesla Model Y", 57.5, 0.164, 36),
    ("Nissan Leaf 40 kWh", 95.0, 0.165, 34),
    ("BMW i3", 37.9, 0.161, 28),
    ("Tesla Model S", 95.0, 0.165, 28),
    ("Hyundai Kona", 48.0, 0.164, 23),
    ("Nissan Leaf 62 kWh", 39.0, 0.166, 23),
    ("VW ID.3 Pro", 58.0, 0.166, 14),
    ("Audi e-tron 55", 86.5, 0.237, 14),
    ("VW ID.4 Pro", 77.0, 0.177, 14),
)
STEP_MINUTES = 15
STEPS = 96
START = datetime.fromisoformat("2025-03-04T12:00:00+02:00")
CHARGER_KW = 11.0
GUARANTEED_KW_PER_278 = 1000.0
GAMMA_SHAPE, GAMMA_SCALE_KM = 2.2, 22.0
"""Daily distance ~ Gamma(k, θ): mean 48 km, a commuter fleet."""


def tou_price(steps: int = STEPS) -> list[float]:
    """Three-band ToU price per kWh from 12:00: day 0.16, peak 0.24 (17-21 h), night 0.09 (23-07 h)."""
    hours = (12 + np.arange(steps) * STEP_MINUTES / 60.0) % 24
    price = np.full(steps, 0.16)
    price[(hours >= 17) & (hours < 21)] = 0.24
    price[(hours >= 23) | (hours < 7)] = 0.09
    return price.round(4).tolist()


def household_load_kw(n_cars: int, steps: int = STEPS) -> np.ndarray:
    """Synthetic aggregate household load sharing the transformer (evening peak ~19 h), scaled per car."""
    hours = (12 + np.arange(steps) * STEP_MINUTES / 60.0) % 24
    shape = (
        0.45 + 0.35 * np.exp(-(((hours - 19.0) % 24) ** 2) / 6.0) + 0.15 * np.exp(-((hours - 8.0) ** 2) / 3.0)
    )
    return shape * 2.2 * n_cars


def model_index(rng: np.random.Generator, n_cars: int) -> np.ndarray:
    """Index into FLEET_MODELS of every car (the paper's exact counts at 278 cars, else drawn by share)."""
    counts = np.array([m[3] for m in FLEET_MODELS], dtype=float)
    model_idx = rng.choice(len(FLEET_MODELS), size=n_cars, p=counts / counts.sum())
    if n_cars == 278:
        model_idx = np.repeat(np.arange(len(FLEET_MODELS)), counts.astype(int))
    return model_idx


def consumption_kwh_per_km(n_cars: int = 278, seed: int = 1) -> np.ndarray:
    """Consumption of every car of `fleet(n_cars, seed)` [kWh/km] (for need forecasts from the Gamma law)."""
    idx = model_index(np.random.default_rng(seed), n_cars)
    return np.array([FLEET_MODELS[i][2] for i in idx])


def fleet(n_cars: int = 278, seed: int = 1) -> Instance:
    """The seed 001 fleet scaled to `n_cars` (model mix kept): overnight sessions, headroom, ToU prices."""
    rng = np.random.default_rng(seed)
    model_idx = model_index(rng, n_cars)
    battery = np.array([FLEET_MODELS[i][1] for i in model_idx])
    per_km = np.array([FLEET_MODELS[i][2] for i in model_idx])
    km = rng.gamma(GAMMA_SHAPE, GAMMA_SCALE_KM, size=n_cars)
    # arrival 16:00-21:00, departure 06:00-09:00 next day, in steps from 12:00
    arrival = rng.integers(16, 37, size=n_cars)
    departure = rng.integers(72, 85, size=n_cars)
    need = np.minimum(km * per_km, 0.8 * battery)
    initial = np.clip(
        0.85 * battery - need - rng.uniform(0.0, 0.2, size=n_cars) * battery, 0.05 * battery, None
    )
    initial = np.minimum(initial, battery - need)
    transformer_kw = GUARANTEED_KW_PER_278 * n_cars / 278 + household_load_kw(n_cars).max()
    headroom = np.maximum(transformer_kw - household_load_kw(n_cars), GUARANTEED_KW_PER_278 * n_cars / 278)
    chargers = [Charger(id=f"cp{i:05d}", max_kw=CHARGER_KW) for i in range(n_cars)]
    evs = [
        EV(
            id=f"car{i:05d}",
            charger=f"cp{i:05d}",
            arrival=int(arrival[i]),
            departure=int(departure[i]),
            energy_kwh=round(float(need[i]), 3),
            max_kw=CHARGER_KW,
            capacity_kwh=float(battery[i]),
            initial_kwh=round(float(initial[i]), 3),
            efficiency=0.92,
        )
        for i in range(n_cars)
    ]
    return Instance(
        start=START,
        step_minutes=STEP_MINUTES,
        steps=STEPS,
        site=Site(import_limit_kw=headroom.round(3).tolist()),
        tariff=Tariff(import_price=tou_price(), co2_g_per_kwh=_co2_profile()),
        chargers=chargers,
        evs=evs,
        objective=Objective(kind="cost"),
    )


def _co2_profile(steps: int = STEPS) -> list[float]:
    hours = (12 + np.arange(steps) * STEP_MINUTES / 60.0) % 24
    return (110 + 60 * np.exp(-(((hours - 19.0) % 24) ** 2) / 8.0)).round(1).tolist()
