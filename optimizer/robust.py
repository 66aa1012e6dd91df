"""The robust option (`Instance.robustness`): plan for more energy and an earlier departure than estimated.

Pure: `planned_evs(instance)` returns the EVs the models plan for. An energy margin m plans
need × (1 + m), capped at the battery room; for a session a rolling re-plan already charged, the whole
session is planned for (1 + m) × session_need_kwh, i.e. a remaining need of max(energy_kwh, (1 + m) ×
session_need_kwh − session_delivered_kwh) (a margin on the remaining need alone would shrink to nothing
as the estimate is delivered); a departure margin of M minutes plans each EV to leave
⌈M / step_minutes⌉ steps earlier, never before arrival + 1. The second is the deterministic equivalent of
a chance constraint on the departure: with the actual departure ~ N(estimate, σ), M = z_{1−α} σ makes the
plan finish before the EV leaves with probability ≥ 1 − α. With `estimated_only`, the energy margin goes
only to EVs whose `energy_estimated` is set (their need is a forecast, not reported over ISO 15118).
`optimizer.model.data.build_data` applies it, so every strategy (optimizers and baselines) plans on the
same needs and departures.
"""

from __future__ import annotations

import math

from optimizer.problem import EV, Instance


def departure_shift_steps(instance: Instance) -> int:
    """Whole steps the planned departure moves earlier."""
    minutes = instance.robustness.departure_margin_minutes
    return math.ceil(minutes / instance.step_minutes - 1e-9) if minutes > 0 else 0


def planned_evs(instance: Instance) -> list[EV]:
    """The EVs with the site's margins applied (the instance's own list when both margins are 0)."""
    margin = instance.robustness.energy_margin
    shift = departure_shift_steps(instance)
    if margin <= 0 and shift == 0:
        return instance.evs
    out = []
    only = instance.robustness.estimated_only
    for ev in instance.evs:
        m = 0.0 if only and not ev.energy_estimated else margin
        need = ev.energy_kwh * (1.0 + m)
        if ev.session_need_kwh is not None:
            need = max(ev.energy_kwh, (1.0 + m) * ev.session_need_kwh - ev.session_delivered_kwh)
        need = min(need, ev.capacity_kwh - ev.initial_kwh)
        departure = max(ev.arrival + 1, ev.departure - shift)
        out.append(ev.model_copy(update={"energy_kwh": need, "departure": departure}))
    return out
