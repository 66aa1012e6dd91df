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
    offset = plan_offset(previous_plan, start, step_s)
    return None if offset is None else _window(limits, offset, steps)


def plan_offset(previous_plan: Mapping[str, Any], start: datetime, step_s: float) -> int | None:
    """Steps from the previous plan's start to `start` (negative: `start` is earlier); None when the
    plan used another step length or `start` is not on its step grid."""
    if abs(float(previous_plan.get("step_s", 0)) - step_s) > 1e-6:
        return None
    offset_s = (start - parse_iso(previous_plan["start"])).total_seconds()
    offset = round(offset_s / step_s)
    return offset if abs(offset * step_s - offset_s) <= 1e-3 else None


def _window(limits: list[float], offset: int, steps: int) -> list[float | None] | None:
    """`steps` values of `limits` from index `offset`, None where the previous plan has none."""
    if offset >= len(limits):
        return None
    window: list[float | None] = [None] * min(max(-offset, 0), steps)
    window += limits[max(offset, 0):max(offset, 0) + steps - len(window)]  # plan limits are floats
    return window + [None] * (steps - len(window))


def with_references(snap: Snapshot, previous_plan: Mapping[str, Any] | None, stickiness: float) -> Snapshot:
    """`snap` whose EVs carry the previous plan as `reference_kw`, weighted by `stickiness`."""
    inst = snap.instance
    objective = inst.objective.model_copy(update={"stickiness": stickiness})
    evs = inst.evs
    if previous_plan and stickiness > 0:
        offset = plan_offset(previous_plan, inst.start, inst.step_minutes * 60.0)
        limits = previous_plan.get("evses", {}) if offset is not None else {}
        txs = previous_plan.get("transactions", {})
        refs = {}
        for ev in evs:  # the offset is the same for every EV: computed once
            key = snap.ev_evse.get(ev.id, "")
            row = limits.get(key)
            refs[ev.id] = _window(row, offset, inst.steps) if (
                row and offset is not None and txs.get(key) == ev.id) else None
        evs = [ev.model_copy(update={"reference_kw": refs[ev.id]}) for ev in evs]
    return replace(snap, instance=inst.model_copy(update={"evs": evs, "objective": objective}))
