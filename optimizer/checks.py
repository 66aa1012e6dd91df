"""Pre-solve consistency checks (PyPSA `consistency.py` style): why an instance cannot be met.

`diagnose(data)` lists the reasons hard constraints cannot all hold, in operator terms. `solve`
adds them to the message of a fallback schedule, so "infeasible" comes with the EV or step to fix.
"""

from __future__ import annotations

import numpy as np

from optimizer.model.data import ProblemData


def diagnose(data: ProblemData, limit: int = 5) -> list[str]:
    """Up to `limit` human-readable reasons the instance's hard constraints cannot all be met."""
    out: list[str] = []
    over = data.base_load_kw - data.pv_kw - data.import_limit_kw
    for t in np.flatnonzero(over > 1e-9)[:limit]:
        out.append(
            f"step {t}: base load {data.base_load_kw[t]:g} kW minus PV {data.pv_kw[t]:g} kW exceeds the "
            f"import limit {data.import_limit_kw[t]:g} kW before any EV charges"
        )
    if data.unmet_penalty_per_kwh is None and data.n_ev:
        reach = (data.p_max_kw * data.efficiency[:, None] * data.step_h).sum(axis=1)
        for e in np.flatnonzero(reach < data.need_kwh - 1e-6)[:limit]:
            out.append(
                f"ev {data.ev_ids[e]}: needs {data.need_kwh[e]:g} kWh but can take at most "
                f"{reach[e]:.3g} kWh before departure at its power limit"
            )
        headroom = np.maximum(data.import_limit_kw - data.base_load_kw + data.pv_kw, 0.0)
        st_kwh = float((data.st_initial_kwh - data.st_final_kwh).clip(min=0).sum())
        total_reach = float((headroom * data.step_h).sum() * data.efficiency.max()) + st_kwh
        if data.need_kwh.sum() > total_reach + 1e-6:
            out.append(
                f"the EVs need {data.need_kwh.sum():g} kWh in total but the site can deliver at most "
                f"{total_reach:.4g} kWh within its import limits"
            )
    return out[:limit]
