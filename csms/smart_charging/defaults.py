"""The reservation: a TxDefaultProfile on every EVSE, sent without holding up the site.

The rule it keeps (`budget`): an idle EVSE counts at its maximum until its station has accepted
its TxDefaultProfile (`default_limit_w` is written only from an Accepted answer; a refusal makes
it unsteerable, counted at its maximum). A default is only ever installed or lowered, and only
its answer lowers what the EVSE counts. So when and in which order defaults go out never lets the
applied sum exceed the site budget; it only decides how soon headroom appears. Hence:

- **in the background**: a pass decides which EVSEs need a default, starts the calls and returns,
  so the site's queue goes on: a NotifyEVChargingNeeds gets its provisional share while the boot
  wave of 1,000 stations is still out, from the headroom the confirmed defaults already leave.
  Each answer is recorded as it comes (one write: EVSE fields and the answer event);
- **incremental**: after boots and new EVSEs a pass reads only those EVSEs, not the whole site,
  whenever the reservation does not depend on the number of EVSEs (`reserve_kw_per_evse` 0, the
  default, or reserve x EVSEs within the budget). Otherwise, and on lease take-over, limit changes
  and probes, it reads the whole site as before;
- **once at a time**: an EVSE with a default in flight gets no second one (unless its station
  booted again); one that timed out is tried again after a per-EVSE backoff (`TimeoutBackoff`:
  `evfleet.backoff`, full jitter from `default_timeout_backoff_s` doubling up to
  `default_timeout_backoff_max_s`), not in every pass: re-sending at once to a station whose node
  is behind was a retry storm at start-up (up to 6 defaults per EVSE, issue 14). The backoff is
  reset by any answer and by the station booting or reconnecting. Meanwhile the EVSE counts as
  after any timeout: at the default it last accepted (defaults are only installed or lowered, so
  that is the higher of the two it may hold), or at its maximum if it has none; the backoff only
  delays the re-send;
- **in bounded batches** (`DEFAULTS_BATCH` calls out at a time, the next batch once they are
  answered): a boot wave of 20,000 EVSEs does not start 20,000 calls in one callback, and the
  node's stations are answered between the batches;
- **the end of a wave wakes the site** (`Work.DEFAULTS_DONE`, once no default of the site is out,
  or at once on a refusal): sessions that got no provisional share for want of headroom (held at
  0 W) share again, and a plan whose increases were blocked is applied again. Sessions that got a
  smaller share keep it until their plan (no renegotiation per confirmation).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from csms.command_types import CommandReply, Outcome
from csms.smart_charging import budget, conversion, planner
from csms.smart_charging.evse import EvseInfo
from csms.smart_charging.sending import PROFILES_SENT, count_answer, event, refusal
from evfleet.backoff import Backoff
from evfleet.events import Event, EventType
from evfleet.store.port import EvseId, StoreWrite

if TYPE_CHECKING:
    from csms.smart_charging.service import SmartChargingService

log = logging.getLogger(__name__)


NOTE_CHUNK = 2000
"""EVSEs `DefaultsState.note_read_steps` notes per step."""

TIMEOUT_RETRY_MIN_S = 2.0
"""The shortest wait before a timed-out default is sent again (full jitter may draw ~0)."""


@dataclass
class TimeoutBackoff:
    """Per EVSE: when its timed-out default may be sent again (`evfleet.backoff.Backoff` each)."""

    base_s: float
    max_s: float
    rng: random.Random = field(default_factory=random.Random)
    waits: dict[EvseId, Backoff] = field(default_factory=dict)
    retry_at: dict[EvseId, float] = field(default_factory=dict)
    """EVSE -> the time (clock timestamp) before which its default is not sent again."""

    def timed_out(self, evse: EvseId, now_s: float) -> float:
        """The EVSE's default timed out: the seconds until it may be sent again (doubling per
        timeout in a row, with full jitter, at least `TIMEOUT_RETRY_MIN_S` or `base_s`)."""
        wait = self.waits.get(evse)
        if wait is None:
            wait = self.waits[evse] = Backoff(self.base_s, self.max_s, self.rng)
        delay = max(min(TIMEOUT_RETRY_MIN_S, self.base_s), wait.next_delay())
        self.retry_at[evse] = now_s + delay
        return delay

    def waiting(self, evse: EvseId, now_s: float) -> bool:
        """Whether the EVSE's default is held back (it timed out and its wait is not over)."""
        return self.retry_at.get(evse, 0.0) > now_s

    def reset(self, evse: EvseId) -> None:
        """The station answered (or booted): the next timeout waits from `base_s` again."""
        self.waits.pop(evse, None)
        self.retry_at.pop(evse, None)


@dataclass
class DefaultsState:
    """What the service knows about the reservation of its sites (one per service)."""

    booted: dict[str, set[str]] = field(default_factory=dict)
    """site -> stations (re)booted since its last pass: they get their default again."""
    new: dict[str, set[EvseId]] = field(default_factory=dict)
    """site -> EVSEs first seen (or timed out) since its last pass."""
    evses_of: dict[str, set[int]] = field(default_factory=dict)
    """station -> its EVSE ids (from full reads and connector statuses)."""
    site_evses: dict[str, set[EvseId]] = field(default_factory=dict)
    """site -> its known EVSEs (how many share the reservation)."""
    inflight: dict[str, set[EvseId]] = field(default_factory=dict)
    """site -> EVSEs whose default is out (sent, not answered)."""
    limit_out_w: dict[EvseId, float] = field(default_factory=dict)
    """EVSE -> the limit (W) of its default that is out (`pending_w`)."""
    accepted_w: dict[EvseId, float] = field(default_factory=dict)
    """EVSE -> the limit (W) of the last default it accepted from this node (`pending_w`)."""
    timeouts: TimeoutBackoff = field(default_factory=lambda: TimeoutBackoff(15.0, 300.0))
    """Timed-out defaults held back (`TimeoutBackoff`; the service sets it from its settings)."""
    queued: set[str] = field(default_factory=set)
    done_queued: set[str] = field(default_factory=set)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def note_read(self, site_id: str, infos: dict[str, EvseInfo]) -> None:
        """A whole-site read: the site's EVSEs and each station's EVSE ids. EVSEs noted new and not
        yet passed stay known: the read may have started before their records were stored."""
        planner.drain(self.note_read_steps(site_id, infos))

    def note_read_steps(self, site_id: str, infos: dict[str, EvseInfo]) -> Iterator[None]:
        """`note_read`, a step (a `yield`) after every `NOTE_CHUNK` EVSEs: an async caller leaves
        the event loop between steps (20,000 EVSEs were 12-40 ms in one stretch, issue 14). The
        site's EVSE set is replaced once, at the end; each station's ids only grow."""
        idents: set[EvseId] = set()
        values = list(infos.values())
        for start in range(0, len(values), NOTE_CHUNK):
            for info in values[start:start + NOTE_CHUNK]:
                idents.add(info.ident)
                eids = self.evses_of.get(info.station_id)
                if eids is None:
                    self.evses_of[info.station_id] = {info.evse_id}
                else:
                    eids.add(info.evse_id)
            yield
        self.site_evses[site_id] = idents | self.new.get(site_id, set())

    def pending_w(self, site_id: str, evse: EvseId) -> float | None:
        """The limit (W) the EVSE's default that is out sets once Accepted, else that of the last
        default it accepted from this node (None: neither). A whole-site share leaves an EVSE without
        a profile of its session alone when its share is that limit (`safety._changes`): the
        default's answer brings it there (one call instead of two per new EVSE; also when the
        answer came after the pass read the EVSE, which then still counts at its maximum)."""
        if evse in self.inflight.get(site_id, ()):
            return self.limit_out_w.get(evse)
        return self.accepted_w.get(evse)

    def answered(self, site_id: str, evse: EvseId) -> None:
        """The EVSE's default is no longer out (answered, failed or never sent)."""
        self.inflight.get(site_id, set()).discard(evse)
        self.limit_out_w.pop(evse, None)

    def note_new(self, site_id: str, evse: EvseId) -> None:
        """An EVSE seen for the first time (a connector status)."""
        self.new.setdefault(site_id, set()).add(evse)
        self.evses_of.setdefault(evse[0], set()).add(evse[1])
        self.site_evses.setdefault(site_id, set()).add(evse)


def limit_w(svc: SmartChargingService, info: EvseInfo, budget_w: float, count: int) -> float:
    """The default of one EVSE: `budget.reserve_w`, capped by `fallback_limit_kw`."""
    value = budget.reserve_w(svc.settings.reserve_kw_per_evse * 1000.0, budget_w, count,
                             info.electrical.max_power_w)
    if svc.settings.fallback_limit_kw is not None:
        value = min(value, svc.settings.fallback_limit_kw * 1000.0)
    return value


def needs_default(svc: SmartChargingService, site_id: str, info: EvseInfo, target_w: float,
                  force: frozenset[str], now_s: float) -> bool:
    """Whether the EVSE gets a default now (installed or lowered; refusing EVSEs after their backoff;
    again if its station booted since it accepted its last one: `EvseInfo.booted_since_default`,
    from the stored EVSE, so a boot whose event no node handled, during a take-over or a hand-over,
    is found by the next whole-site pass: the RECONCILE of the node taking the site)."""
    state = svc.defaults
    if not info.online:
        return False
    if info.station_id not in force and (info.ident in state.inflight.get(site_id, ())
                                         or state.timeouts.waiting(info.ident, now_s)):
        return False  # out, or timed out and waiting (`TimeoutBackoff`): it counts as before
    if not info.steerable:
        svc._refusing.setdefault(site_id, set()).add(info.ident)
        if info.tx_ref or (info.retry_after_s > now_s and info.station_id not in force):
            return False  # a refusing EVSE with a session is probed with a TxProfile (watchdog.tick)
    return not (info.steerable and info.station_id not in force and info.default_w is not None
                and info.default_w <= target_w + 1.0 and not info.booted_since_default())


async def ensure(svc: SmartChargingService, site_id: str, force: frozenset[str] = frozenset(),
                 evses: dict[str, EvseInfo] | None = None, count: int | None = None) -> int:
    """Start the defaults the EVSEs (default: every EVSE of the site) need; returns how many.

    limit = `budget.reserve_w` (min(reserve_kw_per_evse, site budget / EVSEs, EVSE max), capped
    by `fallback_limit_kw`): what a plug-in may draw before the csms admits the session; `force`
    stations (just booted: they may have lost it) get theirs again. The answers come in the
    background (`_send`)."""
    if evses is None:
        evses = await svc.site_evses(site_id)
        count = len(evses)
    if not evses:
        return 0
    budget_w = await svc.site_budget_w(site_id)
    now_s = svc.clock.timestamp()
    due = []
    for info in evses.values():
        target_w = limit_w(svc, info, budget_w, count or len(evses))
        if needs_default(svc, site_id, info, target_w, force, now_s):
            due.append((info, target_w))
    if due:
        svc.defaults.inflight.setdefault(site_id, set()).update(info.ident for info, _ in due)
        svc.defaults.limit_out_w.update((info.ident, w) for info, w in due)
        task = asyncio.create_task(_send(svc, site_id, due), name=f"defaults:{site_id}")
        svc.defaults.tasks.add(task)
        task.add_done_callback(svc.defaults.tasks.discard)
    return len(due)


async def run_pass(svc: SmartChargingService, site_id: str) -> int:
    """One pass after boots / new EVSEs: only those EVSEs when the reservation does not depend on
    the EVSE count, else the whole site (module doc). Returns the defaults started."""
    state = svc.defaults
    state.queued.discard(site_id)
    booted = frozenset(state.booted.pop(site_id, set()))
    new = state.new.pop(site_id, set())
    for sid in booted:  # a boot starts the timeout backoff again (its default goes now: `force`)
        for eid in state.evses_of.get(sid, ()):
            state.timeouts.reset((sid, eid))
    known = state.site_evses.get(site_id)
    reserve_w = svc.settings.reserve_kw_per_evse * 1000.0
    if known is None or (reserve_w > 0 and reserve_w * len(known) > await svc.site_budget_w(site_id)):
        return await ensure(svc, site_id, booted)
    pairs = set(new) | {(sid, eid) for sid in booted for eid in state.evses_of.get(sid, ())}
    if not pairs:
        return 0
    evses = await svc.evse_infos(sorted(pairs))
    return await ensure(svc, site_id, booted, evses, len(known))


DEFAULTS_BATCH = 200
"""Defaults out at once per wave (the next batch goes when this one is answered): a boot wave of
20,000 EVSEs is 100 batches of calls and writes between which the node answers its stations,
not 20,000 calls started in one callback."""


async def _send(svc: SmartChargingService, site_id: str, due: list[tuple[EvseInfo, float]]) -> None:
    """Send the defaults in batches of `DEFAULTS_BATCH`: each batch's sent events in one write, then
    its calls, each answer recorded as it comes; the next batch when this one is answered."""
    for start in range(0, len(due), DEFAULTS_BATCH):
        part = due[start:start + DEFAULTS_BATCH]
        try:
            await _send_batch(svc, site_id, part)
        except Exception as err:  # the store is down: the EVSEs keep counting at their maximum
            log.error("site %s: defaults failed: %r", site_id, err)
            for info, _ in due[start:]:
                svc.defaults.answered(site_id, info.ident)
            return


async def _send_batch(svc: SmartChargingService, site_id: str, due: list[tuple[EvseInfo, float]]) -> None:
    """One batch of defaults (`_send`)."""
    now = svc.clock.now()
    payloads = [conversion.default_payload(info, w, now) for info, w in due]
    counted = [float(conversion.abs_series(p, info.electrical)[0][1]) for (info, _), p in zip(due, payloads,
                                                                                                  strict=True)]
    sent = StoreWrite()
    for (info, _), payload, w in zip(due, payloads, counted, strict=True):
        sent.events.append(event(svc, EventType.PROFILE_SENT, site_id, {
            "kind": "default", "plan_id": f"default-{time.time_ns()}",
            "profile_id": payload["chargingProfile"]["id"], "periods": 1, "limit_w": w}, info, ""))
    PROFILES_SENT.labels("default").inc(len(due))
    await svc.store.write(sent)
    await asyncio.gather(*(_one(svc, site_id, info, payload, w)
                           for (info, _), payload, w in zip(due, payloads, counted, strict=True)))


async def _one(svc: SmartChargingService, site_id: str, info: EvseInfo, payload: dict[str, object],
               counted_w: float) -> None:
    """One default: the call, then its answer in one write; the site is woken on a change."""
    try:
        reply = await svc.commands.call(info.station_id, "SetChargingProfile", payload,
                                        timeout_s=svc.settings.call_timeout_s)
    except Exception as err:  # noqa: BLE001 (one call must not stop the others; counted at max)
        log.error("default profile to %s failed: %r", info.key, err)
        svc.defaults.answered(site_id, info.ident)
        return
    zero = planner.constant(0.0)
    accepted, steerable, _ = conversion.outcome(reply, zero, zero, 0.0)
    status = count_answer(reply, info.station_id, "default")
    fields: dict[str, str] = {}
    if accepted:  # since when it holds (a reading stored before shows nothing about it: watchdog.tick)
        fields.update({"default_limit_w": repr(counted_w), "default_at": repr(svc.clock.timestamp())})
        svc.defaults.accepted_w[info.ident] = counted_w
        if info.refusals or not info.steerable:  # a probe after a refusal: steerable again
            fields.update({"steerable": "1", "refusals": "0", "retry_after": "0"})
            info.steerable, info.refusals = True, 0
    else:
        svc.defaults.accepted_w.pop(info.ident, None)
    if not steerable:
        fields.update(refusal(svc, site_id, info))
    w = StoreWrite(events=[event(svc, EventType.PROFILE_ANSWERED, site_id, {
        "kind": "default", "status": status, "outcome": reply.outcome.value, "error": reply.error,
        "steerable": steerable, "limit_w": counted_w if accepted else None}, info, "")])
    if fields:
        w.evse_fields[info.ident] = fields
    try:
        await svc.store.write(w)
    finally:
        svc.defaults.answered(site_id, info.ident)
    _after_answer(svc, site_id, info, reply, not steerable)


def _after_answer(svc: SmartChargingService, site_id: str, info: EvseInfo, reply: CommandReply,
                  refused: bool) -> None:
    """A timeout is tried again after its backoff (`TimeoutBackoff`), any other answer resets it;
    the site wakes once its last default is answered (the wave is over: one re-share, not one per
    confirmation) or at once on a refusal."""
    if reply.outcome is Outcome.TIMEOUT:
        delay = svc.defaults.timeouts.timed_out(info.ident, svc.clock.timestamp())
        asyncio.get_running_loop().call_later(delay + 0.01, _retry, svc, site_id, info.ident)
    else:
        svc.defaults.timeouts.reset(info.ident)
    wave_over = not svc.defaults.inflight.get(site_id)
    if (wave_over or refused) and site_id not in svc.defaults.done_queued:
        svc.defaults.done_queued.add(site_id)
        svc.enqueue(site_id, "defaults-done", None)


async def reconnected(svc: SmartChargingService, event: Event) -> None:
    """A station (re)connected: its timed-out defaults wait no longer (`TimeoutBackoff.reset`) and
    go in the next pass of its site (a boot that follows sends them at once anyway)."""
    state, sid = svc.defaults, event.station_id
    waiting = [(sid, eid) for eid in state.evses_of.get(sid, ()) if (sid, eid) in state.timeouts.waits]
    if not waiting:
        return
    for evse in waiting:
        state.timeouts.reset(evse)
    site_id = await svc.site_of(event)
    if await svc.holds(site_id, aside=True):
        state.new.setdefault(site_id, set()).update(waiting)
        svc.defaults_due(site_id, None)


def _retry(svc: SmartChargingService, site_id: str, evse: EvseId) -> None:
    """A timed-out default's wait is over: a pass for it (`needs_default` decides whether it
    still needs one)."""
    svc.defaults.new.setdefault(site_id, set()).add(evse)
    svc.defaults_due(site_id, None)
