"""The cost/profit LP built directly from numpy arrays into HiGHS (no Pyomo): the fast path.

Same formulation as `optimizer.model.pyomo_model` (tests check equal objectives), written as
column blocks and COO row blocks over index arrays, with no Python loop over EVs or steps:

columns  p[e,t] (where p_max>0), d[e,t] (where d_max>0), z[e,k] (battery energy, V2G EVs only),
         imp[t], exp[t], curt[t], b⁺[s,t], b⁻[s,t], B[s,t] (end of step t), unmet[e] (soft needs), peak,
         dev⁺[e,t], dev⁻[e,t] (deviation from a reference plan)
rows     site balance   Σ_e (p − d)[e,t] + Σ_s (b⁺ − b⁻)[s,t] + curt[t] − imp[t] + exp[t] = pv[t] − base[t]
         energy need    need_e ≤ Σ_t η_e Δt p[e,t] + unmet[e] ≤ capacity_e − initial_e      (charge-only EVs)
         V2G dynamics   z[e,t+1] − z[e,t] − Δt (η_e p[e,t] − d[e,t]/η_e) = 0, z[e,arrival] = initial_e,
                        z[e,departure] + unmet[e] ≥ initial_e + need_e, min_kwh ≤ z ≤ capacity
         storage        B[s,t] − B[s,t−1] − Δt (η_s b⁺[s,t] − b⁻[s,t]/η_s) = 0,  B[s,T] ≥ final_s
         peak           peak − imp[t] ≥ 0; in the lean LP (no grid columns) Σ_e p[e,t] − peak ≤ −base[t]
                        with peak ≤ the highest import limit, Σ_e p[e,t] ≤ limit[t] − base[t] where the
                        limit is lower (`add_lean_peak_rows`, charge-only sites); default weight:
                        `optimizer.model.ties`
         stickiness     p[e,t] − dev⁺[e,t] + dev⁻[e,t] = reference[e,t]   (EVs with a previous plan)
cost     prices, peak (tie-break), stickiness, and with the peak term the estimated-first order: EVs whose
         need is an estimate charge first within their cheapest steps (`estimated_first_cost`)
Stages: `build_lp(data) -> LinearProgram` (arrays) here; `solve_lp_model` (passModel + run) and
`assign_lp_solution` (column values -> (E,T) arrays) in `optimizer.model.highs_solve`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import highspy
import numpy as np

from optimizer.model.data import FloatArray, IntArray, ProblemData
from optimizer.model.pyomo_model import storage_throughput_cost
from optimizer.model.ties import lp_tie_break_weight

INF = highspy.kHighsInf
IPM_OPTIMALITY_TOLERANCE = 1e-7
"""Interior-point tolerance: the cost stays within 1e-8 of the optimum on the fleet LPs."""
STICKY_IPM_OPTIMALITY_TOLERANCE = 1e-8
"""For small LPs with references (up to LARGE_LP_COLUMNS): an equal-cost reference plan must come back
within 1e-4 kW (tests/optimizer/test_stickiness.py), which 1e-7 misses on a few-EV LP."""
LARGE_LP_COLUMNS = 20_000
ONE_SIDED_SITE_ROWS_COLUMNS = 5_000
"""Above this many charge columns the lean LP's site rows leave out a lower bound that cannot bind
(`add_lean_site_rows`). Below it they keep it: the small LPs' equal-cost schedules (tests/optimizer:
stickiness, ties, robustness; a 4-step LP then missed its energy by 2e-6 kWh) are pinned to the
central solution of the ranged rows."""
IPM_TIME_PREFERENCE = 0.0
"""Earlier-charging tie-break relative to the peak's (the vertex models use `TIME_PREFERENCE`): none, the
interior point's central solution is unique already. Pushing equal-price charging early bought energy a
later re-plan would not have (the first cars of the demo, estimated at 20 kWh by a default departure,
charged at the afternoon price in the empty site's first steps: +1-2 % cost in an ideal closed loop)."""

ESTIMATED_FIRST = 0.5
"""Weight of the estimated-first order (`estimated_first_cost`) relative to the peak tie-break w. Below 1, so
no single move of an estimated EV to an earlier step pays for the peak it adds. Measured in the demo's ideal
closed loop (`benchmarks/live_peak.py`, seeds 1-5, with `SnapshotConfig.estimate_share`): 1.017 / 1.069 /
1.128 / 1.171 / 1.143x the min-peak; at 0.005 (w / steps / 2: provably never a higher peak) the order is too
weak to move a standing plan (stickiness is 0.1 w per kWh moved): 1.024 / 1.089 / 1.116 / 1.146 / 1.181x,
7.9 kWh short on seed 5."""


@dataclass
class LinearProgram:
    """An LP in arrays: columns with cost and bounds, rows in COO form with bounds, named column blocks."""

    cost: list[FloatArray] = field(default_factory=list)
    col_lo: list[FloatArray] = field(default_factory=list)
    col_hi: list[FloatArray] = field(default_factory=list)
    blocks: dict[str, tuple[int, int]] = field(default_factory=dict)
    n_col: int = 0
    rows: list[IntArray] = field(default_factory=list)
    cols: list[IntArray] = field(default_factory=list)
    vals: list[FloatArray] = field(default_factory=list)
    row_lo: list[FloatArray] = field(default_factory=list)
    row_hi: list[FloatArray] = field(default_factory=list)
    n_row: int = 0
    cost_offset: float = 0.0
    p_ref: tuple[IntArray, FloatArray, IntArray] | None = None
    """(p columns split by `add_stickiness_split`, their references, their p⁻ columns or −1 where none)."""

    def add_columns(
        self, name: str, cost: FloatArray, lo: FloatArray | float, hi: FloatArray | float
    ) -> IntArray:
        """Append a block of columns; returns their indices."""
        n = len(cost)
        self.blocks[name] = (self.n_col, self.n_col + n)
        self.cost.append(np.asarray(cost, dtype=float))
        self.col_lo.append(_filled(lo, n))
        self.col_hi.append(_filled(hi, n))
        idx = np.arange(self.n_col, self.n_col + n, dtype=np.int64)
        self.n_col += n
        return idx

    def add_rows(self, lo: FloatArray, hi: FloatArray) -> IntArray:
        """Append a block of rows (entries come from `add_entries`); returns their indices."""
        n = len(lo)
        self.row_lo.append(np.asarray(lo, dtype=float))
        self.row_hi.append(np.asarray(hi, dtype=float))
        idx = np.arange(self.n_row, self.n_row + n, dtype=np.int64)
        self.n_row += n
        return idx

    def add_entries(self, rows: IntArray, cols: IntArray, vals: FloatArray | float) -> None:
        """Add coefficients A[rows, cols] = vals (COO)."""
        self.rows.append(np.asarray(rows, dtype=np.int64))
        self.cols.append(np.asarray(cols, dtype=np.int64))
        self.vals.append(_filled(vals, len(rows)))

    def block(self, name: str) -> slice:
        """Slice of a named column block."""
        a, b = self.blocks[name]
        return slice(a, b)


def _filled(value: FloatArray | float, n: int) -> FloatArray:
    """`value` as a float array of length n (a scalar repeated; np.full costs a fraction of broadcast_to)."""
    if np.ndim(value) == 0:
        return np.full(n, float(value))
    out: FloatArray = np.asarray(value, dtype=float)
    if out.shape != (n,):
        out = np.broadcast_to(out, (n,))
    return out


def build_lp(data: ProblemData) -> LinearProgram:
    """Build the cost LP (kinds cost and profit; no charger assignment) from the data arrays."""
    if data.needs_assignment or data.kind == "service_time":
        raise ValueError("build_lp handles cost/profit LPs with fixed chargers only")
    lp = LinearProgram()
    pe, pt = data.charge_cells
    de, dtt = data.discharge_cells
    # the peak term: lowest peak among the cost optima, by default at a weight that cannot move the cost
    # optimum (optimizer.model.ties); the interior point's central solution alone spreads each EV over its
    # own stay, which is not the lowest peak when stays differ
    w = lp_tie_break_weight(data)
    dt, steps = data.step_h, data.steps
    lean = is_lean(data, w)
    # lean: no grid columns; the import price goes straight onto what flows through the site row
    site_cost = dt * data.import_price if lean else np.zeros(steps)
    p_cost = site_cost[pt]
    if w * IPM_TIME_PREFERENCE:  # (0 by default: skipped, the same costs to the bit)
        p_cost = w * dt[pt] * IPM_TIME_PREFERENCE * pt / steps + p_cost
    if w > 0 and data.estimated.any():
        p_cost = p_cost + estimated_first_cost(data, w, pe, pt)
    p_cols = lp.add_columns("p", p_cost, 0.0, data.p_max_kw[pe, pt])
    d_cost = data.degradation_per_kwh * dt[dtt] - site_cost[dtt]
    d_cols = lp.add_columns("d", d_cost, 0.0, data.d_max_kw[de, dtt])
    if lean:
        lp.cost_offset = float(site_cost @ data.base_load_kw)
        if peak_cost(data, w) > 0:
            site = add_lean_peak_rows(lp, data, p_cols, pt, w)
        else:
            site = add_lean_site_rows(lp, data, p_cols, pt, d_cols, dtt)
    else:
        t_all = np.arange(steps)
        imp = lp.add_columns("imp", dt * data.import_price, 0.0, data.import_limit_kw)
        exp = lp.add_columns("exp", -dt * data.export_price, 0.0, data.export_limit_kw)
        curt = lp.add_columns("curt", np.zeros(steps), 0.0, data.pv_kw)
        site = add_site_balance(lp, data, p_cols, pt, d_cols, dtt, imp, exp, curt, t_all)
    add_storage(lp, data, site, site_cost)
    unmet = None
    if data.unmet_penalty_per_kwh is not None:
        unmet = lp.add_columns("unmet", data.unmet_penalty_per_kwh * data.priority, 0.0, data.need_kwh)
    add_energy_need(lp, data, p_cols, pe, pt, d_cols, de, dtt, unmet)
    if not lean:
        add_peak(lp, data, imp, w)
    add_stickiness_split(lp, data, p_cols, pe, pt)
    return lp


def estimated_first_cost(data: ProblemData, w: float, pe: IntArray, pt: IntArray) -> FloatArray:
    """Per p column: ESTIMATED_FIRST·w·Δt_t·t/T where EV e's energy is an estimate (`estimated`) and step t
    has the cheapest price of e's stay, else 0.

    Among schedules of equal cost and peak, the EVs whose need is only an estimate (cars without ISO 15118)
    charge first and the EVs that reported theirs keep the later steps: an estimated EV tells its real need
    only by filling up, or by still drawing once its estimate is delivered, so the sooner it charges, the
    sooner a re-plan knows the site's real energy, and an estimate too low is spread over the rest of the
    night instead of being found in its last hours (the demo's seed 4: its silent cars, planned to leave at
    the site's typical dwell, were squeezed into 30 minutes each at 03:30-05:45, 1.196x the min-peak).
    Only the cheapest steps of the stay: ordering the dearer ones too bought energy at the afternoon price
    that later estimates no longer needed (+2-6 % cost in the demo's closed loop); within one price the
    order moves no cost. Moving x kW of an estimated EV Δ steps earlier gains ESTIMATED_FIRST·w·Δt·x·Δ/T,
    less than the w·Δt·x that x kW more peak costs; lowering a peak that n steps share moves n times that
    energy, so there the order could hold a slightly higher peak (module constant: what was measured).
    """
    price = data.import_price
    stay_min = np.where(data.available, price[None, :], np.inf).min(axis=1)  # (E,) cheapest price of the stay
    cheapest = price[pt] <= stay_min[pe] + 1e-9
    weight = np.where(data.estimated[pe] & cheapest, ESTIMATED_FIRST * w, 0.0)
    return weight * data.step_h[pt] * pt / max(data.steps, 1)


def peak_cost(data: ProblemData, w: float) -> float:
    """Objective weight of the peak column: demand charge + tie-break w·Δt (0: no peak column)."""
    return data.peak_price_per_kw + w * data.dt_h


def is_lean(data: ProblemData, w: float) -> bool:
    """True when the grid columns are redundant: no PV, no export, and no peak term unless the peak
    fits the site rows (`peak_fits_site_rows`).

    Then import = base + the EVs' and storages' net power exactly, so the site row bounds that sum
    directly and the import price sits on its terms (the LP HiGHS gets is the plain fleet LP:
    about half the interior-point time of the one with grid and peak columns, same optimum).
    """
    no_peak = peak_cost(data, w) <= 0
    return (no_peak or peak_fits_site_rows(data)) and not data.pv_kw.any() and not data.export_limit_kw.any()


def peak_fits_site_rows(data: ProblemData) -> bool:
    """True when the site rows can carry the peak column (`add_lean_peak_rows`): charge-only EVs, no
    storage and a non-negative base load (the live worker's LP, the offline default's)."""
    return not data.d_max_kw.any() and data.n_storage == 0 and bool((data.base_load_kw >= 0).all())


def add_lean_peak_rows(
    lp: LinearProgram, data: ProblemData, p_cols: IntArray, pt: IntArray, w: float
) -> IntArray:
    """Σ_e p[e,t] − peak ≤ −base[t] with 0 ≤ peak ≤ the highest import limit, and Σ_e p[e,t] ≤ limit[t] −
    base[t] for each step whose limit is lower; cost of peak: peak_price + w·Δt.

    The same LP as the site rows plus `add_peak` (import = base + Σ_e p ≥ 0 holds by itself with p ≥ 0
    and base ≥ 0, and the highest limit bounds peak ≥ every step's import), in the site rows' own
    entries plus one per step (and the lower limits' rows): the lowest-peak tie-break at the lean LP's
    size (`peak_fits_site_rows`). With one limit for every step (the live worker's LP) there is no
    limit row. The seed 001 fleet's per-step limits at 1,000 EVs: 0.28 s CPU against 0.57 with the
    grid columns.
    """
    limit = data.import_limit_kw
    top = float(limit.max()) if data.steps else 0.0
    peak = lp.add_columns("peak", np.array([peak_cost(data, w)]), 0.0, max(top, 0.0))
    below = np.flatnonzero(limit < top)
    rows = lp.add_rows(np.full(data.steps, -INF), -data.base_load_kw)
    lp.add_entries(rows[pt], p_cols, 1.0)
    lp.add_entries(rows, np.full(data.steps, peak[0]), -1.0)
    if len(below):
        cap = lp.add_rows(np.full(len(below), -INF), limit[below] - data.base_load_kw[below])
        of = np.full(data.steps, -1, dtype=np.int64)
        of[below] = cap
        sel = of[pt] >= 0
        lp.add_entries(of[pt[sel]], p_cols[sel], 1.0)
    return rows


def add_lean_site_rows(
    lp: LinearProgram, data: ProblemData, p_cols: IntArray, pt: IntArray, d_cols: IntArray, dtt: IntArray
) -> IntArray:
    """−base[t] ≤ Σ_e p[e,t] − Σ_e d[e,t] (+ storage) ≤ import_limit[t] − base[t]  (0 ≤ import ≤ limit).

    Above ONE_SIDED_SITE_ROWS_COLUMNS charge columns the lower bound is left out (−∞) where it cannot
    bind: no discharge column and no storage, so the row's terms are ≥ 0, and base[t] ≥ 0. The interior
    point then solves the plain fleet LP direct highspy gets, in its time (10,000 EVs: 2.21-2.27 s CPU
    against 2.58-2.75 s ranged, the same cost as highspy's to 1e-12 where the ranged rows gave 5e-9
    more; 100 EVs: 17 ms against 20-22). A redundant bound moves the central solution, so the small LPs
    keep the ranged rows their equal-cost schedules are pinned to.
    """
    lower = -data.base_load_kw
    if not len(dtt) and data.n_storage == 0 and len(pt) > ONE_SIDED_SITE_ROWS_COLUMNS:
        lower = np.where(data.base_load_kw >= 0, -INF, lower)
    rows = lp.add_rows(lower, data.import_limit_kw - data.base_load_kw)
    lp.add_entries(rows[pt], p_cols, 1.0)
    lp.add_entries(rows[dtt], d_cols, -1.0)
    return rows


def add_site_balance(
    lp: LinearProgram,
    data: ProblemData,
    p_cols: IntArray,
    pt: IntArray,
    d_cols: IntArray,
    dtt: IntArray,
    imp: IntArray,
    exp: IntArray,
    curt: IntArray,
    t_all: IntArray,
) -> IntArray:
    """Σ_e p[e,t] − Σ_e d[e,t] + curt[t] − imp[t] + exp[t] (+ storage) = pv[t] − base[t]; returns the rows."""
    rhs = data.pv_kw - data.base_load_kw
    rows = lp.add_rows(rhs, rhs)
    lp.add_entries(rows[pt], p_cols, 1.0)
    lp.add_entries(rows[dtt], d_cols, -1.0)
    lp.add_entries(rows, curt, 1.0)
    lp.add_entries(rows, imp, -1.0)
    lp.add_entries(rows, exp, 1.0)
    return rows


def add_storage(
    lp: LinearProgram, data: ProblemData, site_rows: IntArray, site_cost: FloatArray | None = None
) -> None:
    """B[s,t] − B[s,t−1] − Δt(η b⁺[s,t] − b⁻[s,t]/η) = 0 with B[s,−1] = initial, B[s,T−1] ≥ final.

    b⁺ and b⁻ each cost `storage_throughput_cost` per kWh (no same-step charge and discharge).

    `site_cost[t]` is the price per kW of a term of the site row (lean LP; zeros otherwise).
    """
    n_s, steps = data.n_storage, data.steps
    if n_s == 0:
        return
    size = n_s * steps
    s_idx = np.repeat(np.arange(n_s), steps)
    t_idx = np.tile(np.arange(steps), n_s)
    if site_cost is None:
        site_cost = np.zeros(steps)
    wear = storage_throughput_cost(data) * data.step_h[t_idx]
    bch = lp.add_columns("bch", site_cost[t_idx] + wear, 0.0, data.st_max_charge_kw[s_idx])
    bdis = lp.add_columns("bdis", -site_cost[t_idx] + wear, 0.0, data.st_max_discharge_kw[s_idx])
    lo_soc = np.zeros(size)
    last = t_idx == steps - 1
    lo_soc[last] = data.st_final_kwh[s_idx[last]]
    soc = lp.add_columns("bsoc", np.zeros(size), lo_soc, data.st_capacity_kwh[s_idx])
    lp.add_entries(site_rows[t_idx], bch, 1.0)
    lp.add_entries(site_rows[t_idx], bdis, -1.0)
    rhs = np.where(t_idx == 0, data.st_initial_kwh[s_idx], 0.0)
    rows = lp.add_rows(rhs, rhs)
    eta = data.st_efficiency[s_idx]
    lp.add_entries(rows, soc, 1.0)
    has_prev = t_idx > 0
    lp.add_entries(rows[has_prev], soc[has_prev] - 1, -1.0)
    dt = data.step_h[t_idx]
    lp.add_entries(rows, bch, -dt * eta)
    lp.add_entries(rows, bdis, dt / eta)


def add_energy_need(
    lp: LinearProgram,
    data: ProblemData,
    p_cols: IntArray,
    pe: IntArray,
    pt: IntArray,
    d_cols: IntArray,
    de: IntArray,
    dtt: IntArray,
    unmet: IntArray | None,
) -> None:
    """need_e ≤ Σ_t η Δt p[e,t] + unmet_e ≤ room_e for charge-only EVs; SOC dynamics for V2G EVs."""
    dt, eta = data.step_h, data.efficiency
    room = data.capacity_kwh - data.initial_kwh
    if not len(de):  # no V2G EV (no discharge column): one ranged row per EV, in EV order
        rows = lp.add_rows(data.need_kwh, room)
        lp.add_entries(rows[pe], p_cols, dt[pt] * eta[pe])
        if unmet is not None:
            lp.add_entries(rows, unmet, 1.0)
        return
    v2g = data.d_max_kw.any(axis=1)
    # charge-only EVs: one ranged row each
    plain = np.flatnonzero(~v2g)
    row_of = np.full(data.n_ev, -1, dtype=np.int64)
    row_of[plain] = lp.add_rows(data.need_kwh[plain], room[plain])
    sel = row_of[pe] >= 0
    lp.add_entries(row_of[pe[sel]], p_cols[sel], dt[pt[sel]] * eta[pe[sel]])
    if unmet is not None:
        lp.add_entries(row_of[plain], unmet[plain], 1.0)
    if v2g.any():
        _add_v2g_dynamics(lp, data, np.flatnonzero(v2g), p_cols, pe, pt, d_cols, de, dtt, unmet)


def _add_v2g_dynamics(
    lp: LinearProgram,
    data: ProblemData,
    evs: IntArray,
    p_cols: IntArray,
    pe: IntArray,
    pt: IntArray,
    d_cols: IntArray,
    de: IntArray,
    dtt: IntArray,
    unmet: IntArray | None,
) -> None:
    """z[e,t+1] = z[e,t] + Δt(η p − d/η), z(arrival) = initial, min ≤ z ≤ capacity, z(departure) ≥ target."""
    dt, eta = data.step_h, data.efficiency
    lengths = data.departure[evs] - data.arrival[evs]
    owner = np.repeat(evs, lengths)
    first = np.repeat(np.cumsum(lengths) - lengths, lengths)
    step = np.arange(lengths.sum()) - first + np.repeat(data.arrival[evs], lengths)
    # z column k is the energy at the END of step `step[k]` of EV `owner[k]`
    z = lp.add_columns("z", np.zeros(len(owner)), data.min_kwh[owner], data.capacity_kwh[owner])
    is_first = step == data.arrival[owner]
    rhs = np.where(is_first, data.initial_kwh[owner], 0.0)
    rows = lp.add_rows(rhs, rhs)
    lp.add_entries(rows, z, 1.0)
    lp.add_entries(rows[~is_first], z[~is_first] - 1, -1.0)
    key = np.full((data.n_ev, data.steps), -1, dtype=np.int64)
    key[owner, step] = rows
    sel = key[pe, pt] >= 0
    lp.add_entries(key[pe[sel], pt[sel]], p_cols[sel], -dt[pt[sel]] * eta[pe[sel]])
    sel_d = key[de, dtt] >= 0
    lp.add_entries(key[de[sel_d], dtt[sel_d]], d_cols[sel_d], dt[dtt[sel_d]] / eta[de[sel_d]])
    last = np.flatnonzero(step == data.departure[owner] - 1)
    target = data.initial_kwh[owner[last]] + data.need_kwh[owner[last]]
    need_rows = lp.add_rows(target, np.full(len(last), INF))
    lp.add_entries(need_rows, z[last], 1.0)
    if unmet is not None:
        lp.add_entries(need_rows, unmet[owner[last]], 1.0)


def add_peak(lp: LinearProgram, data: ProblemData, imp: IntArray, w: float) -> None:
    """peak − imp[t] ≥ 0; cost peak_price + w·Δt (demand charge and tie-break)."""
    peak = lp.add_columns("peak", np.array([data.peak_price_per_kw + w * data.dt_h]), 0.0, INF)
    rows = lp.add_rows(np.zeros(data.steps), np.full(data.steps, INF))
    lp.add_entries(rows, np.full(data.steps, peak[0]), 1.0)
    lp.add_entries(rows, imp, -1.0)


def add_stickiness(
    lp: LinearProgram, data: ProblemData, p_cols: IntArray, pe: IntArray, pt: IntArray
) -> None:
    """p[e,t] − dev⁺[e,t] + dev⁻[e,t] = ref[e,t] where EV e has a reference; cost λΔt(dev⁺ + dev⁻)."""
    lam = data.stickiness_weight
    ref = data.reference_kw[pe, pt]
    sel = ~np.isnan(ref)
    if lam <= 0 or not sel.any():
        return
    target = np.clip(ref[sel], 0.0, data.p_max_kw[pe[sel], pt[sel]])
    cost = lam * data.step_h[pt[sel]]
    up = lp.add_columns("dev_up", cost, 0.0, INF)
    down = lp.add_columns("dev_down", cost, 0.0, INF)
    rows = lp.add_rows(target, target)
    lp.add_entries(rows, p_cols[sel], 1.0)
    lp.add_entries(rows, up, -1.0)
    lp.add_entries(rows, down, 1.0)


def add_stickiness_split(
    lp: LinearProgram, data: ProblemData, p_cols: IntArray, pe: IntArray, pt: IntArray
) -> None:
    """Stickiness without rows: p[e,t] = ref[e,t] + p⁺[e,t] − p⁻[e,t], cost λΔt(p⁺ + p⁻).

    Where EV e has a reference, the p column becomes p⁺ ∈ [0, p_max − ref] and a column p⁻ ∈ [0, ref]
    joins every row p is in with the opposite coefficient (the rows' bounds move by −a·ref). The same
    LP as `add_stickiness` (at an optimum p⁺·p⁻ = 0), with no row per (EV, step): at 1,000 EVs with a
    previous plan HiGHS solves it in about twice the time of the LP without references, not 12x.
    Where the reference is 0 (about half the referenced steps of a 1,000-session re-plan) p⁻ would be
    fixed at 0 and is left out: the interior point's work grows with every column, fixed or not
    (a quarter less CPU for that re-plan's LP, the same optimum).
    Must run after every other row family (it rewrites their entries). Call `p_values` for p.
    """
    if data.stickiness <= 0:
        return
    ref = data.reference_kw[pe, pt]
    sel = np.flatnonzero(~np.isnan(ref))
    lam = data.stickiness_weight
    if lam <= 0 or not len(sel):
        return
    target = np.clip(ref[sel], 0.0, data.p_max_kw[pe[sel], pt[sel]])
    p_block = list(lp.blocks).index("p")
    base_cost = lp.cost[p_block][sel].copy()
    dev_cost = lam * data.step_h[pt[sel]]
    cost = lp.cost[p_block].copy()
    cost[sel] += dev_cost
    hi = lp.col_hi[p_block].copy()
    hi[sel] = hi[sel] - target
    lp.cost[p_block], lp.col_hi[p_block] = cost, hi
    # a sum of products, not `@`: a BLAS dot this long (tens of thousands) wakes OpenBLAS's second thread,
    # whose spin-wait afterwards cost a 1,000-session re-plan ~7 % more CPU (0.37-0.38 vs 0.40 s)
    lp.cost_offset += float((base_cost * target).sum())
    # p⁻ only where the reference is above 0 (elsewhere p⁻ ∈ [0, 0]: a fixed column, left out)
    has_down = target > 0
    down = np.full(len(sel), -1, dtype=np.int64)
    down[has_down] = lp.add_columns("p_down", (dev_cost - base_cost)[has_down], 0.0, target[has_down])
    lp.p_ref = (p_cols[sel], target, down)
    # entries of the referenced p columns: p⁻ gets them negated, their rows move by −a·ref
    of_col = np.full(lp.n_col, -1, dtype=np.int64)
    of_col[p_cols[sel]] = np.arange(len(sel))
    rows: IntArray = np.concatenate(lp.rows)
    cols: IntArray = np.concatenate(lp.cols)
    vals: FloatArray = np.concatenate(lp.vals)
    hit = np.flatnonzero(of_col[cols] >= 0)
    k = of_col[cols[hit]]
    shift = np.bincount(rows[hit], vals[hit] * target[k], lp.n_row)
    row_lo, row_hi = np.concatenate(lp.row_lo) - shift, np.concatenate(lp.row_hi) - shift
    lp.row_lo, lp.row_hi = [row_lo], [row_hi]
    keep = down[k] >= 0
    lp.add_entries(rows[hit[keep]], down[k[keep]], -vals[hit[keep]])


def p_values(lp: LinearProgram, x: FloatArray) -> FloatArray:
    """The charge power columns' values (ref + p⁺ − p⁻ where stickiness split them)."""
    p = x[lp.block("p")].copy()
    if lp.p_ref is not None:
        cols, target, down = lp.p_ref
        p_down = np.zeros(len(down))
        p_down[down >= 0] = x[down[down >= 0]]
        p[cols - lp.blocks["p"][0]] += target - p_down
    return p
