"""Seed 003: a company fleet of 20 EVs sharing 4 chargers (11 kW) with PV, factory load and a BESS.

From the paper: 20 vehicles (EVs and PHEVs) with their own capacity, initial and required SOC and
maximum rate; four 11 kW chargers; a 193.5 kWh / 100 kW BESS that may charge from PV and grid;
day-ahead hourly prices, PV forecast and factory demand over 24 h; unmet-SOC penalties weighted
by priority; a contracted (grid) power limit. The paper's data (Portuguese factory, MIBEL prices,
Quartz PV forecast) is not published, so the profiles here are synthetic with the same shape
(docs/optimizer.md says how our figures compare). The paper's low-charge-rate and overcharge
penalties are not modelled; its binary unmet-SOC flag is our per-kWh unmet penalty.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np

from optimizer.problem import EV, Charger, Instance, Objective, Site, Storage, Tariff

START = datetime.fromisoformat("2025-02-04T00:00:00+00:00")
N_EVS, N_CHARGERS, CHARGER_KW = 20, 4, 11.0


def _hours(steps: int) -> np.ndarray:
    return np.arange(steps) * 24.0 / steps


def mibel_like_price(steps: int = 24) -> list[float]:
    """A winter MIBEL-shaped day-ahead price incl. network access [EUR/kWh]: solar dip, evening peak."""
    h = _hours(steps) + 12.0 / steps
    base = 0.11 + 0.05 * np.exp(-((h - 8.5) ** 2) / 3.0) + 0.09 * np.exp(-((h - 20.0) ** 2) / 4.0)
    base -= 0.035 * np.exp(-((h - 14.0) ** 2) / 5.0)
    base[(h < 6.0)] -= 0.03
    return base.round(4).tolist()


def factory_load_kw(steps: int = 24) -> list[float]:
    """Factory demand [kW]: ~60 kW at night, ~190 kW in the two shifts (06-22 h)."""
    h = _hours(steps) + 12.0 / steps
    load = np.where((h >= 6) & (h < 22), 185.0, 60.0) + 15.0 * np.sin(h / 24.0 * 2 * np.pi)
    return load.round(2).tolist()


def pv_kw(steps: int = 24, peak_kw: float = 120.0) -> list[float]:
    """Winter PV generation [kW] (sunrise ~7:30, sunset ~17:30)."""
    h = _hours(steps) + 12.0 / steps
    return (peak_kw * np.clip(np.sin((h - 7.5) / 10.0 * np.pi), 0.0, None)).round(2).tolist()


def co2_g_per_kwh(steps: int = 24) -> list[float]:
    """Grid CO2 intensity [g/kWh]: gas-heavy evening, solar-heavy midday."""
    h = _hours(steps) + 12.0 / steps
    return (
        (210 + 90 * np.exp(-((h - 20.0) ** 2) / 6.0) - 80 * np.exp(-((h - 13.5) ** 2) / 6.0))
        .round(1)
        .tolist()
    )


@dataclass(frozen=True)
class FleetDraw:
    """The seed 003 fleet's random draw (one value per car), shared by the optimizer case and the
    simulator's scenario (`evse_sim.scenarios.generators.seed003_depot`), so both describe the same cars."""

    capacity_kwh: np.ndarray
    max_kw: np.ndarray
    soc0: np.ndarray
    soc_req: np.ndarray
    arrival_h: np.ndarray
    departure_h: np.ndarray
    priority: np.ndarray


def draw_fleet(seed: int = 3, n: int = N_EVS) -> FleetDraw:
    """The draw of `n` PHEVs and BEVs: capacities, rates, SoCs, morning-shift arrivals, stays, priorities."""
    rng = np.random.default_rng(seed)
    capacity = rng.choice([12.0, 17.0, 40.0, 52.0, 58.0, 64.0, 77.0], size=n)  # PHEVs and BEVs
    max_kw = np.where(capacity < 20.0, 3.7, rng.choice([7.4, 11.0], size=n))
    soc0 = rng.uniform(0.10, 0.50, size=n)
    soc_req = rng.uniform(0.60, 0.90, size=n)
    arrival_h = rng.choice([0, 6, 7, 8, 9, 13], size=n, p=[0.15, 0.2, 0.25, 0.2, 0.1, 0.1])
    stay_h = rng.integers(5, 11, size=n)
    priority = rng.choice([1.0, 2.0, 3.0], size=n, p=[0.5, 0.3, 0.2])
    return FleetDraw(capacity_kwh=capacity, max_kw=max_kw, soc0=soc0, soc_req=soc_req, arrival_h=arrival_h,
                     departure_h=np.minimum(arrival_h + stay_h, 24), priority=priority)


def company_fleet(step_minutes: int = 60, seed: int = 3, unmet_penalty_per_kwh: float = 0.5) -> Instance:
    """The seed 003 instance: 20 EVs, 4 chargers, PV, factory load, BESS, soft needs with priorities."""
    steps = 24 * 60 // step_minutes
    per_h = 60 // step_minutes
    d = draw_fleet(seed)
    capacity, max_kw, soc0, soc_req = d.capacity_kwh, d.max_kw, d.soc0, d.soc_req
    arrival_h, departure_h, priority = d.arrival_h, d.departure_h, d.priority
    evs = [
        EV(
            id=f"ev{i + 1:02d}",
            charger=None,
            arrival=int(arrival_h[i] * per_h),
            departure=int(departure_h[i] * per_h),
            energy_kwh=round(float((soc_req[i] - soc0[i]) * capacity[i]), 2),
            max_kw=float(max_kw[i]),
            capacity_kwh=float(capacity[i]),
            initial_kwh=round(float(soc0[i] * capacity[i]), 2),
            priority=float(priority[i]),
        )
        for i in range(N_EVS)
    ]
    return Instance(
        start=START,
        step_minutes=step_minutes,
        steps=steps,
        site=Site(import_limit_kw=300.0, base_load_kw=factory_load_kw(steps), pv_kw=pv_kw(steps)),
        tariff=Tariff(import_price=mibel_like_price(steps), co2_g_per_kwh=co2_g_per_kwh(steps)),
        chargers=[Charger(id=f"cp{c + 1}", max_kw=CHARGER_KW) for c in range(N_CHARGERS)],
        evs=evs,
        storage=[
            Storage(
                id="bess",
                capacity_kwh=193.5,
                initial_kwh=96.75,
                max_charge_kw=100.0,
                max_discharge_kw=100.0,
                efficiency=0.95,
            )
        ],
        objective=Objective(kind="cost", unmet_penalty_per_kwh=unmet_penalty_per_kwh),
    )
