"""Seed-003-shaped instances for many seeds: 20 EVs sharing 4 chargers of 11 kW, the optimizer assigning.

`shaped(seed)` keeps seed 003's structure (`optimizer.cases.seed003.company_fleet`: PHEVs and BEVs,
arrivals in the morning shifts, soft needs with priorities, factory load, winter PV, the BESS, a
300 kW contracted power) and draws, per seed, different arrivals, stays and needs (the fleet's own
random draw) and a different day: an hourly day-ahead price (the MIBEL shape scaled by 0.7–1.3 plus
hourly noise, constant within each hour as a day-ahead market price is), a PV peak of 40–160 kWp and
a factory load scaled by 0.8–1.1. This is what a new user would try: same site, another day.

The MILP benchmark (`benchmarks/assignment_milp.py`) draws its seeds from `evaluation_seeds`, a
fixed rule that excludes the seeds used while developing the formulation (`DEVELOPMENT_SEEDS`).
"""

from __future__ import annotations

import numpy as np

from optimizer.cases.seed003 import company_fleet, factory_load_kw, mibel_like_price, pv_kw
from optimizer.problem import Instance, Site, Tariff

DEVELOPMENT_SEEDS = tuple(range(0, 10))
"""Seeds the formulation was tuned on; never used for the reported figures."""


def evaluation_seeds(n: int = 20) -> list[int]:
    """The fixed rule for unseen instances: seeds 1000, 1037, 1074, ... (start 1000, stride 37)."""
    return [1000 + 37 * i for i in range(n)]


def hourly_price(rng: np.random.Generator) -> list[float]:
    """24 hourly day-ahead prices [EUR/kWh]: the MIBEL shape × U(0.7, 1.3) + N(0, 0.012) per hour."""
    base = np.asarray(mibel_like_price(24))
    price = base * rng.uniform(0.7, 1.3) + rng.normal(0.0, 0.012, size=24)
    return np.clip(price, 0.02, None).round(4).tolist()


def shaped(seed: int, step_minutes: int = 15) -> Instance:
    """A seed-003-shaped instance for `seed` (EVs from `company_fleet(seed=seed)`, a day drawn from seed)."""
    inst = company_fleet(step_minutes=step_minutes, seed=seed)
    rng = np.random.default_rng([seed, 3])
    steps = inst.steps
    per_h = steps // 24
    price = np.repeat(hourly_price(rng), per_h).tolist()
    pv = (np.asarray(pv_kw(steps)) * rng.uniform(40.0, 160.0) / 120.0).round(2).tolist()
    load = (np.asarray(factory_load_kw(steps)) * rng.uniform(0.8, 1.1)).round(2).tolist()
    assert isinstance(inst.site.import_limit_kw, float)
    return inst.model_copy(
        update={
            "site": Site(import_limit_kw=inst.site.import_limit_kw, base_load_kw=load, pv_kw=pv),
            "tariff": Tariff(import_price=price, co2_g_per_kwh=inst.tariff.co2_g_per_kwh),
        }
    )
