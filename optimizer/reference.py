"""Carry the previous plan into the next rolling-horizon solve (OCPP K16: no churn for no gain).

Pure: a snapshot and the site's previous plan document in, the snapshot with each EV's
`reference_kw` (what the previous plan gave the same transaction, per step of the new horizon)
out. The model then prefers that plan wherever it costs no more than `objective.stickiness`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from evfleet.isotime import parse_iso
from optimizer.snapshot import Snapshot


def reference_for(previous_plan: Mapping[str, Any], key: str, tx_ref: str, start: datetime,
                  step_s: float, steps: int) -> list[float | None] | None:
    """The previous plan's limits for EVSE `key` on the new step grid; None when it planned another
    transaction (`tx_ref`) there, used another step length or does not overlap the new horizon."""
    limits = previous_plan.get("evses", {}).get(key)
    if not limits or previous_plan.get("transactions", {}).get(key) != tx_ref:
        return None
    if abs(float(previous_plan.get("step_s", 0)) - step_s) > 1e-6:
        return None
    offset_s = (start - parse_iso(previous_plan["start"])).total_seconds()
    offset = round(offset_s / step_s)
    if abs(offset * step_s - offset_s) > 1e-3 or offset >= len(limits):
        return None
    if offset < 0:
        return [None] * min(-offset, steps) + [float(v) for v in limits[:max(0, steps + offset)]]
    window: list[float | None] = [float(v) for v in limits[offset:offset + steps]]
    return window + [None] * (steps - len(window))


def with_references(snap: Snapshot, previous_plan: Mapping[str, Any] | None, stickiness: float) -> Snapshot:
    """`snap` whose EVs carry the previous plan as `reference_kw`, weighted by `stickiness`."""
    inst = snap.instance
    objective = inst.objective.model_copy(update={"stickiness": stickiness})
    evs = inst.evs
    if previous_plan and stickiness > 0:
        step_s = inst.step_minutes * 60.0
        evs = [ev.model_copy(update={"reference_kw": reference_for(
            previous_plan, snap.ev_evse.get(ev.id, ""), ev.id, inst.start, step_s, inst.steps)})
            for ev in evs]
    return replace(snap, instance=inst.model_copy(update={"evs": evs, "objective": objective}))
