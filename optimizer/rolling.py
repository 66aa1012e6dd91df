"""Rolling-horizon evaluation under uncertainty: re-plan as the worker does, against perfect foresight.

For one `optimizer.uncertainty.Scenario` on a site whose EVs each have their own charger (seed 001):

- `rolling`: at every step t the cars plugged in (arrival ≤ t < true departure) are planned with what
  the operator knows — the estimated need minus what they already got, the estimated departure (once it
  has passed while the car is still there: t + 1) — over the rest of the horizon, as the worker's
  instance does (soft needs at 10 per kWh, prices + 10⁻⁶ per step so equal prices are used early, the
  site's `Robustness`); the first step of the plan is applied, capped by the battery's room; cars leave
  at their true departure. The plan is re-solved whenever what is known changes (a car arrives or leaves,
  a departure estimate passes); between such events the previous plan is still the optimum of the same
  problem and is followed (re-solving it would return the same plan), which keeps 1,000 runs fast.
- `perfect_foresight`: one cost LP with the true needs and departures (the best any plan could do).
- `uncontrolled`: full power from plug-in until the true need is met (seed 001's reference).

Costs are the EVs' energy costs Σ_t price_t Δt Σ_e p[e,t] (the site's base load and PV, if any, are
planned around but not counted); unmet energy per car is true need − delivered. `monte_carlo` runs all
four on many draws and `summarise` gives the share of the perfect-foresight saving each keeps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from optimizer.evaluate import TOL_KWH
from optimizer.model.data import FloatArray
from optimizer.problem import Instance, Robustness
from optimizer.solve import solve
from optimizer.uncertainty import Scenario, UncertaintyModel, draw_scenario

UNMET_PENALTY_PER_KWH = 10.0
"""As the worker's `SnapshotConfig.unmet_penalty_per_kwh`: far above any price, so needs come first."""
TIME_PREFERENCE_PER_STEP = 1e-6
"""As the worker's `SnapshotConfig.time_preference_per_step`."""


@dataclass(frozen=True)
class Outcome:
    """What a strategy achieved on one scenario."""

    cost: float
    delivered_kwh: FloatArray
    unmet_kwh: FloatArray
    solves: int = 0


def sub_instance(
    base: Instance,
    sc: Scenario,
    t: int,
    cars: np.ndarray,
    need: FloatArray,
    departure: np.ndarray,
    initial: FloatArray,
    delivered: FloatArray,
    robustness: Robustness,
    session_need: FloatArray | None = None,
    *,
    perfect: bool = False,
) -> Instance:
    """The instance of the cars `cars` from step t to the end (arrival relative to t, each on its charger)."""
    steps = base.steps - t
    session_need = need if session_need is None else session_need
    price = (
        np.asarray(base.tariff.import_price, dtype=float)[t:]
        if isinstance(base.tariff.import_price, list)
        else np.full(steps, float(base.tariff.import_price))
    )
    site = {
        k: (v[t:] if isinstance(v, list) else v)
        for k, v in base.site.model_dump().items()
    }
    evs = [
        {
            "id": f"e{e}",
            "charger": f"c{e}",
            "arrival": max(int(sc.arrival[e]) - t, 0),
            "departure": int(departure[i]) - t,
            "energy_kwh": float(need[i]),
            "max_kw": float(sc.max_kw[e]),
            "capacity_kwh": float(sc.capacity[e]),
            "initial_kwh": float(initial[i]),
            "efficiency": float(sc.efficiency[e]),
            "session_delivered_kwh": float(delivered[i]),
            "session_need_kwh": float(session_need[i]),
            "energy_estimated": not bool(sc.iso15118[e]),
        }
        for i, e in enumerate(cars.tolist())
    ]
    pref = 0.0 if perfect else TIME_PREFERENCE_PER_STEP
    return Instance.model_validate(
        {
            "start": base.start,
            "step_minutes": base.step_minutes,
            "steps": steps,
            "site": site,
            "tariff": {"import_price": (price + pref * np.arange(steps)).tolist()},
            "chargers": [{"id": f"c{e}", "max_kw": float(sc.max_kw[e])} for e in cars.tolist()],
            "evs": evs,
            "objective": {"kind": "cost", "unmet_penalty_per_kwh": UNMET_PENALTY_PER_KWH, "stickiness": 0.0},
            "robustness": robustness.model_dump(),
        }
    )


def _unmet(sc: Scenario, delivered: FloatArray) -> FloatArray:
    """True need minus delivered energy per car, below TOL_KWH (1 W-step rounding) counted as met."""
    out = np.maximum(sc.true_need - delivered, 0.0)
    out[out < TOL_KWH] = 0.0
    return out


def _prices(base: Instance) -> FloatArray:
    p = base.tariff.import_price
    return np.asarray(p, dtype=float) if isinstance(p, list) else np.full(base.steps, float(p))


def rolling(base: Instance, sc: Scenario, robustness: Robustness | None = None) -> Outcome:
    """Re-plan on what is known at each step; see the module docstring."""
    robust = robustness or Robustness()
    price, dt = _prices(base), base.dt_h
    delivered = np.zeros(sc.n)
    cost, solves = 0.0, 0
    plan: dict[int, list[float]] = {}
    plan_t, known = -1, None
    for t in range(base.steps):
        present = np.flatnonzero((sc.arrival <= t) & (t < sc.true_departure))
        est_dep = np.maximum(sc.est_departure[present], t + 1)
        state = (tuple(present.tolist()), tuple(est_dep.tolist()))
        if present.size and state != known:
            room = sc.capacity[present] - sc.initial[present] - delivered[present]
            need = np.clip(sc.est_need[present] - delivered[present], 0.0, np.maximum(room, 0.0))
            inst = sub_instance(
                base,
                sc,
                t,
                present,
                need,
                est_dep,
                sc.initial[present] + delivered[present],
                delivered[present],
                robust,
                sc.est_need[present],
            )
            sched = solve(inst, "cost")
            plan = {int(e): sched.ev_power_kw[f"e{e}"] for e in present.tolist()}
            plan_t, known, solves = t, state, solves + 1
        if not present.size:
            known = state
            continue
        kw = np.array([plan[int(e)][t - plan_t] for e in present.tolist()])
        room = sc.capacity[present] - sc.initial[present] - delivered[present]
        kw = np.clip(np.minimum(kw, room / (sc.efficiency[present] * dt)), 0.0, None)
        delivered[present] += kw * sc.efficiency[present] * dt
        cost += float(price[t] * dt * kw.sum())
    return Outcome(cost, delivered, _unmet(sc, delivered), solves)


def perfect_foresight(base: Instance, sc: Scenario) -> Outcome:
    """One cost LP with the true needs and departures."""
    return _with_the_truth(base, sc, "cost", solves=1)


def uncontrolled(base: Instance, sc: Scenario) -> Outcome:
    """Full power from plug-in until the true need is met or the car leaves (site headroom respected)."""
    return _with_the_truth(base, sc, "uncontrolled")


def _with_the_truth(base: Instance, sc: Scenario, strategy: str, **outcome: int) -> Outcome:
    """`strategy` run once on the true needs and departures of scenario `sc`."""
    cars = np.arange(sc.n)
    inst = sub_instance(base, sc, 0, cars, sc.true_need, sc.true_departure, sc.initial, np.zeros(sc.n),
                        Robustness(), perfect=True)
    sched = solve(inst, strategy)
    kw = np.array([sched.ev_power_kw[f"e{e}"] for e in cars])
    delivered = (kw * sc.efficiency[:, None]).sum(axis=1) * base.dt_h
    cost = float((_prices(base) * kw.sum(axis=0)).sum() * base.dt_h)
    return Outcome(cost, delivered, _unmet(sc, delivered), **outcome)


@dataclass(frozen=True)
class Summary:
    """One strategy over many runs."""

    cost: float
    kept_raw: float
    kept_adjusted: float
    unmet_per_car_kwh: float
    unmet_p95_kwh: float
    cars_unmet_share: float


def adjusted_cost(o: Outcome, sc: Scenario, high_price: float, low_price: float) -> float:
    """Cost with unmet energy bought at `high_price` and energy beyond the true need credited at
    `low_price` (it saves that much charging next time), both per kWh at the grid (÷ η)."""
    excess = np.maximum(o.delivered_kwh - sc.true_need, 0.0)
    return o.cost + float(high_price * (o.unmet_kwh / sc.efficiency).sum()) - float(
        low_price * (excess / sc.efficiency).sum()
    )


def summarise(rows: dict[str, list[tuple[float, float, FloatArray]]]) -> dict[str, Summary]:
    """rows[strategy] = [(cost, adjusted cost, unmet per car)] per run; needs `uncontrolled` and `perfect`.

    Saving kept = (C_unc − C)/(C_unc − C_pf) over the sums of all runs (raw and adjusted).
    """
    def total(name: str, i: int) -> float:
        return float(sum(r[i] for r in rows[name]))

    out = {}
    for name, rs in rows.items():
        unmet = np.concatenate([r[2] for r in rs])
        out[name] = Summary(
            cost=total(name, 0) / len(rs),
            kept_raw=(total("uncontrolled", 0) - total(name, 0))
            / (total("uncontrolled", 0) - total("perfect", 0)),
            kept_adjusted=(total("uncontrolled", 1) - total(name, 1))
            / (total("uncontrolled", 1) - total("perfect", 1)),
            unmet_per_car_kwh=float(unmet.mean()),
            unmet_p95_kwh=float(np.percentile(unmet, 95)),
            cars_unmet_share=float((unmet > 0.5).mean()),
        )
    return out


def monte_carlo(
    base: Instance,
    runs: int,
    rng: np.random.Generator,
    model: UncertaintyModel,
    robust: Robustness,
    kwh_per_km: FloatArray | None = None,
    progress: Callable[[int, dict[str, Summary]], None] | None = None,
) -> dict[str, Summary]:
    """`runs` draws; on each: uncontrolled, perfect foresight, rolling, rolling with `robust`."""
    price = _prices(base)
    rows: dict[str, list[tuple[float, float, FloatArray]]] = {
        "uncontrolled": [], "perfect": [], "rolling": [], "rolling_robust": []}
    for run in range(1, runs + 1):
        sc = draw_scenario(base, kwh_per_km, model, rng)
        outcomes = {"uncontrolled": uncontrolled(base, sc), "perfect": perfect_foresight(base, sc),
                    "rolling": rolling(base, sc), "rolling_robust": rolling(base, sc, robust)}
        for name, o in outcomes.items():
            rows[name].append((o.cost, adjusted_cost(o, sc, float(price.max()), float(price.min())),
                               o.unmet_kwh))
        if progress is not None and (run % 50 == 0 or run == runs):
            progress(run, summarise(rows))
    return summarise(rows)
