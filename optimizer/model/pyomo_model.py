"""The readable reference formulation in Pyomo (all objective kinds, charger assignment MILP).

Staged like PyPSA: `build_model(data)` is a list of `add_*` calls (one per variable or
constraint family, the equation in each docstring), `solve_model` runs HiGHS, and
`assign_solution` reads the arrays back. Index sets are sparse (only (ev, t) pairs where
the EV is present, only (ev, charger, t) triples where an assignment is possible).

Symbols: p[e,t] charge power at the charger, d[e,t] V2G discharge power, E[e,t] battery energy
at the start of step t, η_e efficiency, Δt step hours, imp/exp grid import/export, curt PV
curtailment, b⁺/b⁻/B storage charge/discharge/energy, x[e,c,t] EV e on charger c in step t,
done[e,t] EV e's need met by the end of step t.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pyomo.environ as pyo
from pyomo.contrib.appsi.base import TerminationCondition
from pyomo.contrib.appsi.solvers import Highs

from optimizer.model.data import FloatArray, IntArray, ProblemData

TIME_PREFERENCE = 0.01
"""Weight of the earlier-charging tie-break relative to the peak tie-break."""
VERTEX_TIE_BREAK = 1e-4
"""Default tie-break weight for models solved to a vertex (simplex, MILP)."""
STORAGE_THROUGHPUT = 1e-5
"""Cost per kWh through a battery (charged + discharged), relative to the largest price. Without it,
charging and discharging in the same step to burn free surplus through the losses ties with curtailing
it, and a solver may report that step as a net charge the battery has no room for."""


def storage_throughput_cost(data: ProblemData) -> float:
    """Absolute cost per kWh of b⁺ and of b⁻: `STORAGE_THROUGHPUT` × the largest price."""
    return STORAGE_THROUGHPUT * data.price_scale


def tie_break_weight(data: ProblemData, default: float) -> float:
    """Absolute weight w of the tie-break terms: (instance's tie_break or `default`) × the largest price."""
    rel = default if data.tie_break is None else data.tie_break
    return rel * data.price_scale if rel else 0.0


def build_model(
    data: ProblemData, relax_assignment: bool = False, per_charger: bool = False
) -> pyo.ConcreteModel:
    """Create the model for `data` (kind cost, profit or service_time).

    `per_charger=True` uses one assignment binary per charger (seed 003's literal x[e,c,t]) instead of
    per charger class; same optimum, only for benchmarking the symmetry it removes.
    """
    m = pyo.ConcreteModel(name=f"evfleet_{data.kind}")
    add_sets(m, data)
    add_ev_variables(m, data)
    add_grid_variables(m, data)
    add_storage_variables(m, data)
    add_ev_energy_balance(m, data)
    add_energy_need(m, data)
    add_site_balance(m, data)
    add_storage_balance(m, data)
    add_peak(m, data)
    add_stickiness(m, data)
    if data.needs_assignment:
        add_charger_assignment(m, data, relax_assignment, per_charger)
    if data.kind == "service_time":
        add_service_time(m, data)
    add_objective(m, data)
    return m


def _pairs(mask: np.ndarray) -> list[tuple[int, ...]]:
    return [tuple(int(i) for i in idx) for idx in np.argwhere(mask)]


def add_sets(m: pyo.ConcreteModel, data: ProblemData) -> None:
    """Index sets: T steps, E EVs, S storages, P/D (ev, t) pairs where charging/discharging is possible."""
    m.T = pyo.RangeSet(0, data.steps - 1)
    m.T1 = pyo.RangeSet(0, data.steps)
    m.E = pyo.RangeSet(0, data.n_ev - 1) if data.n_ev else pyo.Set(initialize=[])
    m.S = pyo.RangeSet(0, data.n_storage - 1) if data.n_storage else pyo.Set(initialize=[])
    m.P = pyo.Set(dimen=2, initialize=_pairs(data.p_max_kw > 0))
    m.D = pyo.Set(dimen=2, initialize=_pairs(data.d_max_kw > 0))
    states = np.zeros((data.n_ev, data.steps + 1), dtype=bool)
    for e in range(data.n_ev):
        states[e, data.arrival[e] : data.departure[e] + 1] = True
    m.EK = pyo.Set(dimen=2, initialize=_pairs(states))


def add_ev_variables(m: pyo.ConcreteModel, data: ProblemData) -> None:
    """0 ≤ p[e,t] ≤ p_max[e,t]; 0 ≤ d[e,t] ≤ d_max[e,t]; E[e,t] battery energy; unmet[e] ≥ 0 (soft)."""
    m.p = pyo.Var(m.P, bounds=lambda _, e, t: (0.0, float(data.p_max_kw[e, t])))
    m.d = pyo.Var(m.D, bounds=lambda _, e, t: (0.0, float(data.d_max_kw[e, t])))
    has_v2g = data.d_max_kw.any(axis=1)
    lo = np.where(has_v2g, data.min_kwh, 0.0)
    m.energy = pyo.Var(m.EK, bounds=lambda _, e, t: (float(lo[e]), float(data.capacity_kwh[e])))
    if data.unmet_penalty_per_kwh is not None:
        m.unmet = pyo.Var(m.E, bounds=lambda _, e: (0.0, float(data.need_kwh[e])))


def add_grid_variables(m: pyo.ConcreteModel, data: ProblemData) -> None:
    """0 ≤ imp[t] ≤ import_limit[t]; 0 ≤ exp[t] ≤ export_limit[t]; 0 ≤ curt[t] ≤ pv[t]."""
    m.imp = pyo.Var(m.T, bounds=lambda _, t: (0.0, float(data.import_limit_kw[t])))
    m.exp = pyo.Var(m.T, bounds=lambda _, t: (0.0, float(data.export_limit_kw[t])))
    m.curt = pyo.Var(m.T, bounds=lambda _, t: (0.0, float(data.pv_kw[t])))


def add_storage_variables(m: pyo.ConcreteModel, data: ProblemData) -> None:
    """0 ≤ b⁺[s,t] ≤ max_charge; 0 ≤ b⁻[s,t] ≤ max_discharge; 0 ≤ B[s,t] ≤ capacity."""
    m.bch = pyo.Var(m.S, m.T, bounds=lambda _, s, t: (0.0, float(data.st_max_charge_kw[s])))
    m.bdis = pyo.Var(m.S, m.T, bounds=lambda _, s, t: (0.0, float(data.st_max_discharge_kw[s])))
    m.bsoc = pyo.Var(m.S, m.T1, bounds=lambda _, s, t: (0.0, float(data.st_capacity_kwh[s])))


def _p(m: pyo.ConcreteModel, e: int, t: int) -> pyo.Expression | float:
    return m.p[e, t] if (e, t) in m.P else 0.0


def _d(m: pyo.ConcreteModel, e: int, t: int) -> pyo.Expression | float:
    return m.d[e, t] if (e, t) in m.D else 0.0


def add_ev_energy_balance(m: pyo.ConcreteModel, data: ProblemData) -> None:
    """E[e,arrival] = initial_e;  E[e,t+1] = E[e,t] + (η_e p[e,t] − d[e,t]/η_e) Δt for t < departure."""
    eta, dt = data.efficiency, data.step_h

    def rule(m: pyo.ConcreteModel, e: int, t: int) -> pyo.Expression:
        if t == data.arrival[e]:
            return m.energy[e, t] == float(data.initial_kwh[e])
        return m.energy[e, t] == m.energy[e, t - 1] + (
            eta[e] * _p(m, e, t - 1) - _d(m, e, t - 1) / eta[e]
        ) * float(dt[t - 1])

    m.ev_energy_balance = pyo.Constraint(m.EK, rule=rule)


def add_energy_need(m: pyo.ConcreteModel, data: ProblemData) -> None:
    """E[e,departure] + unmet[e] ≥ initial_e + need_e  (unmet only when needs are soft)."""

    def rule(m: pyo.ConcreteModel, e: int) -> pyo.Expression:
        slack = m.unmet[e] if data.unmet_penalty_per_kwh is not None else 0.0
        return m.energy[e, int(data.departure[e])] + slack >= float(data.initial_kwh[e] + data.need_kwh[e])

    m.energy_need = pyo.Constraint(m.E, rule=rule)


def add_site_balance(m: pyo.ConcreteModel, data: ProblemData) -> None:
    """imp[t] − exp[t] = base[t] − pv[t] + curt[t] + Σ_e (p[e,t] − d[e,t]) + Σ_s (b⁺[s,t] − b⁻[s,t]).

    With the bounds on imp and exp this is the site limit (headroom) constraint.
    """
    p_at: dict[int, list[int]] = {}
    for e, t in m.P:
        p_at.setdefault(t, []).append(e)
    d_at: dict[int, list[int]] = {}
    for e, t in m.D:
        d_at.setdefault(t, []).append(e)

    def rule(m: pyo.ConcreteModel, t: int) -> pyo.Expression:
        ev = sum(m.p[e, t] for e in p_at.get(t, [])) - sum(m.d[e, t] for e in d_at.get(t, []))
        st = sum(m.bch[s, t] - m.bdis[s, t] for s in m.S)
        load = float(data.base_load_kw[t] - data.pv_kw[t])
        return m.imp[t] - m.exp[t] == load + m.curt[t] + ev + st

    m.site_balance = pyo.Constraint(m.T, rule=rule)


def add_storage_balance(m: pyo.ConcreteModel, data: ProblemData) -> None:
    """B[s,0] = initial_s;  B[s,t+1] = B[s,t] + (η_s b⁺[s,t] − b⁻[s,t]/η_s) Δt;  B[s,T] ≥ final_s."""
    eta, dt = data.st_efficiency, data.step_h

    def rule(m: pyo.ConcreteModel, s: int, t: int) -> pyo.Expression:
        if t == 0:
            return m.bsoc[s, 0] == float(data.st_initial_kwh[s])
        return m.bsoc[s, t] == m.bsoc[s, t - 1] + (
            eta[s] * m.bch[s, t - 1] - m.bdis[s, t - 1] / eta[s]
        ) * float(dt[t - 1])

    m.storage_balance = pyo.Constraint(m.S, m.T1, rule=rule)
    m.storage_final = pyo.Constraint(
        m.S, rule=lambda m, s: m.bsoc[s, data.steps] >= float(data.st_final_kwh[s])
    )


def add_peak(m: pyo.ConcreteModel, data: ProblemData) -> None:
    """peak ≥ imp[t] for every t (the demand-charge base; also a tie-break)."""
    m.peak = pyo.Var(bounds=(0.0, None))
    m.peak_def = pyo.Constraint(m.T, rule=lambda m, t: m.peak >= m.imp[t])


def _assignment_triples(data: ProblemData, per_charger: bool = False) -> list[tuple[int, int, int]]:
    """(e, k, t) for pool EV e present at t and charger class k with a free charger at t."""
    free = class_free_count(data, per_charger)
    pool = np.flatnonzero(data.pool)
    mask = data.available[pool][:, None, :] & (free > 0)[None, :, :]
    return [(int(pool[i]), int(k), int(t)) for i, k, t in np.argwhere(mask)]


def add_charger_assignment(
    m: pyo.ConcreteModel, data: ProblemData, relax: bool, per_charger: bool = False
) -> None:
    """Seed 003's charger assignment for EVs without a fixed charger, over charger classes.

    Chargers with the same (max_kw, bidirectional) form a class k with n_k(t) free chargers at step t
    (not taken by an EV fixed to them). y[e,k,t] = 1 if EV e uses a charger of class k in step t:
    Σ_e y[e,k,t] ≤ n_k(t) (one EV per charger and step);  Σ_k y[e,k,t] ≤ 1 (one charger per EV and step);
    p[e,t] ≤ Σ_k min(r_e, P_k) y[e,k,t];  d[e,t] ≤ Σ_{k bidirectional} min(r_e, P_k) y[e,k,t].
    This is exactly seed 003's x[e,c,t] model with the chargers of a class aggregated: it has no
    symmetric copies of a solution, so HiGHS proves optimality far faster (see docs/optimizer.md).
    `assign_solution` maps classes back to charger ids.
    """
    classes = charger_classes(data, per_charger)
    free = class_free_count(data, per_charger)
    m.per_charger = per_charger
    m.X = pyo.Set(dimen=3, initialize=_assignment_triples(data, per_charger))
    m.x = pyo.Var(m.X, within=pyo.UnitInterval if relax else pyo.Binary)
    by_kt: dict[tuple[int, int], list[int]] = {}
    by_et: dict[tuple[int, int], list[int]] = {}
    for e, k, t in m.X:
        by_kt.setdefault((k, t), []).append(e)
        by_et.setdefault((e, t), []).append(k)
    m.KT = pyo.Set(dimen=2, initialize=sorted(by_kt))
    m.ET = pyo.Set(dimen=2, initialize=sorted(by_et))
    class_kw = np.array([data.charger_max_kw[c[0]] for c in classes])
    class_bidir = np.array([data.charger_bidirectional[c[0]] for c in classes])
    cap = np.minimum(data.ev_max_kw[:, None], class_kw[None, :])
    m.charger_exclusivity = pyo.Constraint(
        m.KT, rule=lambda m, k, t: sum(m.x[e, k, t] for e in by_kt[k, t]) <= int(free[k, t])
    )
    m.ev_exclusivity = pyo.Constraint(m.ET, rule=lambda m, e, t: sum(m.x[e, k, t] for k in by_et[e, t]) <= 1)
    pool_p = [(e, t) for e, t in m.P if data.pool[e]]
    pool_d = [(e, t) for e, t in m.D if data.pool[e]]

    def p_rule(m: pyo.ConcreteModel, e: int, t: int) -> pyo.Expression:
        return m.p[e, t] <= sum(float(cap[e, k]) * m.x[e, k, t] for k in by_et.get((e, t), []))

    def d_rule(m: pyo.ConcreteModel, e: int, t: int) -> pyo.Expression:
        ks = [k for k in by_et.get((e, t), []) if class_bidir[k]]
        return m.d[e, t] <= sum(float(cap[e, k]) * m.x[e, k, t] for k in ks)

    m.assigned_power = pyo.Constraint(pyo.Set(dimen=2, initialize=pool_p), rule=p_rule)
    m.assigned_discharge = pyo.Constraint(pyo.Set(dimen=2, initialize=pool_d), rule=d_rule)


def charger_classes(data: ProblemData, per_charger: bool = False) -> list[list[int]]:
    """Chargers grouped by (max_kw, bidirectional), each class a list of charger indices."""
    if per_charger:
        return [[c] for c in range(len(data.charger_ids))]
    groups: dict[tuple[float, bool], list[int]] = {}
    for c, (kw, bidir) in enumerate(
        zip(data.charger_max_kw.tolist(), data.charger_bidirectional.tolist(), strict=True)
    ):
        groups.setdefault((kw, bidir), []).append(c)
    return list(groups.values())


def class_free_count(data: ProblemData, per_charger: bool = False) -> IntArray:
    """(K, T): chargers of each class not taken by a fixed EV at each step."""
    classes = charger_classes(data, per_charger)
    out = np.zeros((len(classes), data.steps), dtype=np.int64)
    for k, members in enumerate(classes):
        out[k] = data.charger_free[members].sum(axis=0)
    return out


def classes_to_chargers(data: ProblemData, cls: IntArray, per_charger: bool = False) -> IntArray:
    """Map (E,T) charger-class choices (-1 = none) to charger ids; EVs keep last step's charger if free."""
    classes = charger_classes(data, per_charger)
    assign = np.full(cls.shape, -1, dtype=np.int64)
    fixed = data.ev_charger >= 0
    assign[fixed] = np.where(data.available[fixed], data.ev_charger[fixed][:, None], -1)
    for t in range(data.steps):
        for k, members in enumerate(classes):
            evs = np.flatnonzero(cls[:, t] == k)
            if evs.size == 0:
                continue
            free = [c for c in members if data.charger_free[c, t]]
            prev = assign[evs, t - 1] if t > 0 else np.full(evs.size, -1)
            keep = [(e, c) for e, c in zip(evs.tolist(), prev.tolist(), strict=True) if c in free]
            for e, c in keep:
                assign[e, t] = c
                free.remove(c)
            for e in evs.tolist():
                if assign[e, t] < 0:
                    assign[e, t] = free.pop(0)
    return assign


def add_service_time(m: pyo.ConcreteModel, data: ProblemData) -> None:
    """Seed 004: done[e,t] binary, monotone, and only when the need is delivered by the end of step t.

    E[e,t+1] − initial_e ≥ need_e · done[e,t];  done[e,t] ≤ done[e,t+1];
    done[e,departure−1] = 1 if needs are hard.
    """
    pairs = _pairs(data.available & (data.need_kwh > 0)[:, None])
    m.DN = pyo.Set(dimen=2, initialize=pairs)
    m.done = pyo.Var(m.DN, within=pyo.Binary)
    m.done_energy = pyo.Constraint(
        m.DN,
        rule=lambda m, e, t: (
            m.energy[e, t + 1] - float(data.initial_kwh[e]) >= float(data.need_kwh[e]) * m.done[e, t]
        ),
    )
    m.done_monotone = pyo.Constraint(
        m.DN,
        rule=lambda m, e, t: m.done[e, t] <= m.done[e, t + 1] if (e, t + 1) in m.DN else pyo.Constraint.Skip,
    )
    if data.unmet_penalty_per_kwh is None:
        for e, t in pairs:
            if t == data.departure[e] - 1:
                m.done[e, t].fix(1)
    # tightening (valid for every solution): an EV cannot finish before full power would let it ...
    rate_kwh = data.p_max_kw * data.efficiency[:, None] * data.step_h
    cum_rate = np.cumsum(rate_kwh, axis=1)
    for e, t in pairs:
        if cum_rate[e, t] < data.need_kwh[e] - 1e-9:
            m.done[e, t].fix(0)
    # ... and the EVs done by step t cannot need more energy than the site could deliver by then
    site_kwh = np.cumsum(np.maximum(data.import_limit_kw - data.base_load_kw + data.pv_kw, 0.0) * data.step_h)
    eta_max = float(data.efficiency.max()) if data.n_ev else 1.0
    by_t: dict[int, list[int]] = {}
    for e, t in pairs:
        by_t.setdefault(t, []).append(e)
    m.done_site_capacity = pyo.Constraint(
        pyo.Set(initialize=sorted(by_t)),
        rule=lambda m, t: (
            sum(float(data.need_kwh[e]) * m.done[e, t] for e in by_t[t])
            <= float(site_kwh[t] * eta_max + (data.d_max_kw[:, : t + 1] * data.step_h[: t + 1]).sum())
        ),
    )


def cost_expression(m: pyo.ConcreteModel, data: ProblemData) -> pyo.Expression:
    """Σ_t Δt (λ_t imp[t] − μ_t exp[t]) + peak_price·peak + Σ_e penalty·priority_e·unmet[e] + wear·Σ d Δt."""
    dt = data.step_h
    expr = sum(
        float(dt[t]) * (float(data.import_price[t]) * m.imp[t] - float(data.export_price[t]) * m.exp[t])
        for t in m.T
    )
    expr += data.peak_price_per_kw * m.peak
    if data.unmet_penalty_per_kwh is not None:
        expr += sum(data.unmet_penalty_per_kwh * float(data.priority[e]) * m.unmet[e] for e in m.E)
    if data.degradation_per_kwh:
        expr += data.degradation_per_kwh * sum(float(dt[t]) * m.d[e, t] for e, t in m.D)
    return expr


def add_stickiness(m: pyo.ConcreteModel, data: ProblemData) -> None:
    """p[e,t] − dev⁺[e,t] + dev⁻[e,t] = ref[e,t] on R = {(e,t) ∈ P with a reference}."""
    ref = data.reference_kw
    pairs = [(e, t) for e, t in m.P if not np.isnan(ref[e, t])] if data.stickiness_weight > 0 else []
    m.R = pyo.Set(dimen=2, initialize=pairs)
    m.dev_up = pyo.Var(m.R, bounds=(0.0, None))
    m.dev_down = pyo.Var(m.R, bounds=(0.0, None))
    target = np.clip(np.nan_to_num(ref), 0.0, data.p_max_kw)
    m.stickiness = pyo.Constraint(
        m.R, rule=lambda m, e, t: m.p[e, t] - m.dev_up[e, t] + m.dev_down[e, t] == float(target[e, t]))


def stickiness_expression(m: pyo.ConcreteModel, data: ProblemData) -> pyo.Expression | float:
    """λ Δt Σ_R (dev⁺ + dev⁻), λ = stickiness × largest price."""
    if not len(m.R):
        return 0.0
    dt = data.step_h
    return data.stickiness_weight * sum(float(dt[t]) * (m.dev_up[e, t] + m.dev_down[e, t]) for e, t in m.R)


def tie_break_expression(m: pyo.ConcreteModel, data: ProblemData) -> pyo.Expression:
    """w·(Δt·peak + 0.01 Σ_{e,t} (t/T) p[e,t] Δt), w = tie_break × largest price: lower peak, then earlier."""
    w = tie_break_weight(data, VERTEX_TIE_BREAK)
    dt, steps = data.dt_h, data.steps
    return w * dt * (m.peak + TIME_PREFERENCE * sum((t / steps) * m.p[e, t] for e, t in m.P))


def add_objective(m: pyo.ConcreteModel, data: ProblemData) -> None:
    """cost/profit: min cost + tie-break + stickiness.

    service_time: min Σ (1 − done[e,t]) Δt + Σ_e penalty·priority_e·unmet[e] + 1e-6 × normalised cost,
    the penalty read in hours per kWh (an unmet kWh weighs like that many hours of service).
    """
    cost = cost_expression(m, data)
    if data.n_storage:
        wear = storage_throughput_cost(data)
        dt = data.step_h
        cost = cost + wear * sum(float(dt[t]) * (m.bch[s, t] + m.bdis[s, t]) for s in m.S for t in m.T)
    if tie_break_weight(data, VERTEX_TIE_BREAK) > 0:
        cost = cost + tie_break_expression(m, data)
    cost = cost + stickiness_expression(m, data)
    if data.kind == "service_time":
        # EV e finishing in step c (done from c on) is served for c + 1 steps after arrival
        served = float(np.count_nonzero(data.need_kwh > 0)) * data.dt_h
        m.service_h = pyo.Expression(expr=served + sum((1 - m.done[e, t]) * data.dt_h for e, t in m.DN))
        unmet = 0.0
        if data.unmet_penalty_per_kwh is not None:
            unmet = sum(data.unmet_penalty_per_kwh * float(data.priority[e]) * m.unmet[e] for e in m.E)
        scale = 1e-6 / max(data.price_scale * max(float(data.need_kwh.sum()), 1.0), 1e-9)
        m.obj = pyo.Objective(expr=m.service_h + unmet + scale * cost, sense=pyo.minimize)
    else:
        m.obj = pyo.Objective(expr=cost, sense=pyo.minimize)
    m.cost = pyo.Expression(expr=cost_expression(m, data))


@dataclass(frozen=True)
class SolveResult:
    """Outcome of a solve as values: termination, whether a solution was loaded, objective, gap, seconds."""

    termination: str
    has_solution: bool
    optimal: bool
    objective: float | None
    mip_gap: float | None
    seconds: float


def solve_model(
    m: pyo.ConcreteModel,
    time_limit_s: float | None = None,
    mip_rel_gap: float = 1e-4,
    mip_abs_gap: float | None = None,
) -> SolveResult:
    """Solve with HiGHS (appsi/highspy); never raises for infeasible or time-limited models."""
    t0 = time.perf_counter()
    opt = Highs()
    opt.config.load_solution = False
    opt.config.stream_solver = False
    if time_limit_s is not None:
        opt.config.time_limit = float(time_limit_s)
    opt.config.mip_gap = mip_rel_gap
    opt.highs_options = {"threads": 1, "random_seed": 0}
    if mip_abs_gap is not None:
        opt.highs_options["mip_abs_gap"] = mip_abs_gap
    res = opt.solve(m)
    tc = res.termination_condition
    has_solution = res.best_feasible_objective is not None
    if has_solution:
        res.solution_loader.load_vars()
    gap = None
    if has_solution and res.best_objective_bound is not None and res.best_feasible_objective is not None:
        denom = max(abs(res.best_feasible_objective), 1e-9)
        gap = abs(res.best_feasible_objective - res.best_objective_bound) / denom
    return SolveResult(
        termination=tc.name,
        has_solution=has_solution,
        optimal=tc == TerminationCondition.optimal,
        objective=res.best_feasible_objective,
        mip_gap=gap,
        seconds=time.perf_counter() - t0,
    )


def assign_solution(m: pyo.ConcreteModel, data: ProblemData) -> tuple[FloatArray, FloatArray, IntArray]:
    """(ev_kw (E,T) net of V2G, storage_kw (S,T), assignment (E,T) charger or -1) from a solved model."""
    ev_kw = np.zeros((data.n_ev, data.steps))
    for (e, t), v in m.p.extract_values().items():
        ev_kw[e, t] += v or 0.0
    for (e, t), v in m.d.extract_values().items():
        ev_kw[e, t] -= v or 0.0
    st_kw = np.zeros((data.n_storage, data.steps))
    for (s, t), v in m.bch.extract_values().items():
        st_kw[s, t] += v or 0.0
    for (s, t), v in m.bdis.extract_values().items():
        st_kw[s, t] -= v or 0.0
    cls = np.full((data.n_ev, data.steps), -1, dtype=np.int64)
    if hasattr(m, "x"):
        for (e, k, t), v in m.x.extract_values().items():
            if v is not None and v > 0.5:
                cls[e, t] = k
    return ev_kw, st_kw, classes_to_chargers(data, cls, bool(getattr(m, "per_charger", False)))
