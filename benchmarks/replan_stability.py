"""How much a rolling re-plan moves EVs that nothing material happened to (K16), with and without
stickiness toward the previous plan (not a test).

    .venv/bin/python benchmarks/replan_stability.py [--evs 500] [--steps 40] [--runs 3] [--output FILE]

A flat-price site with 40 % headroom (the cost LP's optimum is highly degenerate there) is solved,
then solved again one step later with each EV's need reduced by what it drew in the first step:
once from scratch and once with the first plan as `reference_kw`. Prints EVs moved by more than
0.5 kW (the csms's default K16 threshold), the largest move, both costs and the median solve time.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from optimizer.cases.rolling import STEP_H, flat_site  # noqa: E402
from optimizer.solve import solve  # noqa: E402


def main() -> None:
    """Run and print the comparison."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--evs", type=int, default=500)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--output", type=Path,
                    default=Path(__file__).parent / "results" / "replan_stability.json")
    args = ap.parse_args()
    n, steps = args.evs, args.steps
    rng = random.Random(1)
    departures = [rng.randint(12, steps) for _ in range(n)]
    energies = [rng.uniform(5, 40) for _ in range(n)]
    first = solve(flat_site(steps, energies, departures))
    p0 = np.array([first.ev_power_kw[f"EV{i}"] for i in range(n)])
    need = [max(0.0, energies[i] - p0[i, 0] * STEP_H) for i in range(n)]
    refs: list[list[float | None]] = [[*p0[i, 1:], None] for i in range(n)]
    rows: list[dict[str, Any]] = []
    for label, stickiness in (("from scratch", 0.0), ("with reference", 1e-3)):
        inst = flat_site(steps, need, departures, shift=1, refs=refs, stickiness=stickiness)
        times = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            again = solve(inst)
            times.append(time.perf_counter() - t0)
        p1 = np.array([again.ev_power_kw[f"EV{i}"] for i in range(n)])
        moves = np.abs(p1[:, :-1] - p0[:, 1:]).max(axis=1)
        rows.append({"re-plan": label, "evs_moved_over_0.5_kw": int((moves > 0.5).sum()),
                     "largest_move_kw": round(float(moves.max()), 3), "cost": round(again.objective_value, 4),
                     "median_solve_s": round(statistics.median(times), 3)})
    print(f"{n} EVs, {steps} steps; first plan cost {first.objective_value:.4f}")
    for r in rows:
        print("  ".join(f"{k}={v}" for k, v in r.items()))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({"evs": n, "steps": steps, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
