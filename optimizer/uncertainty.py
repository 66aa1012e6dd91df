"""What the operator does not know: departures and energy needs drawn from distributions (pure, numpy).

A `Scenario` is one Monte Carlo draw for a fleet: per car the true departure and need (what happens)
and the estimates the planner sees. The model (`UncertaintyModel`, defaults are ours, stated in
docs/optimizer.md):

- cars without ISO 15118 (share 1 − `iso15118_share`) tell the operator nothing: their need is seed
  001's Gamma law, truth = Gamma(k, θ) km × the car's kWh/km (capped at 80 % of the battery), estimate =
  the law's mean k·θ × kWh/km (the paper's closed-form next-day forecast); their departure estimate is
  the car's usual departure, truth = usual + N(0, `departure_sigma_min`) rounded to steps;
- ISO 15118 cars report departure and energy at plug-in (NotifyEVChargingNeeds), with forecast errors:
  the reported need is truth × (1 + N(0, `iso_energy_rel_sigma`)), the reported departure is truth +
  N(0, `iso_departure_sigma_min`) (the driver leaves earlier or later than they said).

Arrivals are known when they happen (the car plugs in), so they are not uncertain to the planner.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from optimizer.cases.seed001 import GAMMA_SCALE_KM, GAMMA_SHAPE, consumption_kwh_per_km
from optimizer.model.data import BoolArray, FloatArray, IntArray
from optimizer.problem import Instance


@dataclass(frozen=True)
class UncertaintyModel:
    """Distributions of the unknowns (see the module docstring)."""

    iso15118_share: float = 0.3
    departure_sigma_min: float = 45.0
    iso_departure_sigma_min: float = 20.0
    iso_energy_rel_sigma: float = 0.10
    gamma_shape: float = GAMMA_SHAPE
    gamma_scale_km: float = GAMMA_SCALE_KM
    max_need_share: float = 0.8


@dataclass(frozen=True)
class Scenario:
    """One draw: per-car arrays (truth and the planner's estimates) plus the site's series."""

    arrival: IntArray
    true_departure: IntArray
    est_departure: IntArray
    true_need: FloatArray
    est_need: FloatArray
    initial: FloatArray
    capacity: FloatArray
    max_kw: FloatArray
    efficiency: FloatArray
    iso15118: BoolArray

    @property
    def n(self) -> int:
        """Number of cars."""
        return len(self.arrival)


def draw_scenario(
    base: Instance, kwh_per_km: FloatArray | None, model: UncertaintyModel, rng: np.random.Generator
) -> Scenario:
    """One Monte Carlo draw for the fleet of `base` (each EV on its own charger; arrivals kept).

    With `kwh_per_km` (a seed 001 fleet) needs follow the Gamma law in km times the car's consumption;
    without it (any instance) each EV's `energy_kwh` is taken as the forecast (the law's mean) and the
    truth is forecast × Gamma(k, 1/k), the same law scaled to that mean.
    """
    evs = base.evs
    n, steps = len(evs), base.steps
    arrival = np.array([e.arrival for e in evs], dtype=np.int64)
    usual = np.array([e.departure for e in evs], dtype=np.int64)
    capacity = np.array([e.capacity_kwh for e in evs], dtype=float)
    iso = rng.random(n) < model.iso15118_share
    cap_need = model.max_need_share * capacity
    if kwh_per_km is not None:
        km = rng.gamma(model.gamma_shape, model.gamma_scale_km, size=n)
        true_need = np.minimum(km * kwh_per_km, cap_need)
        mean_need = np.minimum(model.gamma_shape * model.gamma_scale_km * kwh_per_km, cap_need)
    else:
        mean_need = np.array([e.energy_kwh for e in evs], dtype=float)
        ratio = rng.gamma(model.gamma_shape, 1.0 / model.gamma_shape, size=n)
        true_need = np.minimum(mean_need * ratio, cap_need)
    reported = true_need * np.clip(1.0 + rng.normal(0.0, model.iso_energy_rel_sigma, size=n), 0.0, None)
    est_need = np.where(iso, np.minimum(reported, cap_need), mean_need)
    step_min = base.step_minutes
    true_dep = usual + np.rint(rng.normal(0.0, model.departure_sigma_min, size=n) / step_min).astype(np.int64)
    true_dep = np.clip(true_dep, arrival + 1, steps)
    iso_dep = true_dep + np.rint(rng.normal(0.0, model.iso_departure_sigma_min, size=n) / step_min).astype(
        np.int64
    )
    est_dep = np.clip(np.where(iso, iso_dep, usual), arrival + 1, steps)
    # a battery with room for the larger of the true and the estimated need (and a 30 % margin on it)
    initial = np.array([e.initial_kwh for e in evs], dtype=float)
    initial = np.clip(np.minimum(initial, capacity - 1.3 * np.maximum(true_need, est_need)), 0.0, None)
    return Scenario(
        arrival=arrival,
        true_departure=true_dep,
        est_departure=est_dep,
        true_need=true_need,
        est_need=est_need,
        initial=initial,
        capacity=capacity,
        max_kw=np.array([e.max_kw for e in evs], dtype=float),
        efficiency=np.array([e.efficiency for e in evs], dtype=float),
        iso15118=iso,
    )


def seed001_consumption(base: Instance, seed: int = 1) -> FloatArray:
    """kWh/km of every car of a seed 001 fleet instance built by `fleet(len(base.evs), seed)`."""
    return consumption_kwh_per_km(len(base.evs), seed)
