"""The lowest peak at a given cost: how flat could the same cars have charged for the same money? (pure)

Cost-optimal charging schedules are rarely unique: prices repeat over hours and tariff bands, and
equal-cost schedules can differ several-fold in peak. `min_peak` answers, for a set of sessions
(each with a presence window, an energy and a maximum power), a site limit and a price series on a
step grid: the lowest peak (the highest step average) of any schedule that gives every session
its energy, stays within the limit and costs at most `max_cost` (at least the cheapest cost).

LP over x[s,t] = energy of session s in step t (kWh), 0 ≤ x ≤ max_kw × (hours of step t the session
is present):  Σ_t x[s,t] = energy_s;  Σ_s x[s,t] ≤ limit × Δt;  Σ_s x[s,t] − peak × Δt ≤ 0;
Σ price_t x[s,t] ≤ cost bound;  minimise peak. Solved with HiGHS (highspy), arrays built with numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import highspy
import numpy as np

import optimizer.model  # noqa: F401  (the first Highs is created quietly there)


@dataclass(frozen=True)
class Session:
    """One car's charging session as the LP sees it (grid side)."""

    arrival: datetime
    departure: datetime
    energy_kwh: float
    max_kw: float


@dataclass(frozen=True)
class MinPeak:
    """Outcome: the lowest peak within the cost bound, the cheapest cost, and the bound used."""

    peak_kw: float
    min_cost: float
    cost_bound: float


class MinPeakError(RuntimeError):
    """HiGHS found no solution (should not happen: energies are capped to what fits)."""


def _presence_h(sessions: Sequence[Session], start: datetime, step_s: float, steps: int) -> np.ndarray:
    """(S, T) hours of each step each session is present."""
    t0 = np.array([(s.arrival - start).total_seconds() for s in sessions])
    t1 = np.array([(s.departure - start).total_seconds() for s in sessions])
    lo = np.arange(steps) * step_s
    overlap = np.minimum(t1[:, None], lo[None, :] + step_s) - np.maximum(t0[:, None], lo[None, :])
    return np.clip(overlap, 0.0, None) / 3600.0


def min_peak(sessions: Sequence[Session], start: datetime, end: datetime, step_s: float,
             prices: Sequence[float], limit_kw: float, max_cost: float | None = None) -> MinPeak:
    """The lowest peak of a schedule costing at most `max(max_cost, cheapest cost)` (module doc).

    `prices[t]` is the price per kWh of step t (`ceil((end - start) / step_s)` steps). An energy above
    what a session's window and power allow is capped to that. Raises MinPeakError if HiGHS fails.
    """
    steps = max(1, int(np.ceil((end - start) / timedelta(seconds=step_s) - 1e-9)))
    price = np.asarray(prices[:steps], dtype=float)
    if len(price) < steps:
        raise ValueError(f"need {steps} prices, got {len(price)}")
    dt_h = step_s / 3600.0
    cap = np.array([s.max_kw for s in sessions])[:, None] * _presence_h(sessions, start, step_s, steps)
    energy = np.minimum(np.array([s.energy_kwh for s in sessions]), cap.sum(axis=1))
    se, st = np.nonzero(cap > 1e-12)
    n, n_s = len(se), len(sessions)
    cost_coef = price[st]
    cheapest = _solve(n, n_s, steps, se, st, cap[se, st], energy, limit_kw * dt_h, dt_h, cost_coef,
                      None, minimise_peak=False)
    bound = cheapest if max_cost is None else max(max_cost, cheapest)
    bound += 1e-7 * max(1.0, abs(bound))  # the solver's tolerance: the cheapest cost itself must fit
    peak = _solve(n, n_s, steps, se, st, cap[se, st], energy, limit_kw * dt_h, dt_h, cost_coef, bound,
                  minimise_peak=True)
    return MinPeak(peak_kw=peak, min_cost=cheapest, cost_bound=bound)


def _solve(n: int, n_s: int, steps: int, se: np.ndarray, st: np.ndarray, hi: np.ndarray, energy: np.ndarray,
           step_cap_kwh: float, dt_h: float, cost_coef: np.ndarray, cost_bound: float | None,
           minimise_peak: bool) -> float:
    """Min cost (returns the cost) or min peak under a cost bound (returns the peak)."""
    inf = highspy.kHighsInf
    peak_col = n  # the last column
    # rows: sessions' energy (n_s), step site (steps), step peak (steps), cost (1 if bounded)
    rows = [se, n_s + st, n_s + steps + st, n_s + steps + np.arange(steps)]
    cols = [np.arange(n), np.arange(n), np.arange(n), np.full(steps, peak_col)]
    vals = [np.ones(n), np.ones(n), np.ones(n), np.full(steps, -dt_h)]
    row_lo = [energy, np.full(steps, -inf), np.full(steps, -inf)]
    row_hi = [energy, np.full(steps, step_cap_kwh), np.zeros(steps)]
    n_row = n_s + 2 * steps
    if cost_bound is not None:
        rows.append(np.full(n, n_row))
        cols.append(np.arange(n))
        vals.append(cost_coef)
        row_lo.append(np.array([-inf]))
        row_hi.append(np.array([cost_bound]))
        n_row += 1
    r, c, v = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
    order = np.lexsort((c, r))
    start = np.zeros(n_row + 1, dtype=np.int32)
    np.cumsum(np.bincount(r, minlength=n_row), out=start[1:])
    cost = np.concatenate([np.zeros(n) if minimise_peak else cost_coef, [1.0 if minimise_peak else 0.0]])
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("threads", 1)
    h.passModel(n + 1, n_row, len(v), 2, 1, 0.0, cost, np.zeros(n + 1), np.concatenate([hi, [inf]]),
                np.concatenate(row_lo), np.concatenate(row_hi), start, c[order].astype(np.int32), v[order],
                np.zeros(n + 1, dtype=np.int32))
    h.run()
    if h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
        raise MinPeakError(f"min-peak LP: {h.modelStatusToString(h.getModelStatus())}")
    return float(h.getInfo().objective_function_value)
