"""`solve(instance, strategy)`: the one entry point. Never raises for infeasible or time-limited solves.

Routing:
- baselines (`uncontrolled`, `equal_share`, `edf`, `llf`, `smallest_first`, `fcfs`): pure numpy greedy;
- `cost` / `profit` without charger assignment: the LP built directly from numpy arrays into HiGHS
  (`optimizer.model.highs_lp`, fast at 10,000 EVs);
- charger assignment (EVs with `charger: null`), cost/profit: the strong assignment MILP built directly
  into HiGHS (`optimizer.model.assignment`, slot cuts, LP relaxation + rounding as warm start, time
  budget, proven gap; `optimizer.model.assignment_solve`);
- `service_time`, and everything with `backend="pyomo"`: the Pyomo reference model
  (`optimizer.model.pyomo_model`) with a MIP gap and time limit; if it finds no solution in time,
  the LP relaxation plus rounding;
- anything else failing (infeasible hard needs, solver error): a safe baseline, status `fallback`,
  with the reason in `message`.
"""

from __future__ import annotations

import logging
import time

from optimizer.baselines import run_baseline
from optimizer.evaluate import make_schedule
from optimizer.model.data import ProblemData, build_data
from optimizer.problem import Instance, Schedule, SolveStatus
from optimizer.strategies import STRATEGIES, is_baseline

log = logging.getLogger(__name__)

DEFAULT_MIP_REL_GAP = 1e-4
DEFAULT_MILP_TIME_LIMIT_S = 30.0
"""Used when the caller gives no time limit and the model has binaries."""


class UnknownStrategyError(ValueError):
    """The strategy name is not in `optimizer.strategies.STRATEGIES`."""

    def __init__(self, name: str) -> None:
        super().__init__(f"unknown strategy {name!r}; choose one of: {', '.join(STRATEGIES)}")
        self.name = name


def solve(
    instance: Instance,
    strategy: str | None = None,
    time_limit_s: float | None = None,
    *,
    mip_rel_gap: float = DEFAULT_MIP_REL_GAP,
    backend: str = "auto",
) -> Schedule:
    """Schedule `instance` with `strategy` (default: the instance's objective kind).

    `backend` is `auto`, `highs` (direct LP; LPs only) or `pyomo` (reference model).
    Raises only for programming errors (`UnknownStrategyError`, a backend that cannot build the model);
    infeasibility, time limits and solver failures become a status and a fallback schedule.
    """
    name = strategy or instance.objective.kind
    if name not in STRATEGIES:
        raise UnknownStrategyError(name)
    if is_baseline(name):
        return baseline_schedule(instance, name)
    if backend not in ("auto", "highs", "pyomo"):
        raise ValueError(f"unknown backend {backend!r}; choose auto, highs or pyomo")
    if backend == "highs" and (name == "service_time" or any(ev.charger is None for ev in instance.evs)):
        raise ValueError("the direct HiGHS backend builds LPs only (no charger assignment, no service_time)")
    if instance.objective.kind != name:
        instance = instance.model_copy(
            update={"objective": instance.objective.model_copy(update={"kind": name})}
        )
    try:
        return _optimize(instance, time_limit_s, mip_rel_gap, backend)
    except Exception as err:  # a solver/translation failure must not take the caller down: say it, fall back
        # the reason goes into the schedule's message; the traceback only at DEBUG (CLIs show no tracebacks)
        log.error(
            "optimizer failed on %s (%s); falling back to a baseline",
            name,
            err,
            exc_info=log.isEnabledFor(10),
        )
        return fallback_schedule(instance, f"solver error: {type(err).__name__}: {err}")


def baseline_schedule(instance: Instance, name: str, *, data: ProblemData | None = None) -> Schedule:
    """Run baseline `name` and wrap it in a Schedule (status `heuristic`)."""
    t0 = time.perf_counter()
    data = data or build_data(instance)
    ev_kw, st_kw, assign = run_baseline(data, name)
    return make_schedule(
        instance,
        data,
        strategy=name,
        status=SolveStatus.HEURISTIC,
        ev_kw=ev_kw,
        st_kw=st_kw,
        assign=assign,
        build_s=time.perf_counter() - t0,
    )


def fallback_schedule(instance: Instance, reason: str) -> Schedule:
    """The safe baseline (edf; smallest_first for service_time) with status `fallback`.

    The message gives `reason`, what `optimizer.checks.diagnose` finds wrong with the instance, and
    the baseline used.
    """
    from optimizer.checks import diagnose

    name = "smallest_first" if instance.objective.kind == "service_time" else "edf"
    data = build_data(instance)
    found = diagnose(data)
    if found:
        reason = f"{reason}: " + "; ".join(found)
    sched = baseline_schedule(instance, name, data=data)
    return sched.model_copy(
        update={
            "status": SolveStatus.FALLBACK,
            "strategy": instance.objective.kind,
            "message": f"{reason}; fell back to baseline {name!r}",
        }
    )


def reported_objective(kind: str, cost: float, service_h: float | None = None) -> float:
    """The objective value a Schedule reports: cost, profit (= −cost) or service hours."""
    if kind == "profit":
        return 0.0 - cost
    if kind == "service_time" and service_h is not None:
        return service_h
    return cost


def _optimize(instance: Instance, time_limit_s: float | None, mip_rel_gap: float, backend: str) -> Schedule:
    t0 = time.perf_counter()
    data = build_data(instance)
    prep_s = time.perf_counter() - t0
    if backend == "auto" and data.needs_assignment and data.kind != "service_time":
        from optimizer.model.assignment_solve import solve_assignment

        return solve_assignment(instance, data, time_limit_s, mip_rel_gap, prep_s)
    milp = data.kind == "service_time" or data.needs_assignment
    if backend == "pyomo" or milp:
        from optimizer.model.pyomo_solve import solve_with_pyomo

        return solve_with_pyomo(instance, data, time_limit_s, mip_rel_gap, prep_s)
    from optimizer.model.highs_solve import solve_lp

    return solve_lp(instance, data, time_limit_s, prep_s)
