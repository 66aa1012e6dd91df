"""What the smart-charging service does for one site, step by step (I/O through the service).

- `apply_plan`: the optimizer's plan -> TxProfiles, churn-filtered (K16), sent in the order
  `budget.next_batch` allows;
- `enforce_limit`: a lower site limit is honoured at once, optimizer or not
  (`budget.scale_factor`);
- `needs_received`, `tx_ended`: session bookkeeping;
- `check_ev_schedule`: K17, the EV's own plan against the limits we sent (`budget.check_ev_plan`).

Every decision is taken by `budget` (the site-limit rule) and `conversion` (payloads); these
functions read the state, call them and send through `sending`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter

from csms.smart_charging import budget, conversion, planner, sending
from csms.smart_charging.evse import EvseInfo, ev_plan_series, planned_before, planned_in_flight
from csms.smart_charging.planner import Series
from evfleet.events import Event
from evfleet.records import SitePlan
from evfleet.store.port import StoreWrite
from evfleet.txprofile import ProfileError, energy_report

if TYPE_CHECKING:
    from csms.smart_charging.service import SmartChargingService

log = logging.getLogger(__name__)

K17_VIOLATIONS = Counter("evfleet_k17_schedule_violations_total",
                         "EV charging schedules (NotifyEVChargingSchedule) above the limits we sent")
PASSES = Counter("evfleet_smart_charging_passes_total",
                 "Smart-charging passes over a site, by what ran: plan (a plan applied), limit:CAUSE (the "
                 "applied limits exceeded the site limit and sessions were scaled down), fallback/silent "
                 "(a site entered fallback or silent mode), behind (a late site whose stored plan covers its "
                 "late sessions: not silent), share (a whole-site headroom share), "
                 "share-skipped (one that could not change anything, `quiet`)",
                 ["pass"])
CHURN_SKIPPED = Counter("evfleet_k16_replans_skipped_total",
                        "Re-planned schedules not sent because no limit moved by more than the threshold")


# --- plan application (K15 delivery, K16) ---------------------------------------------------
def _plan_payloads(svc: SmartChargingService, plan: SitePlan, evses: dict[str, EvseInfo],
                   ) -> tuple[dict[str, dict[str, Any]], dict[str, Series]]:
    """TxProfiles of the plan for the EVSEs still running the planned session (and their series)."""
    payloads: dict[str, dict[str, Any]] = {}
    planned: dict[str, Series] = {}
    for key, limits_kw in plan.evses.items():
        info = evses.get(key)
        ref = plan.transactions.get(key)
        if info is None or not info.online or not info.steerable or not ref or info.tx_ref != ref:
            continue
        try:
            payload = conversion.build(info, info.transaction_id, plan.start, plan.step_s, limits_kw,
                                       prices=plan.prices, now=svc.clock.now())
        except ProfileError as err:
            log.warning("plan %s: cannot build a profile for %s: %s", plan.plan_id, key, err)
            continue
        payloads[key] = payload
        planned[key] = conversion.abs_series(payload, info.electrical)
        svc._plan_energy[id(payload)] = energy_report(start=plan.start, step_s=plan.step_s,
                                                      limits_kw=limits_kw, payload=payload,
                                                      evse=info.electrical)
    return payloads, planned


async def apply_plan(svc: SmartChargingService, site_id: str,
                     seen: list[dict[str, EvseInfo]] | None = None) -> dict[str, int]:
    """Bring the stations of a site to its latest plan, safely ordered. Returns counters. Its read
    of the site goes into `seen` when given (the answers recorded into it as they came)."""
    plan = SitePlan.decode(await svc.store.site_plan(site_id))  # None: no plan, or not readable
    stats = {"sent": 0, "accepted": 0, "skipped": 0, "blocked": 0, "failed": 0}
    if plan is None:
        return stats
    t_real = time.perf_counter()
    PASSES.labels("plan").inc()
    now_s = svc.clock.timestamp()
    evses = await svc.site_evses(site_id)
    if seen is not None:
        seen.append(evses)
    applied = await sending.counted(evses, now_s, sending.Slices())
    payloads, planned = _plan_payloads(svc, plan, evses)
    site_w = await svc.site_budget_w(site_id)
    budget_w = min(plan.limit_kw * 1000.0 or site_w, site_w)
    threshold_w = svc.settings.replan_threshold_kw * 1000.0
    # interim profiles always give way to the plan (K15 follow-up): no churn filter for them;
    # a provisional share is replaced only if the plan moves it by more than the threshold
    churnable = {k: v for k, v in applied.items() if k in planned and evses[k].has_profile()
                 and (evses[k].record or {}).get("kind") in ("plan", "plan-step", "provisional")}
    decision = budget.churn_filter(churnable, planned, budget_w, threshold_w, now_s)
    target = {k: applied[k] for k in applied}
    target.update(decision.target)
    if decision.skipped:
        w = StoreWrite()
        for key in decision.skipped:
            w.incr(evses[key].tx_ref, "replans_skipped")
        await svc.store.write(w)
        stats["skipped"] += len(decision.skipped)
        CHURN_SKIPPED.inc(len(decision.skipped))
    try:
        stats_run = await sending.execute(svc, site_id, evses, applied, target, payloads, budget_w,
                                          plan.plan_id, "plan")
    finally:
        for payload in payloads.values():
            svc._plan_energy.pop(id(payload), None)
    for k, v in stats_run.items():
        stats[k] += v
    if stats["blocked"]:  # applied again once defaults are confirmed (more headroom)
        svc._plan_blocked.add(site_id)
    else:
        svc._plan_blocked.discard(site_id)
    log.info("site %s plan %s applied in %.3f s (real): %s", site_id, plan.plan_id,
             time.perf_counter() - t_real, " ".join(f"{k}={v}" for k, v in stats.items()),
             extra={"site": site_id, "plan_id": plan.plan_id, "profiles": dict(stats)})
    return stats


# --- fail-safe: a lower site limit is honoured at once, optimizer or not ----------------------
ENFORCE_ROUNDS = 8
"""Rounds of one enforcement pass at most (each lowers the stations that answered further)."""
CONFIRM_GAP_S = sending.CONFIRM_GAP_S
"""An enforcement round awaits its decreases until every one is answered or none has been for
this long (the answers stopped coming: the rest are slow, silent or gone)."""


async def enforce_limit(svc: SmartChargingService, site_id: str, cause: str = "",
                        seen: list[dict[str, EvseInfo]] | None = None) -> dict[str, int]:
    """If the applied limits exceed the (new) site limit, scale the steerable ones down now (each
    round's read of the site goes into `seen` when given, as `apply_plan`'s).

    Every steerable, online session's applied series is multiplied by one factor
    (`budget.scale_factor`) so the sum fits the site limit at every instant (fixed loads, i.e.
    unsteerable and offline EVSEs and those with a call out, count as they are). All changes are
    decreases; they go out together, beside the site's task (`aside`), and are awaited until
    every one is answered or their answers stop for `CONFIRM_GAP_S`. Then the site is read
    again: a station that refused now counts at its maximum, one whose decrease is still out at
    its old limit (a decrease counts max(old, new) = old until confirmed, `aside`), so if the sum
    is still over, the stations that answered are scaled down further, at once, not after the
    silent ones' call timeout. Their calls stay out beside the site's task; their answers are
    recorded as usual. The optimizer's next plan (or the fair share) then redistributes the
    power. Returns counters: `blocked` = decreases still unanswered when the pass ended.
    """
    stats = {"sent": 0, "accepted": 0, "blocked": 0, "failed": 0}
    sent: list[asyncio.Task[bool | None]] = []
    for _ in range(ENFORCE_ROUNDS):
        evses = await svc.site_evses(site_id)  # the answers so far, and the calls still out
        if seen is not None:
            seen.append(evses)
        now_s = svc.clock.timestamp()
        payloads = await _decreases(svc, site_id, evses, now_s, cause)
        if not payloads:
            break
        plan_id = f"limit-{int(now_s)}"
        for key, payload in payloads.items():
            task = svc.aside.start(svc, site_id, evses[key], payload, plan_id, "limit", batch=True)
            if task is not None:
                sent.append(task)
        stats["sent"] += len(payloads)
        await _confirmations([t for t in sent if not t.done()])
    for task in sent:
        if not task.done():
            stats["blocked"] += 1
        elif not task.cancelled() and task.result():
            stats["accepted"] += 1
        else:
            stats["failed"] += 1
    if stats["blocked"]:
        log.warning("site %s: %d of %d limit decreases unanswered after %.1f s without an answer; "
                    "they count at their old limits, the stations that answered were lowered for them",
                    site_id, stats["blocked"], stats["sent"], CONFIRM_GAP_S)
    return stats


async def _confirmations(tasks: list[asyncio.Task[bool | None]]) -> None:
    """Wait until every task is done or none finished for `CONFIRM_GAP_S` (`enforce_limit`)."""
    pending = set(tasks)
    while pending:
        done, pending = await asyncio.wait(pending, timeout=CONFIRM_GAP_S,
                                           return_when=asyncio.FIRST_COMPLETED)
        if not done:
            return


async def _decreases(svc: SmartChargingService, site_id: str, evses: dict[str, EvseInfo], now_s: float,
                     cause: str) -> dict[str, dict[str, Any]]:
    """The profiles that scale the movable sessions down so the site fits (`enforce_limit`);
    empty if it fits already or nothing can move."""
    budget_w = await svc.site_budget_w(site_id)
    slices = sending.Slices()
    applied = await sending.counted(evses, now_s, slices)
    # a non-compliant EVSE draws what it draws: it is a fixed load, lowering its profile frees nothing
    # nor is one with a call out beside the site's task (`aside`, a decrease of this pass among them):
    # it keeps max(before, that profile)
    movable = [k for k, e in evses.items()
               if e.tx_ref and e.online and e.steerable and e.noncompliant_w is None
               and not svc.aside.busy(e)]
    moving = set(movable)  # `k in` the list of movable sessions per EVSE was quadratic in the site
    fixed = [applied[k] for k in applied if k not in moving]
    points = planner.grid(list(applied.values()), now_s)
    factor = budget.scale_factor(planner.total(fixed, points),
                                 planner.total([applied[k] for k in movable], points), budget_w)
    if not movable or factor is None:
        return {}
    payloads: dict[str, dict[str, Any]] = {}
    for n, key in enumerate(movable):
        await sending.pause_every(n)  # pure work on this pass's read: yielding changes no decision
        if all(w <= planner.TOLERANCE_W for _, w in applied[key]):
            continue  # at 0 W already: nothing to lower (no profile built, 20,000 on a full site)
        info = evses[key]
        scaled = [(t, w * factor) for t, w in applied[key]]
        base = (info.record or {}).get("accepted_profile") if info.has_profile() else None
        if base is None:
            base = conversion.build(info, info.transaction_id, svc.clock.now(), 900, [0.0])
        payload = conversion.step_payload(info, scaled, base, svc.clock.timestamp())
        if planner.max_abs_diff_w(applied[key], conversion.abs_series(payload, info.electrical),
                                  now_s) <= planner.TOLERANCE_W:
            continue  # rounded to what it holds: sending it lowers nothing
        payloads[key] = payload
    if payloads:
        PASSES.labels(f"limit:{cause}").inc()
        log.warning("site %s: applied limits exceed the site limit %.0f W; scaling sessions by %.3f "
                    "now (%s)", site_id, budget_w, factor, cause)
    return payloads


# --- session bookkeeping ------------------------------------------------------------------------
async def needs_received(svc: SmartChargingService, event: Event, batch: StoreWrite | None = None) -> None:
    """Count the EV's charging needs on its session (K15 bookkeeping); into `batch` when given
    (the stream loop writes a read's bookkeeping at once, `SmartChargingService.dispatch`). The
    session's needs fields (`energy_at_needs_wh`, ...) are written with the needs
    (`csms.store.state.StateStore.charging_needs`), whichever node acts for the site."""
    txid = event.tx_ref
    if not txid:
        return
    w = StoreWrite() if batch is None else batch
    w.incr(txid, "needs_received")
    if batch is None:
        await svc.store.write(w)


async def tx_ended(svc: SmartChargingService, event: Event) -> None:
    """The session's record now counts 0 W; a non-compliance mark ends with the session."""
    if event.evse_id is None:
        return
    ident = (event.station_id, int(event.evse_id))
    await svc.store.write(StoreWrite(evse_deleted={ident: ["noncompliant_w"]}))
    record = await svc.store.applied_profile(ident)
    if not record or record.get("tx_ref") != event.tx_ref:
        return
    now_s = svc.clock.timestamp()
    record.update({"kind": "ended", "applied_series_w": [[now_s, 0.0]], "limit_w": 0.0})
    await svc.store.write(StoreWrite(profiles={ident: record},
                                     evse_fields={ident: {"applied_limit_w": "0.0"}}))


async def ended_unseen(svc: SmartChargingService, evses: dict[str, EvseInfo]) -> int:
    """What `tx_ended` does, for every session of a whole-site read that ended without it: its
    `tx.ended` came while no node acted for the site (a take-over, a hand-over: `intake.dispatch`
    passes over the events of sites the node does not hold). Found in the stored state: a
    non-compliance mark on an EVSE without a session (it counted at what it drew, for good: the
    watchdog judges only EVSEs with readings), an applied record of another session than the
    EVSE's running one not yet marked ended. Returns the EVSEs written (the infos updated too)."""
    now_s = svc.clock.timestamp()
    w = StoreWrite()
    for info in evses.values():
        if info.noncompliant_w is not None and not info.tx_ref:
            w.evse_deleted[info.ident] = ["noncompliant_w"]
            info.noncompliant_w = None
        rec = info.record
        if rec and rec.get("tx_ref") and rec.get("tx_ref") != info.tx_ref and rec.get("kind") != "ended":
            record = {**rec, "kind": "ended", "applied_series_w": [[now_s, 0.0]], "limit_w": 0.0}
            w.profiles[info.ident] = record
            w.evse_fields[info.ident] = {"applied_limit_w": "0.0"}
            info.record = record  # a new document (`EvseInfo`: records are read-only)
    if w:
        await svc.store.write(w)
    return len(set(w.evse_deleted) | set(w.profiles))


# --- K17 ------------------------------------------------------------------------------------------
async def check_ev_schedule(svc: SmartChargingService, site_id: str, event: Event) -> dict[str, Any] | None:
    """K17: compare the EV's plan with the profile we applied; record; on breach count + re-send."""
    if event.evse_id is None:
        return None
    infos = await svc.evse_infos([(event.station_id, int(event.evse_id))])
    info = infos.get(f"{event.station_id}/{event.evse_id}")
    txid = event.tx_ref
    if txid:
        await svc.store.write(_incr(txid, "ev_plans_received"))
    if info is None or not info.has_profile():
        return None
    sent_payload = (info.record or {}).get("accepted_profile")
    if not sent_payload:
        return None
    ev_plan = ev_plan_series(event.data, info.electrical)
    if ev_plan is None:
        return None
    ours = conversion.abs_series(sent_payload, info.electrical)
    now_s = svc.clock.timestamp()
    if txid:
        await svc.store.write(_incr(txid, "k17_checks"))
    rec = info.record or {}
    if planned_before(event.data, rec.get("limits_since") or rec.get("sent_at")):
        # made before we sent the limits now applied (for older ones, or the SECC's default): the
        # station renegotiates onto the new ones anyway, so a breach here is not the EV's, and
        # re-sending would renegotiate twice. A later profile with the same limits does not count
        # (`limits_since`): the station does not renegotiate then, so this plan stays the EV's
        if txid:
            await svc.store.write(_incr(txid, "k17_stale"))
        return None
    previous = rec.get("previous_series_w")
    if previous and planned_in_flight(event.data, rec.get("sent_at"), rec.get("answered_at")):
        # the SECC may have offered the previous profile's schedule: only a plan above both breaches
        ours = planner.pointwise(ours, [(float(t), float(w)) for t, w in previous], now_s, "max")
    tol_w = max(50.0, 0.1 * info.electrical.w_per_a())  # one 0.1 A rounding step
    result = budget.check_ev_plan(ev_plan, ours, now_s, tol_w)
    record = await svc.store.ev_schedule(info.ident) or dict(event.data)
    record.update({"within_limits": result.within_limits, "worst_excess_w": round(result.worst_excess_w, 1),
                   "checked_at": svc.clock.now().isoformat()})
    w = StoreWrite(ev_schedules={info.ident: record})
    if txid:
        w.session_fields[txid] = {"ev_plan_received_at": event.ts.isoformat(),
                                  "ev_plan_within_limits": "1" if result.within_limits else "0"}
        if not result.within_limits:
            w.incr(txid, "k17_violations")
    await svc.store.write(w)
    if not result.within_limits:
        await _k17_breach(svc, site_id, info, event, sent_payload, result)
    return record


def _incr(tx_ref: str, name: str) -> StoreWrite:
    w = StoreWrite()
    w.incr(tx_ref, name)
    return w


async def _k17_breach(svc: SmartChargingService, site_id: str, info: EvseInfo, event: Event,
                      sent_payload: dict[str, Any], result: budget.K17Result) -> None:
    """Count and log a breach; re-send our profile once (not again while the same one is breached)."""
    K17_VIOLATIONS.inc()
    txid = event.tx_ref
    rec = info.record or {}
    digest = hashlib.sha1(json.dumps(sent_payload, sort_keys=True).encode()).hexdigest()[:16]
    again = bool(txid) and (await svc.store.session_fields(txid, ["k17_resent_profile"]))[0] == digest
    log.warning("K17: EV plan on %s/%s (tx %s, time base %s; our profile sent %s) exceeds our "
                "limit by %.0f W at %s; %s", info.station_id, info.evse_id, txid,
                event.data.get("time_base"), rec.get("sent_at"), result.worst_excess_w, result.at_s,
                "breach persists after a re-send: not re-sending the same profile again" if again
                else "re-sending profile")
    if again:  # no endless re-send/renegotiation cycle with an EV that ignores the limits
        return
    if svc.aside.busy(info):  # a call to it is out: its answer comes first (one profile out per EVSE)
        log.warning("K17: %s has a profile out; not re-sending ours before its answer", info.key)
        return
    if txid:
        w = _incr(txid, "k17_resent")
        w.session_fields[txid] = {"k17_resent_profile": digest}
        await svc.store.write(w)
    # beside the site's task (`aside`): one station slow to answer holds up nothing else of the site
    svc.aside.start(svc, site_id, info, sent_payload, str(rec.get("plan_id", "")),
                    str(rec.get("kind") or "plan"))
