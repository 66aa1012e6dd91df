"""Seed 003 reproduced: the paper's FCFS baseline and the MILP, with certainty and under uncertainty.

    .venv/bin/python benchmarks/seed003_reproduction.py [--runs 1000] [--minutes 15] [--replan-runs N]
        [--output FILE]

Certainty: `fcfs` (the paper's baseline, `optimizer/fcfs.py`), our `uncontrolled` and the assignment
MILP on `company_fleet(step_minutes)`. Uncertainty (the paper's scenario): the MILP plans once on the
forecast; PV, factory load, prices and the EVs' initial SOC are then drawn `runs` times around it
(`optimizer.open_loop.ForecastErrors`) and the plan is executed on each draw (`open_loop.execute`);
FCFS, which needs no forecast, runs on each draw. With `--replan-runs N`, the first N draws are also run
closed loop, re-planning the MILP every step on what is known by then (`optimizer/replan.py`), as the
worker does. Reported: means over the runs of the site energy
cost, the total cost (energy + priority-weighted unmet penalty 0.5/kWh), SOC compliance (share of EVs
reaching their required SOC, the paper's metric), unmet energy, peak and CO2; with certainty also the
cost attributable to the EVs (site cost minus the same site without EVs, its BESS idle for the
baselines and optimised for the MILP).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from optimizer.cases.seed003 import company_fleet  # noqa: E402
from optimizer.open_loop import ForecastErrors, execute, realise  # noqa: E402
from optimizer.problem import Schedule  # noqa: E402
from optimizer.replan import run_replanned  # noqa: E402
from optimizer.solve import solve  # noqa: E402

PAPER = {
    "baseline": {"cost": 381.8, "peak_kw": 242.83, "soc_compliance": 0.35, "co2_kg": 1427.07},
    "certainty": {"cost": 194.57, "peak_kw": 252.77, "soc_compliance": 0.75, "co2_kg": 375.33},
    "uncertainty": {"cost": 255.76, "peak_kw": 292.20, "soc_compliance": 0.55, "co2_kg": 480.59},
}


def figures(s: Schedule) -> dict[str, float]:
    """The metrics we compare."""
    m = s.metrics
    return {
        "energy_cost": m.energy_cost,
        "total_cost": m.total_cost,
        "soc_compliance": m.soc_compliance or 0.0,
        "unmet_kwh": m.unmet_kwh,
        "delivered_kwh": m.delivered_kwh,
        "peak_kw": m.peak_grid_kw,
        "co2_kg": m.co2_kg or 0.0,
    }


def mean(rows: list[dict[str, float]]) -> dict[str, float]:
    """Mean of every figure over the runs."""
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def show(title: str, rows: dict[str, dict[str, float]]) -> None:
    """Print one block."""
    print(f"\n{title}")
    print(
        f"  {'':>22} {'energy':>9} {'total':>9} {'SOC ok':>7} {'unmet':>7} {'deliv.':>7} {'peak':>7} "
        f"{'CO2':>7} {'EV cost':>8} {'per kWh':>8}"
    )
    for name, r in rows.items():
        ev = (
            f"{r['ev_cost']:8.2f} {r['ev_cost'] / r['delivered_kwh']:8.4f}" if "ev_cost" in r else f"{'-':>8}"
        )
        print(
            f"  {name:>22} {r['energy_cost']:9.2f} {r['total_cost']:9.2f} {100 * r['soc_compliance']:6.0f}% "
            f"{r['unmet_kwh']:7.1f} {r['delivered_kwh']:7.1f} {r['peak_kw']:7.1f} {r['co2_kg']:7.1f} {ev}"
        )


def main() -> int:
    """Run certainty and uncertainty scenarios."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--minutes", type=int, default=15)
    ap.add_argument("--seed", type=int, default=2025)
    ap.add_argument("--replan-runs", type=int, default=0, help="also re-plan every step on the first N draws")
    ap.add_argument("--output", type=Path, default=None)
    args = ap.parse_args()
    inst = company_fleet(step_minutes=args.minutes)
    plan = solve(inst)
    cert = {"fcfs": solve(inst, "fcfs"), "uncontrolled": solve(inst, "uncontrolled"), "milp": plan}
    no_ev = inst.model_copy(update={"evs": []})
    idle, bess_opt = (
        solve(no_ev, "uncontrolled").metrics.energy_cost,
        solve(no_ev, "cost").metrics.energy_cost,
    )
    certainty = {k: figures(s) for k, s in cert.items()}
    for k, r in certainty.items():
        r["ev_cost"] = r["energy_cost"] - (bess_opt if k == "milp" else idle)
    print(
        f"seed 003, {inst.steps} x {args.minutes} min; MILP {plan.status.value}, gap {plan.mip_gap}; "
        f"site without EVs {idle:.2f} (BESS idle), {bess_opt:.2f} (BESS optimised)"
    )
    show("certainty", certainty)
    rng = np.random.default_rng(args.seed)
    errors = ForecastErrors()
    runs: dict[str, list[dict[str, float]]] = {"fcfs": [], "milp (day-ahead plan)": []}
    both: dict[str, list[dict[str, float]]] = {k: [] for k in (*runs, "milp (re-planned)")}
    t0 = time.perf_counter()
    for i in range(args.runs):
        real = realise(inst, errors, rng)
        runs["fcfs"].append(figures(solve(real, "fcfs")))
        runs["milp (day-ahead plan)"].append(figures(execute(plan, real)))
        if i < args.replan_runs:
            both["fcfs"].append(runs["fcfs"][-1])
            both["milp (day-ahead plan)"].append(runs["milp (day-ahead plan)"][-1])
            both["milp (re-planned)"].append(figures(run_replanned(inst, real)))
    uncertainty = {k: mean(v) for k, v in runs.items()}
    replanned = {k: mean(v) for k, v in both.items()} if args.replan_runs else {}
    show(
        f"uncertainty: means over {args.runs} draws ({time.perf_counter() - t0:.0f} s, "
        f"load {os.getloadavg()[0]:.1f}), errors {errors}",
        uncertainty,
    )
    if replanned:
        show(f"uncertainty, the first {args.replan_runs} draws, with the MILP re-planned every step "
             f"(optimizer/replan.py)", replanned)
    f, c = certainty["fcfs"], certainty["milp"]
    uf, um = uncertainty["fcfs"], uncertainty["milp (day-ahead plan)"]

    def pct(a: float, b: float) -> str:
        return f"{100 * (a / b - 1):+.1f} %"

    print(
        f"\nMILP vs FCFS: certainty energy {pct(c['energy_cost'], f['energy_cost'])}, total "
        f"{pct(c['total_cost'], f['total_cost'])}, EV cost {pct(c['ev_cost'], f['ev_cost'])}; uncertainty "
        f"energy {pct(um['energy_cost'], uf['energy_cost'])}, total {pct(um['total_cost'], uf['total_cost'])}"
    )
    print(f"paper: {PAPER}")
    if args.output:
        out: dict[str, Any] = {
            "certainty": certainty,
            "uncertainty": uncertainty,
            "replanned": replanned,
            "paper": PAPER,
            "runs": args.runs,
            "minutes": args.minutes,
        }
        args.output.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
