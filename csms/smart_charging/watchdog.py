"""The metered watchdog of the smart-charging service (`tick`, every `watchdog_interval_s`).

Metered power against what each EVSE was allowed -> non-compliance (budgeted at what it draws,
`evse.noncompliant`); metered site power against the site limit -> alarm (`site.over_limit`:
event, metric, MQTT, dashboard) and a corrective pass that lowers the others (`safety.share_fairly`
after `enforce_limit`); refusing EVSEs past their backoff are probed again (`probes`). It reads
only the EVSEs with a new reading or a changed limit, a running clock, or a retry due
(`metered`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge

from csms.smart_charging import planner, probes, provisional, quiet, sending
from csms.smart_charging.evse import EvseInfo
from csms.smart_charging.safety import share_fairly
from csms.smart_charging.site_alarm import Verdict
from csms.smart_charging.work import Work
from evfleet.events import EventType
from evfleet.store.port import StoreWrite

if TYPE_CHECKING:
    from csms.smart_charging.service import SmartChargingService

log = logging.getLogger(__name__)

OVER_LIMIT = Gauge("evfleet_site_over_limit", "1 while metered site power is above the site limit",
                   ["site"])
OVER_LIMIT_ALARMS = Counter("evfleet_site_over_limit_alarms_total",
                            "Over-limit alarms raised (metered site power above the limit for too long)",
                            ["site"])
SITE_METERED_KW = Gauge("evfleet_site_metered_kw", "Metered power of a site's sessions", ["site"])
NONCOMPLIANT = Gauge("evfleet_noncompliant_evses", "EVSEs drawing more than their accepted limit",
                     ["site"])
NONCOMPLIANT_MARKED = Counter("evfleet_noncompliant_marked_total",
                              "EVSEs marked non-compliant (drew above their accepted limit too long)")


async def queue_ticks(svc: SmartChargingService) -> None:
    """Every `watchdog_interval_s`: a metered check (`Work.TICK` -> `tick`) of each held site,
    one at a time per site (a slow site is not queued a second tick)."""
    while True:
        await asyncio.sleep(svc.settings.watchdog_interval_s)
        for site_id in list(svc.held):
            if site_id not in svc._tick_queued:  # a slow site gets one tick at a time
                svc._tick_queued.add(site_id)
                svc.enqueue(site_id, Work.TICK, None)


async def tick(svc: SmartChargingService, site_id: str) -> None:
    """The metered watchdog of one site (module doc).

    Works from `svc.metered` (`metered` module): it reads only the EVSEs with a new reading or a
    changed limit, those whose (non-)compliance clock runs, and refusing EVSEs whose retry is due;
    the site's metered sum comes from the readings in memory."""
    mono = time.monotonic()
    now_s = svc.clock.timestamp()
    state = svc.metered
    for evse in sorted(state.unsited):  # readings that came before their station's site was known
        site = await svc.station_site(evse[0])
        state.place(evse, site)
        state.dirty.setdefault(site, set()).add(evse)
    due = sorted(state.take(site_id))
    refusing = probes.refusing_due(svc, site_id, now_s)
    infos = await svc.evse_infos(sorted(set(due) | set(refusing))) if due or refusing else {}
    limit_w = await svc.site_limit_w(site_id)
    changed, cleared, flagged = False, False, 0
    pending: set[tuple[str, int]] = set()
    stale: set[tuple[str, int]] = set()
    peaks = StoreWrite()  # new metered maxima, one write for the site (a fleet starts charging at once)
    for n, evse in enumerate(due):
        await sending.pause_every(n)  # a reading that comes meanwhile is judged next pass (`dirty`)
        info = infos[f"{evse[0]}/{evse[1]}"]
        seen = state.power.get(evse)
        if seen is None:  # its session ended while this pass read the records (state.drop)
            continue
        if seen[0] != info.tx_ref:  # a reading of another session: not counted, not judged
            svc._noncompliant.forget(info.key)
            svc._compliant.forget(info.key)
            if info.tx_ref:
                stale.add(evse)  # the EVSE's record may not show its new session yet: read again
            else:
                state.drop(evse)
            continue
        if seen[1] > info.metered_max_w + 100.0:
            peaks.evse_fields[evse] = {"metered_max_w": repr(seen[1])}
        verdict = await _judge(svc, site_id, info, seen[1], now_s, mono, state.taken_at.get(evse))
        changed |= verdict == "raised"
        cleared |= verdict == "cleared"
        if info.noncompliant_w is not None:
            flagged += 1
            state.untrusted.add(evse)  # it has shown it does not obey: its readings count in full
        else:
            state.untrusted.discard(evse)
        if info.noncompliant_w is not None or info.key in svc._noncompliant or info.key in svc._compliant:
            pending.add(evse)  # a clock runs (or may run out): judged every pass, reading or not
    state.pending[site_id], state.stale[site_id] = pending, stale
    await svc.store.write(peaks)
    metered_w = state.total_w(site_id, now_s)
    NONCOMPLIANT.labels(site_id).set(flagged)
    SITE_METERED_KW.labels(site_id).set(metered_w / 1000.0)
    changed |= await _over_limit(svc, site_id, metered_w, limit_w, mono)
    if site_id in svc._fallback and site_id not in svc._silent and provisional.optimizer_silent(
            svc._late_since.get(site_id), mono, svc.settings.optimizer_silent_after_s, svc.plan_seen_any):
        changed = True  # the optimizer went silent: every session re-shares (share_fairly)
    if changed or cleared or refusing:  # what EVSEs count may change: the next re-share reads the site
        quiet.drop(svc, site_id)
    if changed:
        await svc.enforce_limit(site_id, "watchdog")
        await share_fairly(svc, site_id)
    elif cleared:  # counted lower now: nothing to lower; the paced re-share hands out what it freed
        svc.reshare_soon(site_id)
    if refusing:
        await probes.probe_refusing(svc, site_id, refusing, infos, now_s)


def allowed_when_taken_w(info: EvseInfo, taken_at_s: float | None, now_s: float,
                         held_w: float | None = None) -> float:
    """What the EVSE was allowed when a reading stored at `taken_at_s` was taken: its limit now, or,
    for a reading stored before that limit was answered (`EvseInfo.limit_since_s`), the higher of
    it and the limit before (the record's `previous_series_w`; its maximum when that is unknown,
    e.g. before its first default). After a boot wave a station metering every 30 s had a reading
    taken before its 0 W default arrived judged against that default for longer than
    `noncompliant_after_s`, and was marked (324 of 5,000 stations in one harness run). A station
    above both its old and its new limit is still over; its next reading is judged on the new one.
    A reading taken under an earlier period of the profile in force (a step profile that steps
    down later) is judged against the higher of that period and now: a station metering every
    30 s that obeyed a 3.6 A period was marked against the 2.8 A period that followed (482 marks
    in a 5,000-station harness run whose stations report their connectors at boot).
    `held_w` (`MeteredState.held_at`): the highest limit among the session's profiles the station may
    have applied when it took the reading (every one sent by then and not yet replaced), however many
    were answered since: the record keeps only the one before the last, and a reading followed by two
    lower profiles before the next one (a re-share, then another) was judged against the second
    (15-487 marks per 5,000-station harness run whose stations report their connectors at boot)."""
    series = info.allowed(now_s)
    allowed = planner.value_at(series, now_s)
    if held_w is not None:
        allowed = max(allowed, held_w)
    if taken_at_s is not None and taken_at_s < now_s:
        allowed = max(allowed, planner.value_at(series, taken_at_s))
    since = info.limit_since_s()
    if taken_at_s is None or since is None or taken_at_s >= since:
        return allowed
    rec = info.record or {}
    before = rec.get("previous_series_w") if info.has_profile() else None
    if not before:
        return max(allowed, info.electrical.max_power_w, info.metered_max_w)
    return max(allowed, planner.value_at([(float(t), float(w)) for t, w in before], taken_at_s))


def held_w(svc: SmartChargingService, info: EvseInfo, taken_at_s: float | None) -> float | None:
    """`MeteredState.held_at` for the EVSE's reading stored at `taken_at_s`, after merging the held
    profiles its record carries (`MeteredState.adopt`: sent by the node that held the site's lease
    before this one)."""
    if taken_at_s is None:
        return None
    svc.metered.adopt(info.ident, info.record)
    return svc.metered.held_at(info.ident, info.tx_ref, taken_at_s)


async def _judge(svc: SmartChargingService, site_id: str, info: EvseInfo, drawn: float, now_s: float,
                 mono: float, taken_at_s: float | None = None) -> str | None:
    """One metered EVSE against what it is allowed: "raised" if it is newly marked non-compliant
    or draws more than its mark (it counts more now), "cleared" if its mark was cleared (it counts
    its limit again, less), None if nothing changed."""
    if not info.steerable or not info.online:
        return None
    allowed = allowed_when_taken_w(info, taken_at_s, now_s, held_w(svc, info, taken_at_s))
    over = drawn > allowed + max(svc.settings.noncompliance_tolerance_w, 0.05 * allowed)
    if info.noncompliant_w is None:
        if svc._noncompliant.update(info.key, over, mono):
            await _set_noncompliant(svc, site_id, info, drawn, allowed)
            return "raised"
        return None
    if over and drawn > info.noncompliant_w + 100.0:
        await _set_noncompliant(svc, site_id, info, drawn, allowed)
        return "raised"
    if svc._compliant.update(info.key, not over, mono):
        await _set_noncompliant(svc, site_id, info, None, allowed)
        return "cleared"
    return None


async def _over_limit(svc: SmartChargingService, site_id: str, metered_w: float, limit_w: float,
                      mono: float) -> bool:
    """Raise or clear the site's over-limit alarm (`site_alarm`: the decision); True if stations
    were newly marked. `metered_w` counts a reading taken before its session's latest accepted
    profile at most at that profile (`MeteredState.total_w`); a raised alarm is cleared on the
    readings as taken."""
    alarms = svc.alarms
    as_taken_w = (svc.metered.total_w(site_id, svc.clock.timestamp(), capped=False)
                  if site_id in alarms.raised else metered_w)
    decision = alarms.judge(site_id, metered_w, as_taken_w, limit_w, mono)
    OVER_LIMIT.labels(site_id).set(1 if decision.over else 0)
    if decision.verdict is Verdict.RAISE:
        OVER_LIMIT_ALARMS.labels(site_id).inc()
        log.error("site %s: metered %.1f kW above the limit %.1f kW for more than %.0f s",
                  site_id, metered_w / 1000, limit_w / 1000, alarms.after_s)
        await _site_alarm(svc, site_id, "over", metered_w, limit_w)
        await _mark_overdrawing(svc, site_id)
        return True
    if decision.verdict is Verdict.CLEAR:
        await _site_alarm(svc, site_id, "cleared", metered_w, limit_w)
    return False


async def _mark_overdrawing(svc: SmartChargingService, site_id: str) -> None:
    """The alarm's corrective pass: whoever draws above its limit is budgeted at its draw now (every
    metered EVSE of the site is read for it: an alarm is rare)."""
    now_s = svc.clock.timestamp()
    for info in (await svc.evse_infos(svc.metered.all_of(site_id))).values():
        seen = svc.metered.power.get(info.ident)
        if seen is None or seen[0] != info.tx_ref or not info.steerable or not info.online:
            continue
        taken_at = svc.metered.taken_at.get(info.ident)
        allowed = allowed_when_taken_w(info, taken_at, now_s, held_w(svc, info, taken_at))
        if info.noncompliant_w is None and seen[1] > allowed + svc.settings.noncompliance_tolerance_w:
            await _set_noncompliant(svc, site_id, info, seen[1], allowed)


async def _site_alarm(svc: SmartChargingService, site_id: str, state: str, metered_w: float,
                      limit_w: float) -> None:
    now = svc.clock.now()
    fields = {"over_limit": "1" if state == "over" else "0", "metered_kw": repr(round(metered_w / 1000, 3)),
              "over_limit_changed_at": now.isoformat()}
    await svc.store.write(StoreWrite(site_fields={site_id: fields}, events=[svc._fields(
        EventType.SITE_OVER_LIMIT, site_id, {"state": state, "metered_kw": round(metered_w / 1000, 3),
                                             "limit_kw": round(limit_w / 1000, 3)})]))


async def _set_noncompliant(svc: SmartChargingService, site_id: str, info: EvseInfo, drawn: float | None,
                            allowed: float) -> None:
    """Mark (drawn W) or clear (None) an EVSE's non-compliance; event + log."""
    w = StoreWrite()
    if drawn is None:
        w.evse_deleted[info.ident] = ["noncompliant_w"]
        log.info("%s complies with its limit again", info.key)
    else:
        if info.noncompliant_w is None:
            NONCOMPLIANT_MARKED.inc()
            log.warning("%s draws %.0f W above its accepted limit %.0f W: non-compliant, budgeted at "
                        "what it draws", info.key, drawn, allowed)
        w.evse_fields[info.ident] = {"noncompliant_w": repr(drawn)}
    info.noncompliant_w = drawn
    if drawn is None:  # counted in the site's sum as metered, even a reading taken before a decrease
        svc.metered.untrusted.discard(info.ident)
    else:
        svc.metered.untrusted.add(info.ident)
    w.events.append(svc._fields(EventType.EVSE_NONCOMPLIANT, site_id, {
        "noncompliant": drawn is not None, "drawn_w": drawn, "allowed_w": round(allowed, 1)},
        info=info))
    await svc.store.write(w)
