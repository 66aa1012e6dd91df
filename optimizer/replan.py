"""Seed 003 under uncertainty, closed loop: re-plan the assignment MILP every step on what is known.

`optimizer.open_loop` runs one day-ahead plan against reality (the paper's uncertainty scenario).
The worker does better: it re-plans. `run_replanned(forecast, real)` re-solves at every step t the
instance of the rest of the day, built from the forecast for what is still unknown (future PV, load,
prices, EVs not yet arrived) and from reality for what is known by then (the BESS's state of charge,
every arrived EV's actual initial SOC — it is measured at plug-in — and what it has received since),
applies the first step of the plan to the realised step (each EV stops at its required SOC; the site
limit is kept by shaving charging), and moves on. Costs are at the real prices.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from optimizer.evaluate import make_schedule
from optimizer.model.data import FloatArray, build_data
from optimizer.problem import EV, Instance, Schedule, SolveStatus, Storage
from optimizer.solve import solve


@dataclass
class _State:
    energy: FloatArray  # (E,) battery energy now
    soc: FloatArray  # (S,) storage energy now


def _slice(values: object, t: int) -> object:
    return values[t:] if isinstance(values, list) else values


def rest_of_day(forecast: Instance, real: Instance, t: int, state: _State) -> Instance:
    """The instance from step t: forecasts for the future, reality for what is known at t."""
    evs: list[EV] = []
    for e, (fc, rl) in enumerate(zip(forecast.evs, real.evs, strict=True)):
        if rl.departure <= t:
            continue
        arrived = rl.arrival <= t
        src = rl if arrived else fc
        initial = float(state.energy[e]) if arrived else fc.initial_kwh
        required = rl.initial_kwh + rl.energy_kwh if arrived else fc.initial_kwh + fc.energy_kwh
        evs.append(
            src.model_copy(
                update={
                    "arrival": max(src.arrival - t, 0),
                    "departure": src.departure - t,
                    "initial_kwh": initial,
                    "energy_kwh": float(np.clip(required - initial, 0.0, src.capacity_kwh - initial)),
                }
            )
        )
    hours_left = sum(forecast.step_hours()[t:])
    storage: list[Storage] = []
    for s, st in enumerate(forecast.storage):
        soc = float(np.clip(state.soc[s], 0.0, st.capacity_kwh))
        final = st.initial_kwh if st.final_kwh is None else st.final_kwh
        # what the BESS can still reach (less a hair: a plan executed to the last kWh may end 1e-9 short)
        reachable = soc + st.max_charge_kw * st.efficiency * hours_left - 1e-6
        final = max(min(final, reachable), 0.0)
        storage.append(st.model_copy(update={"initial_kwh": soc, "final_kwh": final}))
    site = forecast.site.model_copy(
        update={
            k: _slice(getattr(forecast.site, k), t)
            for k in ("import_limit_kw", "export_limit_kw", "base_load_kw", "pv_kw")
        }
    )
    tariff = forecast.tariff.model_copy(
        update={
            k: _slice(getattr(forecast.tariff, k), t)
            for k in ("import_price", "export_price", "co2_g_per_kwh")
        }
    )
    return Instance.model_validate(
        {
            **forecast.model_dump(),
            "steps": forecast.steps - t,
            "site": site.model_dump(),
            "tariff": tariff.model_dump(),
            "evs": [e.model_dump() for e in evs],
            "storage": [s.model_dump() for s in storage],
        }
    )


def run_replanned(forecast: Instance, real: Instance, time_limit_s: float = 10.0) -> Schedule:
    """Re-plan at every step and apply the first step to the realisation; returns the realised schedule."""
    data = build_data(real)
    n_ev, steps = data.n_ev, data.steps
    ev_kw = np.zeros((n_ev, steps))
    st_kw = np.zeros((data.n_storage, steps))
    assign = np.full((n_ev, steps), -1, dtype=np.int64)
    state = _State(energy=data.initial_kwh.copy(), soc=data.st_initial_kwh.copy())
    index = {c: i for i, c in enumerate(data.charger_ids)}
    for t in range(steps):
        plan = solve(rest_of_day(forecast, real, t, state), time_limit_s=time_limit_s)
        dt = float(data.step_h[t])
        for e, ev_id in enumerate(data.ev_ids):
            if ev_id not in plan.ev_power_kw or not data.available[e, t]:
                continue
            left = data.initial_kwh[e] + data.need_kwh[e] - state.energy[e]
            kw = min(max(plan.ev_power_kw[ev_id][0], 0.0), max(left, 0.0) / (data.efficiency[e] * dt))
            ev_kw[e, t] = kw
            charger = plan.assignment[ev_id][0]
            assign[e, t] = -1 if charger is None else index[charger]
            state.energy[e] += kw * data.efficiency[e] * dt
        for s, sid in enumerate(data.storage_ids):
            eff = data.st_efficiency[s]
            want = plan.storage_power_kw[sid][0]
            up = min(max(want, 0.0), (data.st_capacity_kwh[s] - state.soc[s]) / (eff * dt))
            down = min(max(-want, 0.0), state.soc[s] * eff / dt)
            st_kw[s, t] = up - down
            state.soc[s] += (up * eff - down / eff) * dt
    return make_schedule(
        real,
        data,
        strategy="cost (re-planned every step)",
        status=SolveStatus.FEASIBLE,
        ev_kw=ev_kw,
        st_kw=st_kw,
        assign=assign,
    )
