"""Metrics and feasibility of a schedule, computed identically for every strategy.

`make_schedule` turns per-step power arrays into a `Schedule` (with metrics);
`check_schedule` lists every constraint a schedule violates (empty list = feasible).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from optimizer.model.data import FloatArray, IntArray, ProblemData, build_data
from optimizer.problem import Instance, Metrics, Schedule, SolveStatus

TOL_KW = 1e-5
TOL_KWH = 1e-4


@dataclass(frozen=True)
class GridFlows:
    """Site balance of a schedule, shape (T,) each."""

    net_kw: FloatArray
    import_kw: FloatArray
    export_kw: FloatArray
    curtailed_kw: FloatArray


def grid_flows(data: ProblemData, ev_kw: FloatArray, st_kw: FloatArray) -> GridFlows:
    """Grid import/export and PV curtailment implied by EV and storage power (PV curtailed before export)."""
    net = data.base_load_kw - data.pv_kw + ev_kw.sum(axis=0) + st_kw.sum(axis=0)
    surplus = np.maximum(-net, 0.0)
    curtailed = np.minimum(data.pv_kw, np.maximum(surplus - data.export_limit_kw, 0.0))
    export = surplus - curtailed
    return GridFlows(
        net_kw=net + curtailed, import_kw=np.maximum(net, 0.0), export_kw=export, curtailed_kw=curtailed
    )


def ev_energy_trajectory(data: ProblemData, ev_kw: FloatArray) -> FloatArray:
    """(E, T+1) battery energy: column t is the energy at the start of step t."""
    charge = np.maximum(ev_kw, 0.0) * data.efficiency[:, None]
    discharge = np.maximum(-ev_kw, 0.0) / data.efficiency[:, None]
    delta = (charge - discharge) * data.step_h
    out = np.empty((data.n_ev, data.steps + 1))
    out[:, 0] = 0.0
    np.cumsum(delta, axis=1, out=out[:, 1:])
    return out + data.initial_kwh[:, None]


def storage_trajectory(data: ProblemData, st_kw: FloatArray) -> FloatArray:
    """(S, T+1) storage energy: column t is the energy at the start of step t."""
    eff = data.st_efficiency[:, None]
    delta = (np.maximum(st_kw, 0.0) * eff - np.maximum(-st_kw, 0.0) / eff) * data.step_h
    out = np.empty((data.n_storage, data.steps + 1))
    out[:, 0] = 0.0
    np.cumsum(delta, axis=1, out=out[:, 1:])
    return out + data.st_initial_kwh[:, None]


def service_times_h(data: ProblemData, ev_kw: FloatArray, traj: FloatArray | None = None) -> FloatArray:
    """(E,): hours from arrival until the need is met (interpolated within the step; departure if never).

    `traj`: `ev_energy_trajectory(data, ev_kw)` when the caller has it already."""
    traj = ev_energy_trajectory(data, ev_kw) if traj is None else traj
    delivered = traj - data.initial_kwh[:, None]
    need = data.need_kwh
    begin = np.concatenate([[0.0], np.cumsum(data.step_h)])  # hours from start to the start of step t
    out = begin[data.departure] - begin[data.arrival]
    if data.n_ev == 0:
        return out
    reached = delivered[:, 1:] >= (need - TOL_KWH)[:, None]
    done = reached.any(axis=1)
    t = np.argmax(reached, axis=1)
    rows = np.arange(data.n_ev)
    before, after = delivered[rows, t], delivered[rows, t + 1]
    step = np.where(after > before, after - before, 1.0)
    frac = np.clip(np.where(after > before, (need - before) / step, 1.0), 0.0, 1.0)
    out = np.where(done, begin[t] + frac * data.step_h[t] - begin[data.arrival], out)
    return np.where(need <= TOL_KWH, 0.0, out)


def compute_metrics(
    data: ProblemData,
    ev_kw: FloatArray,
    st_kw: FloatArray,
    build_s: float = 0.0,
    solve_s: float = 0.0,
    flows: GridFlows | None = None,
) -> tuple[Metrics, FloatArray, FloatArray]:
    """Metrics of a schedule, plus per-EV final energy and unmet energy.

    `flows`: `grid_flows(data, ev_kw, st_kw)` when the caller has it already."""
    flows = grid_flows(data, ev_kw, st_kw) if flows is None else flows
    dt = data.step_h
    traj = ev_energy_trajectory(data, ev_kw)
    final = traj[np.arange(data.n_ev), data.departure] if data.n_ev else np.zeros(0)
    unmet = np.maximum(data.need_kwh - (final - data.initial_kwh), 0.0)
    unmet[unmet < TOL_KWH] = 0.0
    peak = float(flows.import_kw.max()) if data.steps else 0.0
    pv_total = float(data.pv_kw.sum())
    pv_exported = np.minimum(flows.export_kw, data.pv_kw - flows.curtailed_kw)
    pv_self = (
        None if pv_total <= 0 else float((data.pv_kw - flows.curtailed_kw - pv_exported).sum() / pv_total)
    )
    discharged = float((np.maximum(-ev_kw, 0.0) * dt).sum())
    energy_cost = float(
        ((data.import_price * flows.import_kw - data.export_price * flows.export_kw) * dt).sum()
    )
    penalty = (
        0.0
        if data.unmet_penalty_per_kwh is None
        else data.unmet_penalty_per_kwh * float(data.priority @ unmet)
    )
    metrics = Metrics(
        energy_cost=energy_cost,
        total_cost=energy_cost
        + data.peak_price_per_kw * peak
        + data.degradation_per_kwh * discharged
        + penalty,
        peak_grid_kw=peak,
        unmet_kwh=float(unmet.sum()),
        delivered_kwh=float((final - data.initial_kwh).sum()),
        pv_self_consumption=pv_self,
        co2_kg=float((flows.import_kw * data.co2_g_per_kwh * dt).sum() / 1000.0) if data.has_co2 else None,
        demand_charge=data.peak_price_per_kw * peak,
        v2g_discharged_kwh=discharged,
        degradation_cost=data.degradation_per_kwh * discharged,
        service_time_h=float(service_times_h(data, ev_kw, traj).sum()),
        soc_compliance=float((unmet <= TOL_KWH).mean()) if data.n_ev else None,
        build_seconds=build_s,
        solve_seconds=solve_s,
    )
    return metrics, final, unmet


def _toward_zero(kw: FloatArray) -> FloatArray:
    """Round to 1e-6 kW toward zero (never raises a magnitude), drop noise below 1e-7, no -0.0."""
    out: FloatArray = np.asarray(np.trunc(np.round(kw, 9) * 1e6) / 1e6 + 0.0, dtype=np.float64)
    out[np.abs(kw) < 1e-7] = 0.0
    return out


def enforce_limits(
    data: ProblemData, ev_kw: FloatArray, st_kw: FloatArray, assign: IntArray | None = None
) -> tuple[FloatArray, FloatArray]:
    """Make solver output exactly feasible: clip to bounds, round toward zero, shave import/export overshoot.

    Interior-point solutions may sit ~1e-7 outside a bound; a schedule that becomes charging limits
    must never exceed the site limit, so any remaining import above `import_limit_kw` at a step is
    taken off that step's EV and storage charging, proportionally; likewise export above
    `export_limit_kw` is taken off discharging.
    """
    ev, st, _ = _enforce_limits(data, ev_kw, st_kw, assign)
    return ev, st


def _enforce_limits(
    data: ProblemData, ev_kw: FloatArray, st_kw: FloatArray, assign: IntArray | None
) -> tuple[FloatArray, FloatArray, GridFlows]:
    """`enforce_limits`, plus the grid flows of its result (computed again only where it shaved)."""
    p_max, d_max = data.p_max_kw, data.d_max_kw
    if assign is not None and data.needs_assignment and len(data.charger_ids):
        # an EV the optimizer placed: its charger's limit at each step (0 without a charger)
        idx = np.where(assign >= 0, assign, 0)
        cap = np.where(assign >= 0, data.charger_max_kw[idx], 0.0)
        bidir = np.where(assign >= 0, data.charger_bidirectional[idx], False)
        pool = data.pool[:, None]
        p_max = np.where(pool, np.minimum(p_max, cap), p_max)
        d_max = np.where(pool, np.where(bidir, np.minimum(d_max, cap), 0.0), d_max)
    ev = np.clip(ev_kw, -d_max, p_max)
    st = np.clip(st_kw, -data.st_max_discharge_kw[:, None], data.st_max_charge_kw[:, None])
    ev, st = _toward_zero(ev), _toward_zero(st)
    flows = grid_flows(data, ev, st)
    over = flows.import_kw - data.import_limit_kw
    shaved = np.flatnonzero(over > 0)
    for t in shaved:
        charging = float(np.maximum(ev[:, t], 0).sum() + np.maximum(st[:, t], 0).sum())
        if charging <= 0:
            continue  # base load alone exceeds the limit: nothing the schedule can shed
        keep = max(0.0, 1.0 - (over[t] + 1e-6) / charging)
        ev[:, t] = np.where(ev[:, t] > 0, _toward_zero(ev[:, t] * keep), ev[:, t])
        st[:, t] = np.where(st[:, t] > 0, _toward_zero(st[:, t] * keep), st[:, t])
    if len(shaved):
        flows = grid_flows(data, ev, st)
    over_export = flows.export_kw - data.export_limit_kw
    shaved = np.flatnonzero(over_export > 0)
    for t in shaved:
        discharging = float(np.maximum(-ev[:, t], 0).sum() + np.maximum(-st[:, t], 0).sum())
        if discharging <= 0:
            continue  # PV surplus alone: curtailment already covers it
        keep = max(0.0, 1.0 - (over_export[t] + 1e-6) / discharging)
        ev[:, t] = np.where(ev[:, t] < 0, _toward_zero(ev[:, t] * keep), ev[:, t])
        st[:, t] = np.where(st[:, t] < 0, _toward_zero(st[:, t] * keep), st[:, t])
    if len(shaved):
        flows = grid_flows(data, ev, st)
    return ev, st, flows


def make_schedule(
    inst: Instance,
    data: ProblemData,
    *,
    strategy: str,
    status: SolveStatus,
    ev_kw: FloatArray,
    st_kw: FloatArray,
    assign: IntArray,
    objective_value: float | None = None,
    mip_gap: float | None = None,
    message: str = "",
    build_s: float = 0.0,
    solve_s: float = 0.0,
) -> Schedule:
    """Assemble a Schedule (exactly within limits, see `enforce_limits`) and compute its metrics."""
    ev_kw, st_kw, flows = _enforce_limits(data, ev_kw, st_kw, assign)
    metrics, final, unmet = compute_metrics(data, ev_kw, st_kw, build_s, solve_s, flows)
    names = np.array([*data.charger_ids, None], dtype=object)  # index -1 -> None
    assignment = dict(zip(data.ev_ids, names[assign].tolist(), strict=True))
    # built from arrays whose types are right by construction: skip re-validating ~E*T values
    return Schedule.model_construct(
        strategy=strategy,
        status=status,
        message=message,
        objective_kind=inst.objective.kind,
        objective_value=objective_value,
        mip_gap=mip_gap,
        start=inst.start,
        step_minutes=inst.step_minutes,
        steps=inst.steps,
        first_step_minutes=inst.first_step_minutes,
        ev_power_kw=dict(zip(data.ev_ids, ev_kw.tolist(), strict=True)),  # one tolist, not one per EV
        storage_power_kw=dict(zip(data.storage_ids, st_kw.tolist(), strict=True)),
        grid_kw=flows.net_kw.tolist(),
        assignment=assignment,
        ev_final_kwh=dict(zip(data.ev_ids, final.tolist(), strict=True)),
        ev_unmet_kwh=dict(zip(data.ev_ids, unmet.tolist(), strict=True)),
        metrics=metrics,
    )


def schedule_arrays(data: ProblemData, schedule: Schedule) -> tuple[FloatArray, FloatArray, IntArray]:
    """(ev_kw (E,T), storage_kw (S,T), assignment (E,T) charger index or -1) of a schedule."""
    ev_kw = np.array([schedule.ev_power_kw.get(e, [0.0] * data.steps) for e in data.ev_ids], dtype=float)
    st_kw = np.array(
        [schedule.storage_power_kw.get(s, [0.0] * data.steps) for s in data.storage_ids], dtype=float
    )
    index = {c: i for i, c in enumerate(data.charger_ids)}
    assign = np.array(
        [
            [-1 if c is None else index.get(c, -2) for c in schedule.assignment.get(e, [None] * data.steps)]
            for e in data.ev_ids
        ],
        dtype=np.int64,
    )
    return (
        ev_kw.reshape(data.n_ev, data.steps),
        st_kw.reshape(data.n_storage, data.steps),
        assign.reshape(data.n_ev, data.steps),
    )


def check_schedule(inst: Instance, schedule: Schedule, tol_kw: float = 1e-4) -> list[str]:
    """Every physical constraint the schedule violates (site limits, charger exclusivity, power, SOC)."""
    data = build_data(inst)
    ev_kw, st_kw, assign = schedule_arrays(data, schedule)
    out: list[str] = []
    flows = grid_flows(data, ev_kw, st_kw)
    for t in np.flatnonzero(flows.import_kw > data.import_limit_kw + tol_kw):
        out.append(f"step {t}: import {flows.import_kw[t]:.3f} kW > limit {data.import_limit_kw[t]:.3f} kW")
    for t in np.flatnonzero(flows.export_kw > data.export_limit_kw + tol_kw):
        out.append(f"step {t}: export {flows.export_kw[t]:.3f} kW > limit {data.export_limit_kw[t]:.3f} kW")
    for e, t in zip(*np.nonzero(ev_kw > data.p_max_kw + tol_kw), strict=True):
        out.append(f"ev {data.ev_ids[e]} step {t}: {ev_kw[e, t]:.3f} kW > max {data.p_max_kw[e, t]:.3f} kW")
    for e, t in zip(*np.nonzero(-ev_kw > data.d_max_kw + tol_kw), strict=True):
        out.append(
            f"ev {data.ev_ids[e]} step {t}: discharge {-ev_kw[e, t]:.3f} kW > {data.d_max_kw[e, t]:.3f} kW"
        )
    out += _check_assignment(data, ev_kw, assign, tol_kw)
    traj = ev_energy_trajectory(data, ev_kw)
    for e in range(data.n_ev):
        lo = data.min_kwh[e] if data.d_max_kw[e].any() else 0.0
        if traj[e].max() > data.capacity_kwh[e] + 1e-3 or traj[e].min() < lo - 1e-3:
            out.append(f"ev {data.ev_ids[e]}: energy leaves [{lo:g}, {data.capacity_kwh[e]:g}] kWh")
    st_traj = storage_trajectory(data, st_kw)
    for s in range(data.n_storage):
        if st_traj[s].max() > data.st_capacity_kwh[s] + 1e-3 or st_traj[s].min() < -1e-3:
            out.append(f"storage {data.storage_ids[s]}: energy leaves [0, {data.st_capacity_kwh[s]:g}] kWh")
        if st_traj[s, -1] < data.st_final_kwh[s] - 1e-3:
            out.append(
                f"storage {data.storage_ids[s]}: ends at {st_traj[s, -1]:.3f} kWh, below final_kwh "
                f"{data.st_final_kwh[s]:g}"
            )
        if (st_kw[s] > data.st_max_charge_kw[s] + tol_kw).any() or (
            -st_kw[s] > data.st_max_discharge_kw[s] + tol_kw
        ).any():
            out.append(f"storage {data.storage_ids[s]}: power beyond its charge/discharge limits")
    return out


def _check_assignment(data: ProblemData, ev_kw: FloatArray, assign: IntArray, tol_kw: float) -> list[str]:
    out: list[str] = []
    active = np.abs(ev_kw) > tol_kw
    if (assign == -2).any():
        out.append("assignment names an unknown charger")
    fixed = data.ev_charger >= 0
    bad_fixed = fixed[:, None] & active & (assign != data.ev_charger[:, None])
    for e, t in zip(*np.nonzero(bad_fixed), strict=True):
        out.append(f"ev {data.ev_ids[e]} step {t}: charges away from its charger")
    for e, t in zip(*np.nonzero(active & (assign < 0)), strict=True):
        out.append(f"ev {data.ev_ids[e]} step {t}: charges without a charger")
    n_ch = len(data.charger_ids)
    for t in range(data.steps):
        used = assign[:, t][assign[:, t] >= 0]
        counts = np.bincount(used, minlength=n_ch)
        for c in np.flatnonzero(counts > 1):
            out.append(f"step {t}: charger {data.charger_ids[c]} used by {counts[c]} EVs")
        for e in np.flatnonzero(active[:, t] & (assign[:, t] >= 0)):
            c = assign[e, t]
            if abs(ev_kw[e, t]) > data.charger_max_kw[c] + tol_kw:
                out.append(
                    f"ev {data.ev_ids[e]} step {t}: {ev_kw[e, t]:.3f} kW beyond charger {data.charger_ids[c]}"
                )
            if ev_kw[e, t] < 0 and not data.charger_bidirectional[c]:
                out.append(f"ev {data.ev_ids[e]} step {t}: discharges on a unidirectional charger")
    return out
