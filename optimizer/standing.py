"""Keep the standing plan when a re-plan would change nothing material (OCPP K16, pure).

A re-plan is asked for by events (a site limit re-announced, a repeated needs message, a station
reconnecting) that often change nothing the plan depends on. Re-solving then still moves energy
between EVs wherever equal-cost schedules tie or the EV minimum power forces a reshape, and every
move above the csms's threshold is a TxProfile and an ISO 15118 renegotiation for nothing. So the
worker first compares what the plan was made from (`plan_inputs`, stored in the site plan) with the
new snapshot: `standing_plan_holds` is true when the horizon start, the EVs and their EVSEs, their
departure steps, power limits, minimum power, the site limit, the fixed load and the prices are the
same, and each EV's remaining need is what it was less at most what the plan gave it since
(`ENERGY_TOLERANCE_KWH`; a meter that has not reported yet leaves the need as it was). The worker
then re-publishes the standing plan instead of solving. Anything else (a new or departed EV, a
changed need, limit or price, meter drift, a new step of the rolling horizon) re-solves.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from evfleet.isotime import parse_iso
from evfleet.records import EvsePlan
from optimizer.snapshot import Snapshot

ENERGY_TOLERANCE_KWH = 0.25
"""How far an EV's need may move beyond what the standing plan delivered, and still count as unchanged."""
KW_TOLERANCE = 1e-3


def plan_inputs(snap: Snapshot, min_kw: Mapping[str, float], limit_kw: float, at: datetime) -> dict[str, Any]:
    """What a plan is made from, as stored in the site plan document (`inputs`)."""
    inst = snap.instance
    return {
        "at": at.isoformat(), "start": inst.start.isoformat(), "limit_kw": limit_kw,
        "fixed_load_kw": round(snap.fixed_load_kw, 6), "prices": list(snap.prices),
        "evs": {ev.id: [snap.ev_evse.get(ev.id, ""), round(ev.energy_kwh, 6), ev.departure, ev.max_kw,
                        round(min_kw.get(ev.id, 0.0), 6)] for ev in inst.evs},
    }


def planned_kwh(plan: Mapping[str, Any], key: str, t0: datetime, t1: datetime) -> float:
    """Energy [kWh] the plan gives EVSE `key` between `t0` and `t1`."""
    limits = plan.get("evses", {}).get(key) or []
    start = parse_iso(plan["start"]).timestamp()
    step_s = float(plan["step_s"])
    a, b = t0.timestamp(), t1.timestamp()
    total = 0.0
    for i in range(max(0, int((a - start) // step_s)), min(len(limits), int((b - start) // step_s) + 1)):
        lo, hi = max(a, start + i * step_s), min(b, start + (i + 1) * step_s)
        if hi > lo:
            total += float(limits[i]) * (hi - lo) / 3600.0
    return total


def _offset(earlier: str, later: datetime, step_s: float) -> int | None:
    """Whole steps from `earlier` to `later` (None when not aligned or backwards)."""
    offset_s = (later - parse_iso(earlier)).total_seconds()
    offset = round(offset_s / step_s)
    return offset if offset >= 0 and abs(offset * step_s - offset_s) < 1e-3 else None


def standing_plan_holds(previous: Mapping[str, Any] | None, snap: Snapshot, min_kw: Mapping[str, float],
                        limit_kw: float, now: datetime) -> bool:
    """True when `previous` (a site plan document) was made from the same inputs as `snap` (module doc).

    The horizon may have rolled on by whole steps since: then departures count from the new start and
    the prices must agree where the two horizons overlap."""
    before = (previous or {}).get("inputs")
    if not previous or not before or previous.get("status") not in ("optimal", "feasible"):
        return False
    new = plan_inputs(snap, min_kw, limit_kw, now)
    steps = snap.instance.steps
    shift = _offset(before["start"], snap.instance.start, float(previous["step_s"]))
    if (shift is None or shift >= steps or abs(before["limit_kw"] - limit_kw) > KW_TOLERANCE
            or abs(before["fixed_load_kw"] - new["fixed_load_kw"]) > KW_TOLERANCE
            or before["prices"][shift:] != new["prices"][:steps - shift]
            or before["evs"].keys() != new["evs"].keys()):
        return False
    at = parse_iso(before["at"])
    for ev_id, (key, energy, departure, max_kw, floor_kw) in new["evs"].items():
        old_key, old_energy, old_departure, old_max, old_floor = before["evs"][ev_id]
        if (key != old_key or old_departure >= steps or departure != old_departure - shift
                or abs(max_kw - old_max) > KW_TOLERANCE or abs(floor_kw - old_floor) > KW_TOLERANCE):
            return False
        given = planned_kwh(previous, key, at, now)
        if not old_energy - given - ENERGY_TOLERANCE_KWH <= energy <= old_energy + ENERGY_TOLERANCE_KWH:
            return False
    return True


def kept_documents(previous: Mapping[str, Any], plan_id: str, computed_at: datetime,
                   start: datetime) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(site plan, per-EVSE schedules) re-publishing `previous` under `plan_id` from `start` (its limits
    unchanged; a horizon rolled on by whole steps drops the steps passed and ends with zeros). The
    caller sets `prices` (the tariff from the new start)."""
    shift = _offset(previous["start"], start, float(previous["step_s"])) or 0

    def rolled(values: list[float]) -> list[float]:
        return list(values[shift:]) + [0.0] * min(shift, len(values))

    fixed = float(previous.get("fixed_load_kw", 0.0))
    plan = {**previous, "plan_id": plan_id, "computed_at": computed_at.isoformat(), "solve_s": 0.0,
            "start": start.isoformat() if shift else previous["start"],
            "evses": {key: rolled(limits) for key, limits in previous["evses"].items()},
            "kept": previous.get("kept") or previous["plan_id"],
            "message": "standing plan kept: nothing material changed since it was made"}
    if shift:
        plan["planned_kw"] = list(previous["planned_kw"][shift:]) + [round(fixed, 3)] * shift
    notes = previous.get("notes", {})
    start_at = parse_iso(plan["start"])
    per_evse = {
        key: EvsePlan(plan_id=plan_id, site_id=plan["site_id"], tx_ref=plan["transactions"][key],
                      start=start_at, step_s=plan["step_s"], limits_kw=limits, strategy=plan["strategy"],
                      status=plan["status"], computed_at=computed_at, note=notes.get(key, ["", 0.0])[0],
                      unmet_kwh=notes.get(key, ["", 0.0])[1]).encode()
        for key, limits in plan["evses"].items()}
    return plan, per_evse
