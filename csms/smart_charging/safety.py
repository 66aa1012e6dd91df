"""Fail-safe paths of the smart-charging service: headroom shares (the metered watchdog is `watchdog`).

- `share_fairly`: sessions no plan covers get a water-filled share of the headroom the others
  leave (`provisional`): at once when their charging needs arrive (provisional profile), and
  when their plan is late (fallback mode: the planned sessions keep their plan); once the
  optimizer has been silent for `optimizer_silent_after_s`, every steerable session re-shares.
  Re-shared when sessions start and end; changes go through `planner.next_batch` (decreases
  first), so the sum of applied limits stays within the site limit at every instant.
- `watchdog.tick` re-shares through `share_fairly` when it marks a station or the optimizer goes
  silent.

Functions take the service (I/O through its store port); the decisions are in `budget`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from csms.smart_charging import planner, provisional, quiet, sending
from csms.smart_charging.actions import PASSES
from csms.smart_charging.evse import EvseInfo, ev_caps_w
from csms.smart_charging.planner import Series
from evfleet.txprofile import parse_ts

if TYPE_CHECKING:
    from csms.smart_charging.service import SmartChargingService

log = logging.getLogger(__name__)

SHARE_STEP_S = 900
"""Step of the profiles that carry a share (provisional, interim): the plan's step."""


async def share_fairly(svc: SmartChargingService, site_id: str,
                       due: Mapping[tuple[str, int], str] | None = None,
                       arrivals: Collection[tuple[str, int]] | None = None,
                       between: Between | None = None) -> int:
    """Headroom shares for sessions no plan covers (`provisional` module); returns profiles accepted.

    `due`: sessions whose interim timer fired; if one of them still has no profile, the plan is
    late and the site enters fallback mode (left when the next plan is applied): the sessions
    without a current plan share what the planned ones and the fixed loads leave, until the
    optimizer has been silent for `optimizer_silent_after_s`; then every online, steerable,
    compliant session shares. `arrivals`: sessions whose charging needs just arrived get a
    provisional share of the unallocated headroom at once (whatever the mode). `between`: the
    pass runs between two rounds of a longer one (`serve_arrivals`): only the arrivals share,
    and every EVSE counts at least what that pass counts for it.
    """
    if not due and not arrivals and site_id not in svc._fallback:
        return 0
    if between is None:
        quiet.drop(svc, site_id)  # this pass may change what EVSEs count; `_share` notes it again
    if between is not None and between.evses is not None and site_id not in svc._refused:
        # between two rounds: the longer pass's read (it counts at least that, `Between.applied`),
        # only the arrivals read afresh; a whole-site read per arrival batch was most of the
        # smart-charging CPU at 300 stations. A refusal since (counted higher): read it all
        evses = dict(between.evses)
        evses.update(await svc.evse_infos(sorted(arrivals or ())))
    else:
        evses = await svc.site_evses(site_id)
        PASSES.labels("share").inc()
    plan = await current_plan(svc, site_id)
    if due and between is None:
        # late = no profile yet, or only a provisional share (possibly 0 W on a full site) while
        # no plan at all came for `interim_profile_after_s`: then the optimizer is not answering,
        # and freed headroom must reach it (it would otherwise wait for the optimizer, however
        # long). While plans keep coming, the next one covers it: no fallback mode for that.
        stalled = (time.monotonic() - svc._plan_seen.get(site_id, -math.inf)
                   > svc.settings.interim_profile_after_s)
        waiting = [i for i in evses.values() if (i.station_id, i.evse_id) in due
                   and i.tx_ref == due[(i.station_id, i.evse_id)] and i.online and i.steerable
                   and not (i.has_profile() and (not stalled or plan.refs.get(i.key) == i.tx_ref))]
        if waiting and site_id not in svc._fallback:
            log.warning("site %s: no plan for %d session(s) after %.1f s: they share the headroom the "
                        "plan leaves", site_id, len(waiting), svc.settings.interim_profile_after_s)
            svc._fallback.add(site_id)
            svc._late_since[site_id] = time.monotonic()
            PASSES.labels("fallback").inc()
    fallback = site_id in svc._fallback and between is None  # between two rounds: arrivals only
    now_s = svc.clock.timestamp()
    slices = sending.Slices()  # the per-EVSE loops of the pass yield every few ms (a 20,000-EVSE site)
    candidates: dict[str, bool] = {}
    for k, e in evses.items():
        if slices.due():
            await slices.pause()  # as before `_share`'s loops: a call out since counts in `_execute`
        if e.tx_ref and e.online and e.steerable and e.noncompliant_w is None \
                and not svc.aside.busy(e):  # a call out (`aside`): it counts max(old, new), waits
            candidates[k] = e.has_profile() and plan.refs.get(k) == e.tx_ref
    for ident in arrivals or ():
        info = evses.get(f"{ident[0]}/{ident[1]}")
        if info is not None and svc.aside.busy(info):  # its share once that call is answered
            svc._starved.setdefault(site_id, set()).add(ident)
            svc.aside.note_held(svc, site_id, ident)
    silent = fallback and await _silent(svc, site_id, evses, candidates)
    arrived = None if fallback else frozenset(f"{sid}/{eid}" for sid, eid in arrivals or ())
    sharers = provisional.sharers(candidates, arrived, silent)
    if not sharers:
        return 0
    kind = "interim" if fallback else "provisional"
    return await _share(svc, site_id, evses, sharers, kind, now_s, None if silent else plan, between, slices)


async def _silent(svc: SmartChargingService, site_id: str, evses: Mapping[str, EvseInfo],
                  candidates: Mapping[str, bool]) -> bool:
    """The site's optimizer is taken as silent (`provisional.optimizer_silent`), unless the site's
    stored plan already covers every candidate session without a profile of the current plan.

    An optimizer that has planned every session has nothing more to say: it writes no new plan
    until something changes, and plans for other sites stop too once they are all planned. Such a
    site is late only on this node (its plan event still queued behind a long pass or a stream
    read that fell behind, or the session's profile not answered): re-sharing every session then
    undid the plan, a TxProfile per session (issue 14: 25 of 100 sites, 3,171 profiles in a
    minute, the worker idle). So past the bound the stored plan is read afresh (not this node's
    view of the last plan it handled): if it covers them, the site is not silent and its lateness
    counts again from now (a plan read per bound, at most). Sessions no stored plan covers (new
    ones, with the optimizer gone) make it silent as before."""
    if site_id in svc._silent:
        return True
    mono = time.monotonic()
    bound_s = svc.settings.optimizer_silent_after_s
    if not provisional.optimizer_silent(svc._late_since.get(site_id), mono, bound_s, svc.plan_seen_any):
        return False
    late = [k for k, planned in candidates.items() if not planned]
    refs = (await svc.store.site_plan(site_id) or {}).get("transactions")
    if isinstance(refs, dict) and all(refs.get(k) == evses[k].tx_ref for k in late):
        log.info("site %s: late for %.0f s, but its stored plan covers its %d session(s) without a "
                 "plan profile: this node is behind, the optimizer is not silent", site_id,
                 mono - svc._late_since.get(site_id, mono), len(late))
        svc._late_since[site_id] = mono
        PASSES.labels("behind").inc()
        return False
    log.warning("site %s: no plan for %.0f s: the optimizer is taken as silent, every session "
                "shares the headroom fairly", site_id, bound_s)
    svc._silent.add(site_id)
    PASSES.labels("silent").inc()
    return True


@dataclass
class Between:
    """What a longer pass counts for each EVSE between two of its rounds (`serve_arrivals`); the
    provisional pass run there fills `done` with the EVSEs it changed and what they count now."""

    applied: Mapping[str, Series]
    done: dict[str, tuple[EvseInfo, Series]] = field(default_factory=dict)
    evses: Mapping[str, EvseInfo] | None = None
    """The longer pass's EVSEs: the provisional pass reads only the arrivals afresh."""


async def serve_arrivals(svc: SmartChargingService, site_id: str, evses: dict[str, EvseInfo],
                         applied: dict[str, Series], target: dict[str, Series],
                         payloads: Mapping[str, Any], busy: Collection[tuple[str, int]] = ()) -> None:
    """Between two rounds of a longer pass (plan, limit, re-share): the needs that arrived since
    get their provisional share now, not after the whole pass (issue 12's fast first answer).

    Safe at that point, also while some of the pass's profiles are still out (`busy`, while the
    pass awaits a batch's answers): the provisional pass counts every EVSE at least at max(what
    the longer pass counts for it, what it is going to give it) (`applied`, which holds a change
    of unknown outcome at max(old, new), and `target`; a change out now is either its target or
    its lower half min(old, target), both within that max), so it hands out only headroom the
    longer pass leaves unallocated even once it is done, decreases first (`_execute`). Needs on an
    EVSE with a profile out wait for its answer (`busy`). Afterwards the longer
    pass counts the new shares (`applied`), so its next batches (`budget.next_batch`) fit them.
    Not nested.
    """
    arrivals = svc._provisional_due.get(site_id)
    if not arrivals or site_id in svc._between:
        return
    held = {a for a in arrivals if a in busy}
    if held == arrivals:
        return
    svc._provisional_due[site_id] = held
    if not held:
        del svc._provisional_due[site_id]
    arrivals = arrivals - held
    svc._between.add(site_id)
    now_s = svc.clock.timestamp()
    between = Between({k: planner.pointwise(v, target[k], now_s, "max") if k in target else v
                       for k, v in applied.items()}, evses=evses)
    try:
        await share_fairly(svc, site_id, arrivals=arrivals, between=between)
    finally:
        svc._between.discard(site_id)
    for key, (info, series) in between.done.items():
        evses[key] = info  # its record now (the session may have started after the pass read the site)
        applied[key] = series
        if key not in payloads:
            target[key] = series


async def _share(svc: SmartChargingService, site_id: str, evses: dict[str, EvseInfo], sharers: list[str],
                 kind: str, now_s: float, plan: provisional.PlanView | None,
                 between: Between | None = None, slices: sending.Slices | None = None) -> int:
    """Give `sharers` their headroom shares (decreases first, `_execute`); profiles accepted.
    `slices`: the pass's time slices (its loops yield every few ms: a 20,000-EVSE site)."""
    slices = slices or sending.Slices()
    applied = await _counted(evses, now_s, between, slices)
    sharing = set(sharers)  # `k in` a list of 10,000 sharers per EVSE was most of a fallback re-share
    others = [applied[k] for k in applied if k not in sharing]
    budget_w = await svc.site_budget_w(site_id)
    caps, mins = {}, {}
    masks = {}  # the optimizer is alive: only its cheapest steps (module provisional)
    for k in sharers:
        if slices.due():
            await slices.pause()
        caps[k], mins[k] = ev_caps_w(evses[k])
        if svc.settings.fallback_limit_kw is not None:
            caps[k] = min(caps[k], svc.settings.fallback_limit_kw * 1000.0)
        mask = None if plan is None else provisional.cheap_mask(
            plan.prices, plan.start_s, plan.step_s, now_s, _departure_s(evses[k]), caps[k])
        if mask is not None:
            masks[k] = mask
    if slices.due():
        await slices.pause()
    shares: dict[str, Series] = {}  # in steps: pure work on this pass's read, the same shares
    await _stepped(provisional.headroom_shares_steps(others, budget_w, caps, mins, now_s, masks, shares),
                   slices)
    if kind == "provisional":  # no headroom now (e.g. defaults still out): 0 W, shares again later
        starved = {evses[k].ident for k in sharers if planner.value_at(shares[k], now_s) < 1.0
                   and (k not in masks or planner.value_at(masks[k], now_s) > 0.0)}
        if starved:
            svc._starved.setdefault(site_id, set()).update(starved)
    target, payloads = await _changes(svc, site_id, evses, sharers, shares, applied, kind, now_s, slices)
    if not payloads and kind == "interim" and plan is None and between is None:  # silent: nothing sent
        quiet.note(svc, site_id, sharers, shares, applied, caps, mins, budget_w)
    if not payloads:
        return 0
    plan_id = f"{kind}-{int(now_s)}"
    unchanged = [k for k in payloads if kind == "provisional" and not evses[k].has_profile()
                 and planner.max_abs_diff_w(applied[k], target[k], now_s) <= planner.TOLERANCE_W]
    stats = await svc._execute(site_id, evses, applied, target, payloads, budget_w, plan_id, kind)
    stats["accepted"] += await _answer_unchanged(svc, site_id, evses, applied, unchanged, payloads, plan_id)
    if between is not None:
        between.done.update({k: (evses[k], applied[k]) for k in payloads})
    log.info("site %s: %s shares (limit %.0f W, %d others): %s -> %s", site_id, kind, budget_w,
             len(others), _summary(shares, now_s), stats)
    return stats["accepted"]


async def _stepped(steps: Iterator[None], slices: sending.Slices) -> None:
    """Run a pure computation's steps (`provisional.headroom_shares_steps`), leaving the event
    loop between two of them once the current slice is used up."""
    for _ in steps:
        if slices.due():
            await slices.pause()


async def _counted(evses: Mapping[str, EvseInfo], now_s: float, between: Between | None,
                   slices: sending.Slices) -> dict[str, Series]:
    """What each EVSE of the pass counts now (`EvseInfo.applied`), at least what a longer pass
    counts for it (`between`: a change of unknown outcome), in time slices."""
    applied = await sending.counted(evses, now_s, slices)  # pure work on this pass's read
    if between is not None:
        for k, series in between.applied.items():
            applied[k] = planner.pointwise(applied[k], series, now_s, "max") if k in applied else series
    return applied


async def _changes(svc: SmartChargingService, site_id: str, evses: Mapping[str, EvseInfo], sharers: list[str],
                   shares: Mapping[str, Series], applied: Mapping[str, Series], kind: str, now_s: float,
                   slices: sending.Slices) -> tuple[dict[str, Series], dict[str, dict[str, Any]]]:
    """(target, payload) of each sharer whose share changes what it counts; the others are left
    out, so the pass's ordering (`budget.next_batch`) counts them at what they count now.

    Only the changes get a profile built: what a share allows once built (rounded to the EVSE's
    rate unit, capped by the EV) is worked out once per (share, EVSE electrical data, EV limits)
    in the pass (`allowed`), and a sharer whose share allows what it counts already is skipped
    before any profile is built (on a 20,000-session site most of them, every pass: issue 14). Also
    skipped: a share the EVSE holds already (`_holds_share`: K16's threshold for rises), and a
    share equal to the limit of the EVSE's default that is out (`defaults.DefaultsState.pending_w`:
    its answer brings the EVSE there; until then it counts what it counts now, its maximum).
    Skipping never lets the sum exceed the budget: a skipped EVSE counts at what it counts now, and
    the ordering checks every increase against that. A provisional share is never skipped for
    being equal (its EV gets an answer, `_answer_unchanged`)."""
    target: dict[str, Series] = {}
    payloads: dict[str, dict[str, Any]] = {}
    allowed: dict[tuple[Any, ...], Series] = {}
    threshold_w = svc.settings.replan_threshold_kw * 1000.0
    for k in sharers:
        if slices.due():
            await slices.pause()  # pure work on this pass's read: yielding changes no decision
        info, share = evses[k], shares[k]
        if _holds_share(info, applied[k], share, now_s, threshold_w):
            continue  # already holds this share: no profile built (a 20,000-session re-share)
        memo = (tuple(share), info.electrical, info.ev_limits())
        new, payload = allowed.get(memo), None
        try:
            if new is None:
                payload = _share_payload(svc, info, share, now_s)
                allowed[memo] = new = svc._abs_series(payload, info)
            if kind != "provisional" and _unchanged(svc, site_id, info, applied[k], new, now_s):
                continue
            if payload is None:  # sent: built for this EVSE (its own ids and start), counted as built
                payload = _share_payload(svc, info, share, now_s)
                new = svc._abs_series(payload, info)
        except Exception as err:  # one EVSE's profile must not stop the others
            log.error("site %s: no %s profile for %s: %r", site_id, kind, k, err)
            continue
        if info.has_profile() and (info.record or {}).get("kind", "").startswith(("interim", "provisional")) \
                and planner.max_abs_diff_w(applied[k], new, now_s) <= planner.TOLERANCE_W:
            continue
        payloads[k], target[k] = payload, new
    return target, payloads


def _unchanged(svc: SmartChargingService, site_id: str, info: EvseInfo, applied: Series, new: Series,
               now_s: float) -> bool:
    """A share that changes nothing the EVSE counts (`_changes`): what it counts already, or the
    limit of its default that is out (what it counts once that is answered)."""
    if planner.max_abs_diff_w(applied, new, now_s) <= planner.TOLERANCE_W:
        return True
    if info.has_profile():  # its session's own profile: a default does not replace it
        return False
    pending_w = svc.defaults.pending_w(site_id, info.ident)
    return pending_w is not None and planner.max_abs_diff_w(planner.constant(pending_w, now_s), new,
                                                            now_s) <= planner.TOLERANCE_W


def _summary(shares: Mapping[str, Series], now_s: float, listed: int = 20) -> str:
    """The shares now for a log line: each of a few sessions, else how many and their range (a
    20,000-session dict was built and formatted on every pass)."""
    if len(shares) <= listed:
        return str({k: round(planner.value_at(v, now_s)) for k, v in shares.items()})
    now_w = [planner.value_at(v, now_s) for v in shares.values()]
    return f"{len(now_w)} sessions, {min(now_w):.0f}-{max(now_w):.0f} W now"


def _holds_share(info: EvseInfo, applied: Series, share: Series, now_s: float, threshold_w: float) -> bool:
    """The EVSE already holds a share profile of this session that the new share would not change
    materially: equal to it (within `planner.TOLERANCE_W` at every instant), or below it everywhere
    and by at most K16's `replan_threshold_kw` (a rise smaller than the threshold is not re-sent, as
    for plans; keeping the lower limit never raises the sum, and a decrease is always sent)."""
    kind = str((info.record or {}).get("kind", ""))
    if not (info.has_profile() and kind.startswith(("interim", "provisional"))):
        return False
    gap = planner.max_abs_diff_w(applied, share, now_s)
    return gap <= planner.TOLERANCE_W or (gap <= threshold_w and planner.is_below(applied, share, now_s))


async def _answer_unchanged(svc: SmartChargingService, site_id: str, evses: Mapping[str, EvseInfo],
                            applied: dict[str, Series], keys: list[str], payloads: Mapping[str, Any],
                            plan_id: str) -> int:
    """Provisional shares equal to what their EVSE already counts (a 0 W default on a full site):
    no change for `next_batch`, but the EV's needs still get their answer, a TxProfile now (issue
    12: within 300 ms), so it does not plan on a schedule the site cannot give. Each raises
    nothing, so it fits whatever else is in flight. Returns profiles accepted."""
    accepted = 0
    sends: dict[asyncio.Future[tuple[bool, Series]], tuple[str, tuple[str, int]]] = {
        asyncio.ensure_future(svc._send(site_id, evses[k], payloads[k], plan_id, "provisional")):
            (k, evses[k].ident) for k in keys}

    def answered(key: str, result: tuple[bool, Series] | BaseException) -> None:
        nonlocal accepted
        if isinstance(result, BaseException):  # it raised nothing: the EVSE counts as before
            log.error("site %s: provisional answer to %s failed: %r", site_id, key, result)
            return
        ok, applied[key] = result
        accepted += ok

    await sending.await_answers(svc, site_id, sends, answered)
    return accepted


def _departure_s(info: EvseInfo) -> float | None:
    """The EV's announced departure (its charging needs of this session), None if unknown."""
    needs = info.needs if info.needs and info.needs.get("tx_ref") == info.tx_ref else {}
    try:
        return parse_ts(str(needs["departure_time"])).timestamp() if needs.get("departure_time") else None
    except (TypeError, ValueError):
        return None


def _share_payload(svc: SmartChargingService, info: EvseInfo, share: Series, now_s: float) -> dict[str, Any]:
    """A TxProfile never above `share` at any instant (a constant at its minimum if the stepped
    one would not fit, e.g. after compression to the EV's maxScheduleTuples)."""
    low_kw = min(w for _, w in share) / 1000.0
    base = svc._build(info, info.transaction_id, svc.clock.now(), 900, [low_kw])
    if len(share) == 1:
        return base
    # 15-min steps from now, each the share's minimum over the step (the plan's step size: few
    # periods, so compression rarely merges; 1-min steps over a day cost ~1 s per pass at 1,000 EVSEs)
    end_s = max(t for t, _ in share) + SHARE_STEP_S
    limits_kw = [w / 1000.0 for w in planner.series_to_steps(share, now_s, SHARE_STEP_S, end_s)]
    payload = svc._build(info, info.transaction_id, svc.clock.now(), SHARE_STEP_S, limits_kw)
    return payload if provisional.fits(svc._abs_series(payload, info), share, now_s) else base


async def current_plan(svc: SmartChargingService, site_id: str) -> provisional.PlanView:
    """The site's current plan as the sharing sees it (cached until the next plan arrives)."""
    if site_id not in svc._plan_view:
        plan = await svc.store.site_plan(site_id) or {}
        refs = {str(k): str(v) for k, v in (plan.get("transactions") or {}).items()}
        try:
            svc._plan_view[site_id] = provisional.PlanView(
                refs, [float(p) for p in plan["prices"]] if plan.get("prices") else None,
                parse_ts(str(plan["start"])).timestamp(), float(plan["step_s"]))
        except (KeyError, TypeError, ValueError):
            svc._plan_view[site_id] = provisional.PlanView(refs)
    return svc._plan_view[site_id]


def plan_arrived(svc: SmartChargingService, site_id: str) -> None:
    """A plan arrived: fallback (and silent) mode ends; the plan's sessions are read afresh."""
    svc._fallback.discard(site_id)
    svc._silent.discard(site_id)
    svc._late_since.pop(site_id, None)
    svc._plan_view.pop(site_id, None)
    svc._plan_seen[site_id] = svc.plan_seen_any = time.monotonic()
