"""The optimizer worker's output (docs/redis-schema.md): a site's plan and per-EVSE schedule documents
built from a solve (`plan_documents`, pure), and written to Redis with their `schedule.planned` event
(`write_plan`). `planned_kw_at` reads a plan back (the worker's meter-drift check, the demo).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from evfleet.events import EventType, event_fields
from evfleet.isotime import parse_iso
from evfleet.records import EvsePlan, SitePlan
from evfleet.store.multi import SlotMulti
from optimizer import plan_json
from optimizer.problem import Schedule
from optimizer.snapshot import Snapshot

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from evfleet.keys import Keys

STREAM_MAXLEN = 100_000


def plan_status(snap: Snapshot, limit_kw: float, status: str, message: str) -> tuple[str, str]:
    """The plan's (status, message): `over_limit` with the figures when the fixed load alone
    (refusing, offline, non-compliant stations, idle reservations) exceeds the site limit."""
    if snap.fixed_load_kw > limit_kw + 1e-3:
        note = (f"fixed load {snap.fixed_load_kw:.1f} kW (stations that cannot be steered, offline "
                f"or non-compliant, and idle reservations) exceeds the site limit {limit_kw:.1f} kW; "
                f"steerable sessions get 0")
        return "over_limit", f"{note}; {message}" if message else note
    return status, message


def plan_documents(site_id: str, snap: Snapshot, schedule: Schedule, *, plan_id: str, limit_kw: float,
                   computed_at: datetime, solve_s: float, strategy: str) -> tuple[dict[str, Any],
                                                                                   dict[str, dict[str, Any]]]:
    """(site plan, {`sid/eid`: per-EVSE schedule}) documents of docs/redis-schema.md."""
    inst = snap.instance
    step_s = int(round(inst.step_minutes * 60))
    status, message = plan_status(snap, limit_kw, schedule.status.value, schedule.message)
    evses: dict[str, list[float]] = {}
    per_evse: dict[str, dict[str, Any]] = {}
    zeros = [0.0] * inst.steps
    power = np.array([schedule.ev_power_kw.get(ev_id, zeros) for ev_id in snap.ev_evse], dtype=float)
    # rounded DOWN to 1 W: a plan document never gives an EVSE more than the solve did (site limit)
    power = np.floor(np.maximum(power.reshape(len(snap.ev_evse), inst.steps), 0.0) * 1000.0 + 1e-6) / 1000.0
    for (ev_id, key), row in zip(snap.ev_evse.items(), power.tolist(), strict=True):
        limits = row
        evses[key] = limits
        per_evse[key] = EvsePlan(
            plan_id=plan_id, site_id=site_id, tx_ref=ev_id, start=inst.start, step_s=step_s,
            limits_kw=limits, strategy=strategy, status=status, computed_at=computed_at,
            note=snap.notes.get(ev_id, ""), unmet_kwh=round(schedule.ev_unmet_kwh.get(ev_id, 0.0), 3),
        ).encode()
    planned = np.round(snap.fixed_load_kw + power.sum(axis=0), 3).tolist()
    plan = SitePlan(
        plan_id=plan_id, site_id=site_id, start=inst.start, step_s=step_s, planned_kw=planned,
        limit_kw=limit_kw, fixed_load_kw=round(snap.fixed_load_kw, 3), strategy=strategy,
        status=status, message=message, objective=schedule.objective_value,
        computed_at=computed_at, solve_s=round(solve_s, 4), evses=evses,
        transactions={key: ev_id for ev_id, key in snap.ev_evse.items()}, prices=snap.prices,
        notes={key: [doc["note"], doc["unmet_kwh"]] for key, doc in per_evse.items()},
    ).encode()
    return plan, per_evse


def planned_kw_at(plan: Mapping[str, Any], key: str, at: datetime) -> float | None:
    """The plan's limit for EVSE `key` at `at` (None if the EVSE is not in the plan)."""
    limits = plan.get("evses", {}).get(key)
    if not limits:
        return None
    start = parse_iso(plan["start"])
    i = int((at - start).total_seconds() // plan["step_s"])
    return float(limits[min(max(i, 0), len(limits) - 1)])


async def write_plan(redis: Redis, keys: Keys, now: datetime, site_id: str, plan_id: str,
                     plan: dict[str, Any], per_evse: dict[str, dict[str, Any]],
                     previous: Mapping[str, Any]) -> None:
    """One MULTI: DEL the schedules of EVSEs the plan no longer has, MSET the new ones, SET the site
    plan, XADD `schedule.planned` (stamped `now`). Four commands whatever the fleet size (redis-py
    spends ~0.1 ms of Python per command and reply: a SET per EVSE was most of a 1,000-session
    re-plan's writes).

    On a Redis Cluster (`evfleet.store.multi.SlotMulti`): one DEL + MSET MULTI per slot of the EVSE
    schedules first, then the site plan and its event in the site's slot, so a worker that reads
    `schedule.planned` finds every schedule of that plan."""

    def schedule_key(key: str) -> str:
        sid, eid = key.rsplit("/", 1)
        return keys.planned_schedule(sid, int(eid))

    stale = [schedule_key(key) for key in previous.get("evses", {}) if key not in per_evse]
    docs = {schedule_key(key): plan_json.dumps(doc) for key, doc in per_evse.items()}
    multi = SlotMulti(redis)
    for pipe, names in multi.grouped(stale):
        pipe.delete(*names)
    for pipe, names in multi.grouped(list(docs)):
        if multi.cluster:  # redis-py refuses MSET in a cluster pipeline, even within one slot
            for name in names:
                pipe.set(name, docs[name])
        else:
            pipe.mset({name: docs[name] for name in names})
    multi.then()
    site = multi.on(keys.site_plan(site_id))
    site.set(keys.site_plan(site_id), plan_json.dumps(plan))
    site.xadd(keys.site_events(site_id), event_fields(
        EventType.SCHEDULE_PLANNED, now, site_id=site_id,
        data={"plan_id": plan_id, "status": plan["status"], "strategy": plan["strategy"],
              "solve_s": plan["solve_s"], "evses": len(per_evse), "objective": plan["objective"],
              "message": plan["message"]}), maxlen=STREAM_MAXLEN, approximate=True)
    await multi.execute()
