"""Seed 003's uncertainty scenario: a day-ahead plan made on forecasts, run against what really happens.

The paper plans once on day-ahead forecasts (PV, factory demand, prices, the EVs' initial SOC) and
measures the plan over 1,000 Monte Carlo realisations of those inputs. `realise(instance, model, rng)`
draws one realisation (the σ are ours: the paper does not give its error distributions, see
docs/optimizer.md); `execute(plan, real)` runs a plan on it: every EV draws at most the planned power
and stops at its required SOC (the EMS does not overcharge), the BESS follows its plan (clipped to its
real state of charge), PV is curtailed if it exceeds the load, and the site limit is kept by shaving
charging (`optimizer.evaluate.enforce_limits`). Costs are at the real prices. Reactive baselines
(FCFS) need no forecast: they simply run on the realisation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from optimizer.evaluate import make_schedule, schedule_arrays
from optimizer.model.data import FloatArray, build_data, per_step
from optimizer.problem import Instance, Schedule, Site, SolveStatus, Tariff


@dataclass(frozen=True)
class ForecastErrors:
    """σ of the day-ahead forecast errors: relative per hour; initial SOC as a share of capacity."""

    pv: float = 0.25
    load: float = 0.08
    price: float = 0.10
    initial_soc: float = 0.10


def _hourly_noise(rng: np.random.Generator, sigma: float, steps: int, per_h: int) -> FloatArray:
    return np.repeat(rng.normal(0.0, sigma, size=-(-steps // per_h)), per_h)[:steps]


def realise(inst: Instance, errors: ForecastErrors, rng: np.random.Generator) -> Instance:
    """One realisation of PV, factory load, prices and the EVs' initial SOC around the forecast `inst`."""
    steps = inst.steps
    per_h = max(1, round(60 / inst.step_minutes))
    pv = per_step(inst.site.pv_kw, steps) * np.clip(1 + _hourly_noise(rng, errors.pv, steps, per_h), 0, None)
    load = per_step(inst.site.base_load_kw, steps) * np.clip(
        1 + _hourly_noise(rng, errors.load, steps, per_h), 0, None
    )
    price = per_step(inst.tariff.import_price, steps) * np.clip(
        1 + _hourly_noise(rng, errors.price, steps, per_h), 0.05, None
    )
    evs = []
    for ev in inst.evs:
        required = ev.initial_kwh + ev.energy_kwh
        initial = float(
            np.clip(
                ev.initial_kwh + rng.normal(0.0, errors.initial_soc) * ev.capacity_kwh, 0.0, ev.capacity_kwh
            )
        )
        evs.append(ev.model_copy(update={"initial_kwh": initial, "energy_kwh": max(required - initial, 0.0)}))
    return inst.model_copy(
        update={
            "site": Site(
                import_limit_kw=inst.site.import_limit_kw,
                base_load_kw=load.round(3).tolist(),
                pv_kw=pv.round(3).tolist(),
            ),
            "tariff": Tariff(import_price=price.round(5).tolist(), co2_g_per_kwh=inst.tariff.co2_g_per_kwh),
            "evs": evs,
        }
    )


def execute(plan: Schedule, real: Instance) -> Schedule:
    """Run `plan` (made on the forecast) on the realisation `real`; metrics are the real outcome."""
    data = build_data(real)
    ev_plan, st_plan, assign = schedule_arrays(data, plan)
    ev_kw = np.zeros_like(ev_plan)
    remaining = data.need_kwh.copy()
    for t in range(data.steps):
        dt = float(data.step_h[t])
        kw = np.minimum(np.maximum(ev_plan[:, t], 0.0), remaining / (data.efficiency * dt))
        ev_kw[:, t] = kw
        remaining = np.maximum(remaining - kw * data.efficiency * dt, 0.0)
    st_kw = st_plan.copy()
    soc = data.st_initial_kwh.copy()
    for t in range(data.steps):  # the BESS follows its plan within its real state of charge
        dt = float(data.step_h[t])
        eff = data.st_efficiency
        up = np.minimum(np.maximum(st_kw[:, t], 0.0), (data.st_capacity_kwh - soc) / (eff * dt))
        down = np.minimum(np.maximum(-st_kw[:, t], 0.0), soc * eff / dt)
        st_kw[:, t] = up - down
        soc = soc + (up * eff - down / eff) * dt
    return make_schedule(
        real,
        data,
        strategy=f"{plan.strategy} (day-ahead plan)",
        status=SolveStatus.FEASIBLE,
        ev_kw=ev_kw,
        st_kw=st_kw,
        assign=assign,
    )
