"""The charger-assignment MILP (seed 003) built from arrays straight into HiGHS: the strong formulation.

The continuous part is the cost LP of `optimizer.model.highs_lp` (same column blocks and row
families: site balance, storage, energy need, V2G dynamics, peak, stickiness). On top, for EVs whose
charger the optimizer picks (`charger: null`), per charger class k (chargers with the same max_kw and
bidirectionality; n_k(t) of them free at step t) and step t:

columns  x[e,k,t] ∈ {0,1}: EV e charges on a charger of class k in step t (per-EV on/off; the
         chargers of a class are aggregated, so the n_k! relabellings of a solution do not exist)
rows     class capacity     Σ_e x[e,k,t] ≤ n_k(t)
         EV exclusivity     Σ_k x[e,k,t] ≤ 1                                  (only with > 1 class)
         assigned power     p[e,t] − Σ_k min(r_e, P_k) x[e,k,t] ≤ 0
         assigned V2G       d[e,t] − Σ_{k bidirectional} min(r_e, P_k) x[e,k,t] ≤ 0
         slot cut (valid)   Σ_{k,t} x[e,k,t] + unmet_e / (s_e f_e) ≥ ⌈need_e / s_e⌉
         identical EVs      Σ_{k,t} x[e,k,t] − Σ_{k,t} x[e',k,t] ≥ 0           (e < e' identical)

The slot cut is the mixed-integer rounding (MIR) of "energy delivered ≤ slots × the most one slot can
deliver": with s_e = η_e Δt max_k min(r_e, P_k) the energy of one full slot, b = need_e / s_e and
f_e = b − ⌊b⌋ > 0, any schedule has n = Σ x slots and s_e n ≥ need_e − unmet_e, hence
n + unmet_e/(s_e f_e) ≥ ⌈b⌉ (n integer, unmet ≥ 0). It is what the LP relaxation misses most: there,
EVs share slots fractionally and never waste the part of a slot they do not need. With hard needs
(no unmet column) it reads Σ x ≥ ⌈b⌉. The identical-EV rows keep one of the orderings of EVs that
are interchangeable (same window, limits, need, battery, priority, no reference plan).

`build_assignment_milp(data)` returns the arrays and the index maps; `optimizer.model.assignment_solve`
runs the LP relaxation, rounding, warm start and the time-limited MILP.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from optimizer.model.data import FloatArray, IntArray, ProblemData
from optimizer.model.highs_lp import (
    INF,
    LinearProgram,
    add_energy_need,
    add_peak,
    add_site_balance,
    add_stickiness,
    add_storage,
)
from optimizer.model.pyomo_model import (
    TIME_PREFERENCE,
    VERTEX_TIE_BREAK,
    charger_classes,
    class_free_count,
    tie_break_weight,
)

SLOT_CUT_MIN_FRACTION = 1e-6
"""Below this fractional part the slot cut adds nothing to the LP (need is a whole number of slots)."""


@dataclass
class AssignmentMilp:
    """The MILP in arrays plus what reading a solution back needs."""

    lp: LinearProgram
    x_cols: IntArray
    """Column index of x[e,k,t] for each triple below."""
    xe: IntArray
    xk: IntArray
    xt: IntArray
    class_kw: FloatArray
    class_bidir: np.ndarray
    unmet_cols: IntArray | None

    def integrality(self) -> np.ndarray:
        """HiGHS integrality per column: 1 for x, 0 otherwise."""
        out = np.zeros(self.lp.n_col, dtype=np.int32)
        out[self.x_cols] = 1
        return out


def build_assignment_milp(data: ProblemData, *, cuts: bool = True, symmetry: bool = True) -> AssignmentMilp:
    """Build the assignment MILP (kinds cost and profit) from the data arrays; see the module docstring."""
    if data.kind == "service_time":
        raise ValueError("build_assignment_milp handles cost/profit only")
    lp = LinearProgram()
    w = tie_break_weight(data, VERTEX_TIE_BREAK)
    dt, steps = data.step_h, data.steps  # step 0 may be shorter (a horizon starting inside a step)
    pe, pt = np.nonzero(data.p_max_kw > 0)
    de, dtt = np.nonzero(data.d_max_kw > 0)
    p_cols = lp.add_columns("p", w * dt[pt] * TIME_PREFERENCE * pt / steps, 0.0, data.p_max_kw[pe, pt])
    d_cols = lp.add_columns("d", data.degradation_per_kwh * dt[dtt], 0.0, data.d_max_kw[de, dtt])
    imp = lp.add_columns("imp", dt * data.import_price, 0.0, data.import_limit_kw)
    exp = lp.add_columns("exp", -dt * data.export_price, 0.0, data.export_limit_kw)
    curt = lp.add_columns("curt", np.zeros(steps), 0.0, data.pv_kw)
    site = add_site_balance(lp, data, p_cols, pt, d_cols, dtt, imp, exp, curt, np.arange(steps))
    add_storage(lp, data, site)
    unmet = None
    if data.unmet_penalty_per_kwh is not None:
        unmet = lp.add_columns("unmet", data.unmet_penalty_per_kwh * data.priority, 0.0, data.need_kwh)
    add_energy_need(lp, data, p_cols, pe, pt, d_cols, de, dtt, unmet)
    add_peak(lp, data, imp, w)
    add_stickiness(lp, data, p_cols, pe, pt)
    classes = charger_classes(data)
    class_kw = np.array([data.charger_max_kw[c[0]] for c in classes], dtype=float)
    class_bidir = np.array([bool(data.charger_bidirectional[c[0]]) for c in classes], dtype=bool)
    milp = add_assignment_columns(lp, data, class_kw, class_bidir, unmet)
    add_class_capacity(milp, data)
    add_ev_exclusivity(milp)
    add_assigned_power(milp, data, p_cols, pe, pt, d_cols, de, dtt)
    if cuts:
        add_slot_cuts(milp, data)
    if symmetry:
        add_identical_ev_order(milp, data)
    return milp


def add_assignment_columns(
    lp: LinearProgram,
    data: ProblemData,
    class_kw: FloatArray,
    class_bidir: np.ndarray,
    unmet: IntArray | None,
) -> AssignmentMilp:
    """x[e,k,t] ∈ [0,1] (integral in the MILP) for pool EV e present at t and class k with a free charger."""
    free = class_free_count(data)
    pool = np.flatnonzero(data.pool)
    mask = data.available[pool][:, None, :] & (free > 0)[None, :, :]
    i, k, t = np.nonzero(mask)
    xe = pool[i].astype(np.int64)
    # a zero cost: the assignment itself costs nothing, the power it allows does
    cols = lp.add_columns("x", np.zeros(len(xe)), 0.0, 1.0)
    return AssignmentMilp(
        lp=lp,
        x_cols=cols,
        xe=xe,
        xk=k.astype(np.int64),
        xt=t.astype(np.int64),
        class_kw=class_kw,
        class_bidir=class_bidir,
        unmet_cols=unmet,
    )


def add_class_capacity(milp: AssignmentMilp, data: ProblemData) -> None:
    """Σ_e x[e,k,t] ≤ n_k(t): no more EVs on class k than it has free chargers."""
    free = class_free_count(data)
    lp = milp.lp
    key = milp.xk * data.steps + milp.xt
    uniq, inv = np.unique(key, return_inverse=True)
    rows = lp.add_rows(np.full(len(uniq), -INF), free.ravel()[uniq].astype(float))
    lp.add_entries(rows[inv], milp.x_cols, 1.0)


def add_ev_exclusivity(milp: AssignmentMilp) -> None:
    """Σ_k x[e,k,t] ≤ 1: one charger per EV and step (implied when there is a single class)."""
    if len(milp.class_kw) <= 1:
        return
    lp = milp.lp
    key = milp.xe * (int(milp.xt.max(initial=0)) + 1) + milp.xt
    uniq, inv = np.unique(key, return_inverse=True)
    rows = lp.add_rows(np.full(len(uniq), -INF), np.ones(len(uniq)))
    lp.add_entries(rows[inv], milp.x_cols, 1.0)


def add_assigned_power(
    milp: AssignmentMilp,
    data: ProblemData,
    p_cols: IntArray,
    pe: IntArray,
    pt: IntArray,
    d_cols: IntArray,
    de: IntArray,
    dtt: IntArray,
) -> None:
    """p[e,t] ≤ Σ_k min(r_e, P_k) x[e,k,t];  d[e,t] ≤ Σ_{k bidir.} min(r_e, P_k) x[e,k,t] (pool EVs)."""
    lp = milp.lp
    cap = np.minimum(data.ev_max_kw[milp.xe], milp.class_kw[milp.xk])
    for cols, owner, step, bidir_only in ((p_cols, pe, pt, False), (d_cols, de, dtt, True)):
        sel = data.pool[owner]
        if not sel.any():
            continue
        row_of = np.full((data.n_ev, data.steps), -1, dtype=np.int64)
        row_of[owner[sel], step[sel]] = lp.add_rows(np.full(int(sel.sum()), -INF), np.zeros(int(sel.sum())))
        lp.add_entries(row_of[owner[sel], step[sel]], cols[sel], 1.0)
        use = row_of[milp.xe, milp.xt] >= 0
        if bidir_only:
            use &= milp.class_bidir[milp.xk]
        lp.add_entries(row_of[milp.xe[use], milp.xt[use]], milp.x_cols[use], -cap[use])


def slot_energy_kwh(milp: AssignmentMilp, data: ProblemData) -> FloatArray:
    """(E,): the most energy one charging slot can bring EV e [kWh] (0 for EVs not assigned)."""
    out = np.zeros(data.n_ev)
    cap = np.minimum(data.ev_max_kw[milp.xe], milp.class_kw[milp.xk])
    np.maximum.at(out, milp.xe, cap * data.efficiency[milp.xe] * data.step_h[milp.xt])
    return out


def add_slot_cuts(milp: AssignmentMilp, data: ProblemData) -> None:
    """Σ_{k,t} x[e,k,t] + unmet_e/(s_e f_e) ≥ ⌈need_e/s_e⌉ (the MIR cut of s_e Σ x ≥ need_e − unmet_e)."""
    lp = milp.lp
    slot = slot_energy_kwh(milp, data)
    evs = np.flatnonzero((slot > 0) & (data.need_kwh > 1e-9))
    if evs.size == 0:
        return
    b = data.need_kwh[evs] / slot[evs]
    frac = b - np.floor(b)
    whole = frac < SLOT_CUT_MIN_FRACTION
    rhs = np.where(whole, np.round(b), np.ceil(b))
    if milp.unmet_cols is not None:
        keep = ~whole  # whole slots: the LP already has s·n ≥ need − unmet
        evs, rhs, frac = evs[keep], rhs[keep], frac[keep]
    if evs.size == 0:
        return
    row_of = np.full(data.n_ev, -1, dtype=np.int64)
    row_of[evs] = lp.add_rows(rhs, np.full(evs.size, INF))
    sel = row_of[milp.xe] >= 0
    lp.add_entries(row_of[milp.xe[sel]], milp.x_cols[sel], 1.0)
    if milp.unmet_cols is not None:
        lp.add_entries(row_of[evs], milp.unmet_cols[evs], 1.0 / (slot[evs] * frac))


def identical_ev_groups(data: ProblemData) -> list[list[int]]:
    """Pool EVs that are interchangeable (same window, limits, need, battery, priority, no reference)."""
    groups: dict[tuple[float, ...], list[int]] = {}
    for e in np.flatnonzero(data.pool & np.isnan(data.reference_kw).all(axis=1)).tolist():
        key = (
            float(data.arrival[e]), float(data.departure[e]), float(data.ev_max_kw[e]),
            float(data.need_kwh[e]), float(data.initial_kwh[e]), float(data.capacity_kwh[e]),
            float(data.min_kwh[e]), float(data.efficiency[e]), float(data.priority[e]),
            float(data.d_max_kw[e].max(initial=0.0)),
        )
        groups.setdefault(key, []).append(e)
    return [g for g in groups.values() if len(g) > 1]


def add_identical_ev_order(milp: AssignmentMilp, data: ProblemData) -> None:
    """Σ x[e,·,·] ≥ Σ x[e',·,·] for consecutive e < e' of a group of identical EVs (symmetry breaking)."""
    lp = milp.lp
    pairs = [(g[i], g[i + 1]) for g in identical_ev_groups(data) for i in range(len(g) - 1)]
    if not pairs:
        return
    rows = lp.add_rows(np.zeros(len(pairs)), np.full(len(pairs), INF))
    for r, (a, b) in zip(rows.tolist(), pairs, strict=True):
        ca, cb = milp.x_cols[milp.xe == a], milp.x_cols[milp.xe == b]
        lp.add_entries(np.full(len(ca), r), ca, 1.0)
        lp.add_entries(np.full(len(cb), r), cb, -1.0)
