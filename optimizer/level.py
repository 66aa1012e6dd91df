"""Level the site's peak after the EV minimum power: a flat plan for the same cost and energies (pure).

The cost LP breaks ties by the lowest peak (`optimizer.model.ties`), but it does not know an ISO 15118 EV's
minimum power: `optimizer.min_power` then puts such an EV into whole blocks at or above its minimum
(4.1 kW at 6 A on three phases), and stickiness carries those blocks into every later re-plan (the
previous plan is the next one's reference). The sum of the blocks is not flat: in the demo's seed 1 with
every car's true need known, the plans kept steps of 35.7 and 40.0 kW side by side all night, a peak of
1.056x the lowest peak of the same cars at the same cost, with nothing left to estimate.

`level_peak` re-spreads the plan by a small LP over the same cells: each EV keeps its planned energy in the
horizon, an EV with a minimum keeps its charging steps (at or above its minimum, up to its maximum) and
its pauses (0), every other EV may move within its stay, and the plan may not cost more. Among those it
takes the lowest peak (site load: fixed load + EVs), then the plan closest to the input (L1 in kWh, at
a weight far below the peak's), so it moves energy only to lower the peak. Continuous EVs and the
headroom between an EV's minimum and its maximum absorb the blocks' edges.

Site limit: every step's EV power is a row Σ_e p[e,t] ≤ limit[t] − fixed[t] of the LP, each cell stays
within the EV's and the charger's maximum, and the result is checked again (limit, minimum power,
energies) before it replaces the input; any failure returns the input unchanged.

LP over p[e,t] (kW), d⁺, d⁻ ≥ 0, peak:  Σ_t p[e,t] h_t = energy_e;  Σ_e p[e,t] ≤ limit_t − fixed_t;
Σ_e p[e,t] − peak ≤ −fixed_t;  Σ price_t h_t p[e,t] ≤ cost;  p − d⁺ + d⁻ = p⁰;
minimise peak + MOVE_WEIGHT · Σ h_t (d⁺ + d⁻).
"""

from __future__ import annotations

from collections.abc import Mapping

import highspy
import numpy as np

import optimizer.model  # noqa: F401  (the first Highs is created quietly there)
from optimizer.problem import Instance, Schedule

MAX_CELLS = 20_000
"""EVs x steps up to which a plan is levelled (about 200 EVs on 96 steps: 0.09 s CPU here; 1,000 took 1 s,
twice the issue's budget for a whole re-plan of 1,000 sessions)."""
MOVE_WEIGHT = 1e-3
"""Cost of moving 1 kWh away from the input plan, per kW of peak: moving a plan's whole night to cut
the peak by 1 kW costs far less than that kW (the peak always wins), and nothing moves for nothing."""
TOLERANCE_KW = 1e-6
MAX_MOVES = 500
"""Whole-step moves of EVs with a minimum (`_shift_blocks`) at most per plan."""
SOON_STEPS = 8
"""Steps ahead (2 h of 15 min) whose highest load a levelled plan must lower to replace the input. A lump
further ahead is levelled once it comes this close: every arrival of the evening re-levelled the whole
night before (350 EVSE moves over the demo's day against 56, for a night peak only 0.01x lower), and the
night is re-planned anyway before it comes."""
MIN_GAIN_KW = 0.2
"""A levelled plan that does not lower the next SOON_STEPS' highest load by at least this much is not worth
its moves (the input is kept: each move is a TxProfile, and an ISO 15118 renegotiation)."""


def _per_step(value: float | list[float], steps: int) -> np.ndarray:
    return np.array(value, dtype=float) if isinstance(value, list) else np.full(steps, float(value))


def level_peak(instance: Instance, schedule: Schedule, min_kw: Mapping[str, float]) -> Schedule:
    """`schedule` re-spread to the lowest site peak at the same energies and cost (module doc).

    The levelled plan replaces the input only when it lowers the highest load of the next SOON_STEPS by at
    least MIN_GAIN_KW and raises no step above the input's peak, so a re-plan that stays on a flat standing
    plan moves nothing (K16).

    Only a plan with at least one EV in `min_kw` charging is levelled (the cost LP's own peak term levels
    the others); plans with storage, V2G or above MAX_CELLS cells are returned unchanged.
    """
    ids = [ev.id for ev in instance.evs if ev.id in schedule.ev_power_kw]
    if (schedule.storage_power_kw or not ids
            or not any(min_kw.get(i, 0.0) > 0 and max(schedule.ev_power_kw[i], default=0.0) > TOLERANCE_KW
                       for i in ids)
            or any(p < -TOLERANCE_KW for i in ids for p in schedule.ev_power_kw[i])):
        return schedule
    steps = instance.steps
    if len(ids) * steps > MAX_CELLS:
        return schedule
    hours = np.array(instance.step_hours())
    fixed = _per_step(instance.site.base_load_kw, steps) - _per_step(instance.site.pv_kw, steps)
    limit = _per_step(instance.site.import_limit_kw, steps)
    price = _per_step(instance.tariff.import_price, steps)
    p0 = np.array([schedule.ev_power_kw[i][:steps] for i in ids], dtype=float)
    blocks = _shift_blocks(instance, ids, p0, min_kw, fixed, limit, price, hours)
    lo, hi = _bounds(instance, ids, blocks, min_kw)
    free = hi > TOLERANCE_KW
    out = _solve(blocks, lo, hi, free, hours, fixed, limit, price)
    if out is None or not _acceptable(out, p0, lo, hi, hours, fixed, limit, price):
        return schedule
    power = dict(schedule.ev_power_kw)
    for i, row in zip(ids, out.tolist(), strict=True):
        power[i] = row + list(schedule.ev_power_kw[i][steps:])
    note = "site peak levelled at the same cost"
    message = f"{schedule.message}; {note}" if schedule.message else note
    return schedule.model_copy(update={"ev_power_kw": power, "message": message})


def _bounds(instance: Instance, ids: list[str], p0: np.ndarray, min_kw: Mapping[str, float]
            ) -> tuple[np.ndarray, np.ndarray]:
    """(lower, upper) power per cell: an EV with a minimum keeps its on/off pattern, others their stay."""
    evs = {ev.id: ev for ev in instance.evs}
    charger_max = {c.id: c.max_kw for c in instance.chargers}
    lo, hi = np.zeros_like(p0), np.zeros_like(p0)
    for e, ev_id in enumerate(ids):
        ev = evs[ev_id]
        top = min(ev.max_kw, charger_max.get(ev.charger or "", ev.max_kw))
        stay = np.zeros(p0.shape[1], dtype=bool)
        stay[ev.arrival:max(ev.arrival, min(ev.departure, p0.shape[1]))] = True
        floor = min_kw.get(ev_id, 0.0)
        if floor > 0:
            on = p0[e] > TOLERANCE_KW
            lo[e] = np.where(on, np.minimum(floor, p0[e]), 0.0)
            hi[e] = np.where(on, np.maximum(top, p0[e]), 0.0)
        else:
            hi[e] = np.where(stay | (p0[e] > TOLERANCE_KW), np.maximum(top, p0[e]), 0.0)
    return lo, hi


def _shift_blocks(instance: Instance, ids: list[str], p0: np.ndarray, min_kw: Mapping[str, float],
                  fixed: np.ndarray, limit: np.ndarray, price: np.ndarray, hours: np.ndarray) -> np.ndarray:
    """`p0` with whole charging steps of EVs with a minimum moved from the highest site steps to lower
    ones (the LP keeps an EV's on/off pattern; this changes it).

    A move takes an EV's power p in step a (the highest site load it can lower) to a step b of its stay
    where it does not charge, no dearer and as long, with load_b + p ≤ load_a − MIN_GAIN_KW and within the
    site limit, into the least loaded such step: the sorted site loads fall lexicographically at every
    move, so it ends (at most MAX_MOVES)."""
    evs = {ev.id: ev for ev in instance.evs}
    blocky = np.array([e for e, i in enumerate(ids) if min_kw.get(i, 0.0) > 0], dtype=int)
    plan = p0.copy()
    if not len(blocky):
        return plan
    steps = plan.shape[1]
    load = plan.sum(axis=0) + fixed
    t = np.arange(steps)
    stay = np.array([(t >= evs[ids[e]].arrival) & (t < evs[ids[e]].departure) for e in blocky])
    for _ in range(MAX_MOVES):
        for a in np.argsort(-load, kind="stable").tolist():
            p = plan[blocky, a][:, None]  # (B, 1): each EV's power in step a
            after = load[None, :] + p
            ok = (stay & (plan[blocky] <= TOLERANCE_KW) & (p > TOLERANCE_KW)
                  & (price <= price[a] + 1e-12)[None, :] & (hours == hours[a])[None, :]
                  & (after <= load[a] - MIN_GAIN_KW) & (after <= limit[None, :] + 1e-9))
            if ok.any():
                k, b = np.unravel_index(int(np.argmin(np.where(ok, load[None, :], np.inf))), ok.shape)
                e = int(blocky[k])
                moved = plan[e, a]
                plan[e, b], plan[e, a] = moved, 0.0
                load[a] -= moved
                load[b] += moved
                break
        else:
            break
    return plan


def _solve(p0: np.ndarray, lo: np.ndarray, hi: np.ndarray, free: np.ndarray, hours: np.ndarray,
           fixed: np.ndarray, limit: np.ndarray, price: np.ndarray) -> np.ndarray | None:
    """The levelling LP (module doc) over the `free` cells; the new plan or None when HiGHS fails."""
    inf = highspy.kHighsInf
    n_ev, steps = p0.shape
    se, st = np.nonzero(free)
    n = len(se)
    h = hours[st]
    # columns: p, d+, d- (n each), peak; rows: energy (n_ev), site, peak (steps each), cost, move (n)
    peak = 3 * n
    energy = (p0 * hours[None, :]).sum(axis=1)
    cost = float((p0.sum(axis=0) * hours * price).sum())
    r_energy, r_site, r_peak, r_cost, r_move = 0, n_ev, n_ev + steps, n_ev + 2 * steps, n_ev + 2 * steps + 1
    idx = np.arange(n)
    rows = np.concatenate([r_energy + se, r_site + st, r_peak + st, np.full(n, r_cost), r_move + idx,
                           r_move + idx, r_move + idx, r_peak + np.arange(steps)])
    cols = np.concatenate([idx, idx, idx, idx, idx, n + idx, 2 * n + idx, np.full(steps, peak)])
    vals = np.concatenate([h, np.ones(n), np.ones(n), price[st] * h, np.ones(n), -np.ones(n), np.ones(n),
                           -np.ones(steps)])
    room = np.maximum(limit - fixed, 0.0)
    row_lo = np.concatenate([energy, np.full(steps, -inf), np.full(steps, -inf), [-inf], p0[se, st]])
    row_hi = np.concatenate([energy, np.maximum(room, p0.sum(axis=0)), -fixed,
                             [cost + 1e-7 * max(1.0, abs(cost))], p0[se, st]])
    n_row = r_move + n
    order = np.lexsort((cols, rows))
    start = np.zeros(n_row + 1, dtype=np.int32)
    np.cumsum(np.bincount(rows, minlength=n_row), out=start[1:])
    obj = np.concatenate([np.zeros(n), MOVE_WEIGHT * h, MOVE_WEIGHT * h, [1.0]])
    col_lo = np.concatenate([lo[se, st], np.zeros(2 * n), [-inf]])
    col_hi = np.concatenate([hi[se, st], np.full(2 * n, inf), [inf]])
    highs = highspy.Highs()
    highs.setOptionValue("output_flag", False)
    highs.setOptionValue("threads", 1)
    highs.passModel(3 * n + 1, n_row, len(vals), 2, 1, 0.0, obj, col_lo, col_hi, row_lo, row_hi, start,
                    cols[order].astype(np.int32), vals[order], np.zeros(3 * n + 1, dtype=np.int32))
    highs.run()
    if highs.getModelStatus() != highspy.HighsModelStatus.kOptimal:
        return None
    x = np.array(highs.getSolution().col_value[:n])
    out = np.zeros_like(p0)
    out[se, st] = np.clip(x, lo[se, st], hi[se, st])
    return out


def _acceptable(out: np.ndarray, p0: np.ndarray, lo: np.ndarray, hi: np.ndarray, hours: np.ndarray,
                fixed: np.ndarray, limit: np.ndarray, price: np.ndarray) -> bool:
    """The levelled plan keeps the site limit where the input did, every cell's bounds and every EV's
    energy, costs no more, and lowers the peak by at least MIN_GAIN_KW."""
    site_new, site_old = out.sum(axis=0) + fixed, p0.sum(axis=0) + fixed
    within = site_new <= np.maximum(limit, site_old) + 1e-6
    bounded = (out >= lo - 1e-6).all() and (out <= hi + 1e-6).all()
    energy_kept = np.allclose((out * hours).sum(axis=1), (p0 * hours).sum(axis=1), atol=1e-4)
    soon = min(SOON_STEPS, len(site_new))
    lower = (site_new.max() <= site_old.max() + 1e-6
             and site_new[:soon].max() <= site_old[:soon].max() - MIN_GAIN_KW)
    cost_old = float((site_old * hours * price).sum())
    no_dearer = float((site_new * hours * price).sum()) <= cost_old + 1e-6 * max(1.0, abs(cost_old))
    return bool(within.all() and bounded and energy_kept and lower and no_dearer)
