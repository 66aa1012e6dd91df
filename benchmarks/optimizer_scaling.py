"""Benchmark: the 96-step cost LP at 278, 1,000 and 10,000 EVs, and the seed 003 MILP (not a test).

    .venv/bin/python benchmarks/optimizer_scaling.py [--sizes 278 1000 10000] [--runs 3] [--pyomo]

Per size, the median over `--runs` of each stage of the production path (`optimizer.solve`):
data (Instance -> numpy arrays), build (arrays -> LP column/row blocks), translate (CSR + passModel),
solve (HiGHS interior point, no crossover), extract (column values -> (EV, step) arrays) and schedule
(metrics + pydantic Schedule); `total` is their sum, `solve()` the wall time of one `solve()` call.
`--pyomo` also times the Pyomo reference model of the same LP (build, solve incl. translation) up to
1,000 EVs. Then the seed 003 MILP (20 EVs, 4 chargers, PV, BESS) at 60- and 15-minute steps;
`--per-charger` also times it with one binary per charger instead of per charger class.
Targets (issue 4, 2-core machine): 1,000 EVs < 1 s total, 10,000 EVs < 10 s, seed 003 MILP < 10 s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from optimizer.cases.seed001 import fleet  # noqa: E402
from optimizer.cases.seed003 import company_fleet  # noqa: E402
from optimizer.evaluate import make_schedule  # noqa: E402
from optimizer.model.data import build_data  # noqa: E402
from optimizer.model.highs_lp import assign_lp_solution, build_lp, solve_lp_model  # noqa: E402
from optimizer.problem import Instance, SolveStatus  # noqa: E402
from optimizer.solve import solve  # noqa: E402

STAGES = ("data", "build", "translate", "solve", "extract", "schedule")


def load_average() -> str:
    """1-minute load average (other processes compete for the 2 cores)."""
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "?"


def lp_stages(inst: Instance) -> dict[str, float]:
    """One run of the direct LP path, timed per stage [s]."""
    t0 = time.perf_counter()
    data = build_data(inst)
    t1 = time.perf_counter()
    lp = build_lp(data)
    t2 = time.perf_counter()
    res = solve_lp_model(lp)
    t3 = time.perf_counter()
    if not res.optimal:
        raise RuntimeError(f"LP not optimal: {res.status}")
    ev_kw, st_kw, assign = assign_lp_solution(lp, data, res.x)
    t4 = time.perf_counter()
    make_schedule(
        inst, data, strategy="cost", status=SolveStatus.OPTIMAL, ev_kw=ev_kw, st_kw=st_kw, assign=assign
    )
    t5 = time.perf_counter()
    out = {
        "data": t1 - t0,
        "build": t2 - t1,
        "translate": res.translate_s,
        "solve": res.solve_s,
        "extract": t4 - t3,
        "schedule": t5 - t4,
        "solve_cpu": res.solve_cpu_s,
        "columns": float(lp.n_col),
        "rows": float(lp.n_row),
    }
    out["total"] = sum(out[s] for s in STAGES)
    return out


def pyomo_lp(inst: Instance) -> dict[str, float]:
    """The same LP through the Pyomo reference model: build and solve (incl. translation) [s]."""
    from optimizer.model.pyomo_model import build_model, solve_model

    data = build_data(inst)
    t0 = time.perf_counter()
    m = build_model(data)
    t1 = time.perf_counter()
    res = solve_model(m)
    return {"build": t1 - t0, "solve": res.seconds, "total": time.perf_counter() - t0}


def per_charger_milp(minutes: int) -> dict[str, Any]:
    """Seed 003 with per-charger binaries (the formulation the class model replaces)."""
    import pyomo.environ as pyo

    from optimizer.model.pyomo_model import build_model, solve_model

    data = build_data(company_fleet(step_minutes=minutes))
    t0 = time.perf_counter()
    m = build_model(data, per_charger=True)
    build_s = time.perf_counter() - t0
    res = solve_model(m, time_limit_s=120.0)
    return {
        "termination": res.termination,
        "gap": None if res.mip_gap is None else f"{res.mip_gap:.1e}",
        "binaries": len(m.x),
        "build": build_s,
        "solve": res.seconds,
        "cost": round(float(pyo.value(m.cost)), 3) if res.has_solution else None,
    }


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    """Per-key median over runs."""
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


def main() -> int:
    """Run the benchmark, print tables, optionally write JSON."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[278, 1000, 10000])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--pyomo", action="store_true", help="also time the Pyomo reference LP (<= 1,000 EVs)")
    ap.add_argument(
        "--per-charger", action="store_true", help="also time seed 003 with one binary per charger (slow)"
    )
    ap.add_argument("--output", type=Path, default=None)
    args = ap.parse_args()
    report: dict[str, Any] = {"lp": {}, "pyomo_lp": {}, "milp": {}}

    print("96-step cost LP (seed 001 fleet scaled), median of", args.runs, "runs [s]")
    head = f"{'EVs':>6} {'cols':>8} {'rows':>6} " + " ".join(f"{s:>9}" for s in STAGES)
    head += f" {'total':>7} {'solve()':>8} {'solve CPU':>9} {'load':>5}"
    print(head)
    for n in args.sizes:
        inst = fleet(n)
        runs = [lp_stages(inst) for _ in range(args.runs)]
        walls = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            s = solve(inst, "cost")
            walls.append(time.perf_counter() - t0)
            assert s.status == SolveStatus.OPTIMAL, s.message
        med = median_of(runs)
        med["solve_call"] = statistics.median(walls)
        report["lp"][n] = med
        print(
            f"{n:>6} {int(med['columns']):>8} {int(med['rows']):>6} "
            + " ".join(f"{med[s]:>9.3f}" for s in STAGES)
            + f" {med['total']:>7.3f} {med['solve_call']:>8.3f} {med['solve_cpu']:>9.3f} {load_average():>5}"
        )
        sys.stdout.flush()
    if args.pyomo:
        print("\nPyomo reference model of the same LP (one run) [s]")
        for n in [n for n in args.sizes if n <= 1000]:
            r = pyomo_lp(fleet(n))
            report["pyomo_lp"][n] = r
            print(f"{n:>6}  build {r['build']:.3f}  solve {r['solve']:.3f}  total {r['total']:.3f}")
            sys.stdout.flush()

    print("\nseed 003 MILP (20 EVs, 4 chargers, PV, BESS), median of", args.runs, "runs [s]")
    for minutes in (60, 15):
        inst = company_fleet(step_minutes=minutes)
        rows = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            s = solve(inst)
            rows.append((time.perf_counter() - t0, s))
        wall = statistics.median(r[0] for r in rows)
        s = rows[0][1]
        report["milp"][minutes] = {
            "status": s.status.value,
            "mip_gap": s.mip_gap,
            "build": s.metrics.build_seconds,
            "solve": s.metrics.solve_seconds,
            "wall": wall,
            "objective": s.objective_value,
        }
        print(
            f"  {24 * 60 // minutes:>3} steps: {s.status.value}, gap {s.mip_gap or 0:.1e}, "
            f"build {s.metrics.build_seconds:.3f}, solve {s.metrics.solve_seconds:.3f}, wall {wall:.3f}, "
            f"objective {s.objective_value or 0:.2f}, load {load_average()}"
        )
    if args.per_charger:
        print("\nseed 003 with seed 003's literal x[e,c,t] (one binary per charger), one run, limit 120 s")
        for minutes in (60, 15):
            report["milp_per_charger"] = report.get("milp_per_charger", {})
            report["milp_per_charger"][minutes] = per_charger_milp(minutes)
            r = report["milp_per_charger"][minutes]
            print(
                f"  {24 * 60 // minutes:>3} steps: {r['termination']}, gap {r['gap']}, "
                f"{r['binaries']} binaries, build {r['build']:.3f}, solve {r['solve']:.3f}, "
                f"cost {r['cost']}, load {load_average()}"
            )
    if args.output:
        args.output.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
