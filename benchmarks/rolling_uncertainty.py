"""Monte Carlo rolling-horizon evaluation, seed 001 fleet: how much of the perfect-foresight saving is kept.

    .venv/bin/python benchmarks/rolling_uncertainty.py [--runs 1000] [--cars 50] [--energy-margin 1.0]
        [--departure-margin 60] [--output FILE]

Per run: one draw of departures and needs (`optimizer.uncertainty`: seed 001's Gamma law for the 70 %
of cars without ISO 15118, forecast errors for the 30 % that report their needs), then on the same
draw: uncontrolled charging, perfect foresight (one LP on the truth), and the rolling re-plan
(`optimizer.rolling.rolling`, as the worker re-plans) without and with the robust option
(`Instance.robustness`, default energy margin 1.0 and departure margin 60 min). The fleet is
`fleet(cars)`, seed 001's fleet scaled to `cars` (model mix and per-car headroom kept).

Reported per strategy: mean energy cost; unmet energy per car (mean, 95th percentile) and the share of
cars leaving with more than 0.5 kWh unmet; the share of the perfect-foresight saving kept,
(C_unc − C)/(C_unc − C_pf) over the sums of all runs: raw, and adjusted (unmet kWh charged at the peak
price 0.24, as topping it up during the day would cost; energy beyond the true need credited at the night
price 0.09, as it saves that much charging the next night; both per kWh bought at the grid, i.e. / η).
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

from optimizer.cases.seed001 import fleet  # noqa: E402
from optimizer.problem import Robustness  # noqa: E402
from optimizer.rolling import Outcome, perfect_foresight, rolling, uncontrolled  # noqa: E402
from optimizer.uncertainty import Scenario, UncertaintyModel, draw_scenario, seed001_consumption  # noqa: E402

UNMET_PRICE, EXCESS_CREDIT = 0.24, 0.09


def adjusted(o: Outcome, sc: Scenario) -> float:
    """Cost with unmet energy bought at the peak price and energy beyond the need credited at night price."""
    excess = np.maximum(o.delivered_kwh - sc.true_need, 0.0)
    # battery-side kWh bought at the grid: / efficiency
    return (
        o.cost
        + float(UNMET_PRICE * (o.unmet_kwh / sc.efficiency).sum())
        - float(EXCESS_CREDIT * (excess / sc.efficiency).sum())
    )


def summary(rows: dict[str, list[tuple[float, float, np.ndarray]]]) -> dict[str, dict[str, float]]:
    """Per strategy: mean cost, unmet per car, saving kept (raw and adjusted)."""
    unc = np.array([r[0] for r in rows["uncontrolled"]])
    pf = np.array([r[0] for r in rows["perfect"]])
    unc_a = np.array([r[1] for r in rows["uncontrolled"]])
    pf_a = np.array([r[1] for r in rows["perfect"]])
    out = {}
    for name, rs in rows.items():
        cost = np.array([r[0] for r in rs])
        adj = np.array([r[1] for r in rs])
        unmet = np.concatenate([r[2] for r in rs])
        out[name] = {
            "cost": float(cost.mean()),
            "kept_raw": float((unc - cost).sum() / (unc - pf).sum()),
            "kept_adjusted": float((unc_a - adj).sum() / (unc_a - pf_a).sum()),
            "unmet_per_car_kwh": float(unmet.mean()),
            "unmet_p95_kwh": float(np.percentile(unmet, 95)),
            "cars_unmet_share": float((unmet > 0.5).mean()),
        }
    return out


def print_summary(done: int, s: dict[str, dict[str, float]], seconds: float) -> None:
    """One line per strategy."""
    print(f"after {done} runs ({seconds:.0f} s, load {os.getloadavg()[0]:.1f}):")
    for name, v in s.items():
        print(
            f"  {name:>13}: cost {v['cost']:8.2f}  kept raw {100 * v['kept_raw']:6.1f} %  adjusted "
            f"{100 * v['kept_adjusted']:6.1f} %  unmet/car {v['unmet_per_car_kwh']:.2f} kWh (p95 "
            f"{v['unmet_p95_kwh']:.2f})  cars short {100 * v['cars_unmet_share']:.1f} %",
            flush=True,
        )


def main() -> int:
    """Run the Monte Carlo and print the summary every 50 runs."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--cars", type=int, default=50)
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--energy-margin", type=float, default=1.0)
    ap.add_argument("--departure-margin", type=float, default=60.0, help="minutes")
    ap.add_argument("--output", type=Path, default=None)
    args = ap.parse_args()
    robust = Robustness(energy_margin=args.energy_margin, departure_margin_minutes=args.departure_margin)
    print(f"{args.runs} runs, {args.cars} cars, robust option {robust}")
    base = fleet(args.cars)
    kwh_per_km = seed001_consumption(base)
    rng = np.random.default_rng(args.seed)
    model = UncertaintyModel()
    rows: dict[str, list[tuple[float, float, np.ndarray]]] = {
        "uncontrolled": [],
        "perfect": [],
        "rolling": [],
        "rolling_robust": [],
    }
    t0 = time.perf_counter()
    solves = 0
    for run in range(1, args.runs + 1):
        sc = draw_scenario(base, kwh_per_km, model, rng)
        outcomes = {
            "uncontrolled": uncontrolled(base, sc),
            "perfect": perfect_foresight(base, sc),
            "rolling": rolling(base, sc),
            "rolling_robust": rolling(base, sc, robust),
        }
        for name, o in outcomes.items():
            rows[name].append((o.cost, adjusted(o, sc), o.unmet_kwh))
            solves += o.solves
        if run % 50 == 0 or run == args.runs:
            print_summary(run, summary(rows), time.perf_counter() - t0)
    result: dict[str, Any] = {
        "runs": args.runs,
        "cars": args.cars,
        "solves": solves,
        "seconds": time.perf_counter() - t0,
        "summary": summary(rows),
    }
    print(f"{solves} LP solves in {result['seconds']:.0f} s")
    if args.output:
        args.output.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
