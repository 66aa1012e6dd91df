"""Sending profiles and recording the answers (I/O through the service's store and commands).

- `execute`: send the batches `budget.next_batch` allows until nothing more can move (the
  ordering that keeps the site limit while limits change);
- `send`: one TxProfile; the answer is recorded atomically (applied-profile record, EVSE
  `applied_limit_w`, session counters, `profile.answered` event); the writes of the sends of one
  event-loop turn go out together (`writes.WriteGroup`);
- `refusal`: a station that refused a profile is budgeted at its maximum and backed off.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from prometheus_client import Counter

from csms.command_types import CommandReply, Outcome
from csms.smart_charging import budget, conversion, planner, timeouts
from csms.smart_charging.evse import EvseInfo
from csms.smart_charging.metered import HELD_FIELD
from csms.smart_charging.planner import Series
from evfleet.events import EventType, event_fields
from evfleet.records import stored_float
from evfleet.store.port import StoreWrite

if TYPE_CHECKING:
    from csms.smart_charging.service import SmartChargingService

log = logging.getLogger(__name__)

PROFILES_SENT = Counter("evfleet_smart_charging_profiles_sent_total", "TxProfiles sent", ["kind"])
PROFILES_ANSWERED = Counter("evfleet_smart_charging_profile_answers_total", "Answers to TxProfiles",
                            ["result"])

MAX_ROUNDS = 8

CONFIRM_GAP_S = 0.3
"""Once a site's limit changed, a pass awaits answers only while they keep coming: when none came
for this long the rest are slow, silent or gone (`await_answers`; `actions.enforce_limit`'s rounds
alike), and the site's enforcement does not wait for them."""

PASS_CHUNK = 100
"""EVSEs a site pass handles per event-loop callback in its per-EVSE loops (`execute`'s batch,
`watchdog.tick`'s verdicts, `safety._share`'s profiles): each loop yields to the event loop after
every `PASS_CHUNK` EVSEs (`pause_every`), so station messages are answered between the chunks of
a pass over a large site, not after it (issue 14: 20-30 ms callbacks at 400-800 EVSEs a site,
every watchdog pass). What a pass decides is unchanged: its inputs are read before the loop."""


async def pause_every(n: int, chunk: int = PASS_CHUNK) -> None:
    """Yield to the event loop when `n` (a loop's index) is a non-zero multiple of `chunk`."""
    if n and n % chunk == 0:
        await asyncio.sleep(0)


SLICE_S = 0.004
"""Longest a whole-site loop of a pass holds the event loop in one stretch (`Slices`)."""


class Slices:
    """Time slices of a pass's per-EVSE loop: `due()` is True once `slice_s` has passed since the
    last yield (a clock read, no coroutine per EVSE); then `await pause()`. A loop whose items cost
    from 1 us (nothing to do for an EVSE) to 200 us (a profile built) yields after 4 ms either way,
    where a count (`pause_every`) would hold the loop for 0.1-20 ms."""

    __slots__ = ("_until", "slice_s")

    def __init__(self, slice_s: float | None = None) -> None:
        self.slice_s = SLICE_S if slice_s is None else slice_s
        self._until = time.perf_counter() + self.slice_s

    def due(self) -> bool:
        """The current slice is used up."""
        return time.perf_counter() >= self._until

    async def pause(self) -> None:
        """Yield to the event loop; a new slice starts."""
        await asyncio.sleep(0)
        self._until = time.perf_counter() + self.slice_s


async def counted(evses: Mapping[str, EvseInfo], now_s: float, slices: Slices) -> dict[str, Series]:
    """What each EVSE of a pass counts now (`EvseInfo.applied`), in time slices: 20,000 of them were
    one 40-100 ms stretch of the event loop (issue 14). Pure work on the pass's read: yielding
    changes no decision (an EVSE whose call went out meanwhile is held by `execute`).

    EVSEs that count one value from now on (idle, or in a session without a profile: a start-up
    wave's 20,000) share one series object per value: read-only, as every series; a list and a
    tuple per EVSE alive through the pass were as many objects for each young collection to walk
    (issue 14)."""
    applied: dict[str, Series] = {}
    constants: dict[float, Series] = {}
    for k, e in evses.items():
        if slices.due():
            await slices.pause()
        series = e.applied(now_s)
        if len(series) == 1 and series[0][0] == now_s:
            w = series[0][1]
            shared = constants.setdefault(w, series)
            if math.copysign(1.0, shared[0][1]) == math.copysign(1.0, w):  # 0.0 and -0.0: one key
                series = shared
        applied[k] = series
    return applied


def event(svc: SmartChargingService, etype: EventType, site_id: str, data: Mapping[str, Any],
          info: EvseInfo | None = None, ref: str | None = None) -> dict[str, str]:
    """Stream fields of an event about a site (or one of its EVSEs), stamped now.

    `ref` is the session it belongs to (default: the EVSE's running one)."""
    if ref is None:
        ref = info.tx_ref if info else ""
    return event_fields(etype, svc.clock.now(), info.station_id if info else "",
                        info.evse_id if info else None, ref, site_id, dict(data))


async def execute(svc: SmartChargingService, site_id: str, evses: dict[str, EvseInfo],
                  applied: dict[str, Series], target: dict[str, Series], payloads: dict[str, dict[str, Any]],
                  budget_w: float, plan_id: str, kind: str) -> dict[str, int]:
    """Send batches from `budget.next_batch` until nothing more can move; between two batches, and
    while a batch's answers are awaited, the provisional shares of needs that arrived meanwhile go
    out (`safety.serve_arrivals`). Every answer of a batch is awaited (each call is bounded by the
    call timeout) before the next batch is chosen.

    When the site's limit changes meanwhile (`svc.limit_changed`) the pass stops after its batch:
    no later batch (increases chosen for the old limit) goes out, and the calls still out once
    their answers stop coming go on beside the site's task (`_leave`), so the site's enforcement
    runs next without waiting for a silent station. Its changes not made count as blocked."""
    stats = {"sent": 0, "accepted": 0, "blocked": 0, "failed": 0}
    # an EVSE with a call out beside the site's task (`aside`) keeps what it counts, max(old, new)
    held = svc.aside.hold(svc, site_id, evses, applied, target)
    for _ in range(MAX_ROUNDS):
        # nothing of this pass in flight: needs that came meanwhile get their answer now
        await svc.between_rounds(site_id, evses, applied, target, payloads)
        now_s = svc.clock.timestamp()
        batch = budget.next_batch(applied, target, budget_w, now_s)
        if not batch:
            break
        sends: dict[asyncio.Future[tuple[bool, Series]], budget.Change[str]] = {}
        for n, change in enumerate(batch):
            await pause_every(n)  # the batch is chosen: its sends start in order, between others' work
            info = evses[change.key]
            try:
                payload = payloads[change.key] if change.final else conversion.step_payload(
                    info, change.series, payloads[change.key], svc.clock.timestamp())
            except Exception as err:  # one EVSE's profile must not stop the others
                log.error("site %s: no profile for %s (%r): it keeps its applied limit",
                          site_id, change.key, err)
                target[change.key] = applied[change.key]
                continue
            step_kind = kind if change.final else kind + "-step"
            sends[asyncio.ensure_future(send(svc, site_id, info, payload, plan_id, step_kind))] = change
        stats["sent"] += len(sends)

        def answered(change: budget.Change[str], result: tuple[bool, Series] | BaseException,
                      now_s: float = now_s) -> None:
            if isinstance(result, BaseException):  # unknown whether it applied: count the higher
                log.error("profile to %s failed: %r", change.key, result)
                result = (False, planner.pointwise(applied[change.key], change.series, now_s, "max"))
            ok, series = result
            applied[change.key] = series
            if ok:
                stats["accepted"] += 1
            else:
                target[change.key] = series
                stats["failed"] += 1

        async def serve(busy: set[tuple[str, int]]) -> None:
            await svc.between_rounds(site_id, evses, applied, target, payloads, busy)

        left = await await_answers(svc, site_id, {t: (c, evses[c.key].ident) for t, c in sends.items()},
                                   answered, serve)
        if left:  # the site limit changed: the pass stops, its calls still out go on beside it
            _leave(svc, site_id, evses, applied, {t: sends[t] for t in left}, now_s, kind)
            break
        if site_id in svc._limit_changed:  # its next batch was chosen for the old limit: not sent
            break
    now_s = svc.clock.timestamp()
    stats["blocked"] = held + sum(1 for k in target
                                  if planner.max_abs_diff_w(applied[k], target[k], now_s) > 1.0)
    return stats


def _leave(svc: SmartChargingService, site_id: str, evses: Mapping[str, EvseInfo], applied: dict[str, Series],
           out: Mapping[asyncio.Future[tuple[bool, Series]], budget.Change[str]], now_s: float,
           kind: str) -> None:
    """A pass stops for a limit change (`await_answers`): each call still out goes on beside the
    site's task (`aside.adopt`), its EVSE counting max(old, new) as the pass did (`next_batch`),
    so the site's enforcement reads and counts it as such, and sends it nothing until its answer."""
    for fut, change in out.items():
        counted = planner.pointwise(applied[change.key], change.series, now_s, "max")
        applied[change.key] = counted
        svc.aside.adopt(svc, site_id, evses[change.key], fut, counted, kind)
    log.warning("site %s: its limit changed while a %s pass awaited %d answer(s): the pass stops, "
                "they are awaited beside the site's task", site_id, kind, len(out))


T = TypeVar("T")
R = TypeVar("R")


async def await_answers(svc: SmartChargingService, site_id: str,
                        sends: Mapping[asyncio.Future[R], tuple[T, tuple[str, int]]],
                        answered: Callable[[T, R | BaseException], None],
                        serve: Callable[[set[tuple[str, int]]], Awaitable[None]] | None = None,
                        ) -> set[asyncio.Future[R]]:
    """Wait for every send's answer (`answered` for each, a result or the exception; each call is
    bounded by the call timeout). Meanwhile, whenever needs arrive (`svc.wake`), `serve` gives
    them their provisional share, told which EVSEs still have a profile out (the caller counts
    those at max(old, new) there and holds their needs until the answer, `safety.serve_arrivals`).
    Not while serving: the site's pass between rounds does not nest.

    With `serve` (a site's pass, not nested): once the site's limit changed (`svc.limit_changed`),
    the wait ends when no answer came for `CONFIRM_GAP_S` and returns the sends still out (not
    cancelled: the caller hands them over); otherwise it returns an empty set."""
    if not sends:
        return set()
    signal = asyncio.Event()
    finished: list[asyncio.Future[R]] = []

    def note(fut: asyncio.Future[R]) -> None:
        finished.append(fut)
        signal.set()

    for fut in sends:
        fut.add_done_callback(note)
    pending = set(sends)
    # the EVSEs with a send still out, kept as answers come (not a set of every pending send built
    # per answer: quadratic in a 20,000-EVSE pass's batch, issue 14)
    out: dict[tuple[str, int], int] = {}
    for _item, ident in sends.values():
        out[ident] = out.get(ident, 0) + 1
    outer = serve is not None and site_id not in svc._between
    if outer:
        svc.wakers[site_id] = signal
    try:
        while pending:
            if outer and site_id in svc._limit_changed:  # answers that keep coming are still taken
                try:
                    async with asyncio.timeout(CONFIRM_GAP_S):
                        await signal.wait()
                except TimeoutError:
                    return set(pending)  # they stopped: the site's enforcement does not wait for them
            else:
                await signal.wait()
            signal.clear()
            while finished:
                fut = finished.pop()
                if fut in pending:
                    pending.discard(fut)
                    ident = sends[fut][1]
                    if out[ident] > 1:
                        out[ident] -= 1
                    else:
                        del out[ident]
                    if fut.cancelled():
                        raise asyncio.CancelledError
                    err = fut.exception()
                    answered(sends[fut][0], fut.result() if err is None else err)
            if outer and pending and serve is not None:
                due = svc._provisional_due.get(site_id) or set()
                if any(k not in out for k in due):
                    await serve(set(out))  # the EVSEs of the sends still pending
    except asyncio.CancelledError:
        for fut in pending:
            fut.cancel()
        raise
    finally:
        if outer and svc.wakers.get(site_id) is signal:
            del svc.wakers[site_id]
        for fut in sends:
            fut.remove_done_callback(note)
    return set()


async def send(svc: SmartChargingService, site_id: str, info: EvseInfo, payload: dict[str, Any],
               plan_id: str, kind: str) -> tuple[bool, Series]:
    """Send one TxProfile, record the answer; (accepted, series now counted for the EVSE). Waits
    for one of the service's `inflight.SENDS_OUT_MAX` slots first."""
    async with svc.inflight.slots:
        return await _send_one(svc, site_id, info, payload, plan_id, kind)


async def _send_one(svc: SmartChargingService, site_id: str, info: EvseInfo, payload: dict[str, Any],
                    plan_id: str, kind: str) -> tuple[bool, Series]:
    now_s = svc.clock.timestamp()
    old = info.applied(now_s)
    new = conversion.abs_series(payload, info.electrical)
    txid, ref = payload["chargingProfile"]["transactionId"], info.tx_ref
    sent_at = svc.clock.now().isoformat()
    await svc.writes.write(StoreWrite(events=[event(svc, EventType.PROFILE_SENT, site_id, {
        "plan_id": plan_id, "kind": kind, "profile_id": payload["chargingProfile"]["id"],
        "periods": len(payload["chargingProfile"]["chargingSchedule"][0]["chargingSchedulePeriod"]),
        "limit_w": planner.value_at(new, now_s), **svc.energy_fields(payload)}, info, ref)]))
    PROFILES_SENT.labels(kind).inc()
    reply = await svc.commands.call(info.station_id, "SetChargingProfile", payload,
                                    timeout_s=svc.settings.call_timeout_s)
    accepted, steerable, counted = conversion.outcome(reply, old, new, now_s)
    status = count_answer(reply, info.station_id, kind)
    prev = info.record or {}
    answered_s = svc.clock.timestamp()
    svc.metered.adopt(info.ident, prev)  # what the node before this one sent (a lease taken over)
    if accepted:  # the watchdog judges a reading against every profile in force when it was taken
        svc.metered.hold(info.ident, ref, now_s, answered_s, counted)
    renegotiates = accepted and planner.max_abs_diff_w(old, counted, now_s) > 1.0
    if renegotiates:  # an ISO 15118 EV (it sent needs) that already has a schedule renegotiates
        needs_n, plans_n = await svc.store.session_fields(ref, ["needs_received", "ev_plans_received"])
        had_profile = prev.get("tx_ref") == ref and bool(prev.get("accepted_profile"))
        renegotiates = stored_float(needs_n, 0.0) > 0 and (had_profile or stored_float(plans_n, 0.0) > 0)
    same_limits = (accepted and prev.get("tx_ref") == ref
                   and planner.max_abs_diff_w(old, counted, now_s) <= 1.0)
    record = {
        "plan_id": plan_id, "kind": kind if accepted else prev.get("kind", ""), "transaction_id": txid,
        "tx_ref": ref,
        "profile": payload, "status": status, "outcome": reply.outcome.value, "error": reply.error,
        "sent_at": sent_at, "answered_at": svc.clock.now().isoformat(),
        # since when the station has held these limits (a profile with the same limits from now on
        # changes nothing: the SECC offers the same schedule and does not renegotiate, K17 below)
        "limits_since": (prev.get("limits_since") or prev.get("sent_at") or sent_at) if same_limits
        else sent_at if accepted else prev.get("limits_since"),
        "limit_w": planner.value_at(counted, svc.clock.timestamp()),
        "applied_series_w": [[t, w] for t, w in counted],
        "accepted_profile": payload if accepted else prev.get("accepted_profile"),
        # what the station held before this profile (K17: a plan the EV made while this one was on
        # its way may rest on it)
        "previous_series_w": (prev.get("applied_series_w") if accepted else prev.get("previous_series_w"))
        if prev.get("tx_ref") == ref else None,
    }
    if not accepted and prev.get("tx_ref") != ref:
        record["kind"] = ""
    held_text = svc.metered.held_text(info.ident, ref)
    if held_text:  # stored with the record: a node that takes the site over judges with them (`metered`)
        record[HELD_FIELD] = held_text
    w = StoreWrite(profiles={info.ident: record})
    evse_fields: dict[str, str] = {"applied_limit_w": repr(record["limit_w"])}
    if not steerable:
        evse_fields.update(refusal(svc, site_id, info))
    elif accepted and (info.refusals or kind == "probe"):
        evse_fields.update({"steerable": "1", "refusals": "0", "retry_after": "0"})
        info.refusals = 0
    w.evse_fields[info.ident] = evse_fields
    w.incr(ref, "schedules_sent")
    w.session_fields[ref] = {"last_schedule_sent_at": sent_at, "last_schedule_status": str(status),
                             "last_plan_id": plan_id}
    if kind.startswith("interim"):
        w.incr(ref, "interim_sent")
    if renegotiates:
        w.incr(ref, "renegotiations")
    w.events.append(event(svc, EventType.PROFILE_ANSWERED, site_id, {
        "plan_id": plan_id, "kind": kind, "status": status, "outcome": reply.outcome.value,
        "error": reply.error, "steerable": steerable, "limit_w": record["limit_w"]}, info, ref))
    await svc.writes.write(w)
    info.record = record
    svc.metered.recheck(info.ident)  # its limit changed: the watchdog compares its reading again
    if not steerable:
        log.warning("station %s EVSE %s refused a profile (%s): budgeted at its maximum, retry in %.0f s",
                    info.station_id, info.evse_id, status, info.retry_after_s - svc.clock.timestamp())
    elif accepted and kind == "probe":
        info.steerable = True
    return accepted, counted


def count_answer(reply: CommandReply, station_id: str, kind: str) -> Any:
    """The answer's status (`conversion.answer_status`), counted; a timeout is also logged, with
    the others of its second (`timeouts`)."""
    status = conversion.answer_status(reply)
    PROFILES_ANSWERED.labels(str(status)).inc()
    if reply.outcome is Outcome.TIMEOUT:
        timeouts.LOG.note(station_id, kind, reply.error)
    return status


def refusal(svc: SmartChargingService, site_id: str, info: EvseInfo) -> dict[str, str]:
    """EVSE hash fields for a station that just refused a profile (backoff before a retry)."""
    refusals = info.refusals + 1
    retry = svc.clock.timestamp() + budget.refusal_backoff_s(refusals, svc.settings.refusal_backoff_s)
    info.refusals, info.retry_after_s, info.steerable = refusals, retry, False
    svc._refused.add(site_id)
    svc._refusing.setdefault(site_id, set()).add(info.ident)
    return {"steerable": "0", "refusals": str(refusals), "retry_after": repr(retry)}
