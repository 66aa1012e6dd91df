"""Seed paper reproductions: our figures for each seed case next to the baselines (not a test).

    .venv/bin/python benchmarks/optimizer_seeds.py [--output FILE]

Prints, per case, every strategy's metrics (the figures quoted in docs/optimizer.md), plus:
seed 001 the reduction against uncontrolled; seed 002 profit with V2G against cost without;
seed 003 the site and EV-attributable cost (site cost minus the cost of the same site without EVs,
its BESS optimised too); seed 004 service times of the optimum, the baselines and the paper's
three cases recomputed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from optimizer.cases.seed001 import fleet  # noqa: E402
from optimizer.cases.seed002 import aggregator  # noqa: E402
from optimizer.cases.seed003 import company_fleet  # noqa: E402
from optimizer.cases.seed004 import paper_cases, serial_smallest_first, shared_source  # noqa: E402
from optimizer.problem import Instance, Schedule  # noqa: E402
from optimizer.solve import solve  # noqa: E402
from optimizer.strategies import BASELINES  # noqa: E402


def row(name: str, s: Schedule) -> dict[str, Any]:
    """The figures of one schedule."""
    m = s.metrics
    return {
        "strategy": name,
        "status": s.status.value,
        "objective": s.objective_value,
        "energy_cost": round(m.energy_cost, 2),
        "total_cost": round(m.total_cost, 2),
        "peak_kw": round(m.peak_grid_kw, 1),
        "unmet_kwh": round(m.unmet_kwh, 2),
        "delivered_kwh": round(m.delivered_kwh, 1),
        "soc_compliance": m.soc_compliance,
        "pv_self": None if m.pv_self_consumption is None else round(m.pv_self_consumption, 3),
        "co2_kg": None if m.co2_kg is None else round(m.co2_kg, 1),
        "v2g_kwh": round(m.v2g_discharged_kwh, 1),
        "service_h": round(m.service_time_h, 3),
        "seconds": round(m.build_seconds + m.solve_seconds, 3),
    }


def table(title: str, rows: list[dict[str, Any]]) -> None:
    """Print rows as an aligned text table."""
    print(f"\n{title}")
    keys = list(rows[0])
    print("  " + " ".join(f"{k:>14}" for k in keys))
    for r in rows:
        print("  " + " ".join(f"{'-' if r[k] is None else r[k]!s:>14}" for k in keys))


def strategies(inst: Instance, optimizing: str) -> list[dict[str, Any]]:
    """The optimizing strategy, then every baseline."""
    return [row(optimizing, solve(inst, optimizing))] + [row(b, solve(inst, b)) for b in BASELINES]


def main() -> int:
    """Run all seed cases."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--output", type=Path, default=None)
    args = ap.parse_args()
    report: dict[str, Any] = {}

    rows = strategies(fleet(), "cost")
    report["seed001"] = rows
    table("seed 001: 278-car fleet, 96 x 15 min, ToU prices, headroom", rows)
    opt, unc = rows[0], rows[1]
    print(
        f"  cost {unc['energy_cost']} -> {opt['energy_cost']} "
        f"({100 * (1 - opt['energy_cost'] / unc['energy_cost']):.1f} % lower), "
        f"peak {unc['peak_kw']} -> {opt['peak_kw']} kW, CO2 {unc['co2_kg']} -> {opt['co2_kg']} kg"
    )

    v2g = row("profit (V2G)", solve(aggregator(), "profit"))
    smart = row("cost (no V2G)", solve(aggregator(v2g=False), "cost"))
    unc2 = row("uncontrolled", solve(aggregator(v2g=False), "uncontrolled"))
    report["seed002"] = [v2g, smart, unc2]
    table("seed 002: 12 V2G EVs, hourly day-ahead prices, wear 0.025/kWh", [v2g, smart, unc2])

    for minutes in (60, 15):
        inst = company_fleet(step_minutes=minutes)
        rows = strategies(inst, "cost")
        no_ev = inst.model_copy(update={"evs": []})
        site_opt = solve(no_ev, "cost").metrics.energy_cost
        site_idle = solve(no_ev, "uncontrolled").metrics.energy_cost
        for r in rows:
            base = site_opt if r["strategy"] == "cost" else site_idle
            r["ev_cost"] = round(r["energy_cost"] - base, 2)
        report[f"seed003_{minutes}min"] = {
            "rows": rows,
            "site_without_evs": {"bess_opt": site_opt, "idle": site_idle},
        }
        table(f"seed 003: 20 EVs / 4 chargers, PV, BESS, {24 * 60 // minutes} x {minutes} min", rows)
        print(f"  site without EVs: {site_idle:.2f} (BESS idle), {site_opt:.2f} (BESS optimised)")

    inst = shared_source()
    rows = [row("service_time", solve(inst))] + [row(b, solve(inst, b)) for b in BASELINES]
    report["seed004"] = {
        "rows": rows,
        "paper_cases": paper_cases(),
        "serial_smallest_first": serial_smallest_first(),
    }
    table("seed 004: 4 EVs (3.7/4.6/6.6/7.4 kWh), one 22 kW source, 1-min steps", rows)
    for k, v in paper_cases().items():
        print(f"  paper {k}: completion {[round(x, 3) for x in v]} h, total {sum(v):.3f} h")
    print(f"  whole source, smallest first (continuous optimum): total {sum(serial_smallest_first()):.3f} h")
    if args.output:
        args.output.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
