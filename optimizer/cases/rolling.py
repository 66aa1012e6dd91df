"""A flat-price site with 40 % headroom, re-planned some steps later: the K16 re-plan stability case.

The cost LP's optimum is highly degenerate here (every step costs the same), so a re-plan from
scratch moves EVs between equal-cost steps; with the previous plan as `reference_kw` it should not.
Used by `tests/optimizer/test_stickiness.py` and `benchmarks/replan_stability.py`.
"""

from __future__ import annotations

from optimizer.problem import Instance

STEP_MINUTES = 15
STEP_H = STEP_MINUTES / 60.0
EV_MAX_KW = 11.0


def flat_site(steps: int, need_kwh: list[float], departures: list[int], *, shift: int = 0,
              refs: list[list[float | None]] | None = None, stickiness: float = 0.0) -> Instance:
    """One EV per charger, all present from step 0; the site `shift` steps later (departures move
    earlier by `shift`), each EV needing `need_kwh`, with `refs` as references when given."""
    n = len(need_kwh)
    evs = [{"id": f"EV{i}", "charger": f"C{i}", "arrival": 0, "departure": departures[i] - shift,
            "energy_kwh": need_kwh[i], "max_kw": EV_MAX_KW, "capacity_kwh": 100.0, "initial_kwh": 10.0,
            "reference_kw": refs[i] if refs else None} for i in range(n)]
    return Instance.model_validate({
        "start": "2026-01-01T00:00:00Z", "step_minutes": STEP_MINUTES, "steps": steps,
        "site": {"import_limit_kw": 0.4 * n * EV_MAX_KW}, "tariff": {"import_price": 0.25},
        "chargers": [{"id": f"C{i}", "max_kw": EV_MAX_KW} for i in range(n)], "evs": evs,
        "objective": {"unmet_penalty_per_kwh": 10, "stickiness": stickiness}})
