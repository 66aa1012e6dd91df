"""Single-EVSE calls that run beside a site's task, not in it: K17 re-sends, probes and the
decreases of a limit enforcement (`actions.enforce_limit`).

A site's task (`site_task.serve`) does its work one item at a time. A call to one station
that it awaited inline (the K17 re-send of our profile, the probe of a refusing EVSE) held every
other piece of the site's work (a new session's provisional share, a plan, the watchdog) for as
long as that one station took to answer: up to the call timeout, 30 s by default. These calls
now go out as tracked tasks (`start`), so the site's task goes on at once; a pass's own batches
(`sending.execute`) are still awaited by their pass, which serves arrivals meanwhile. An
enforcement pass awaits its decreases only until their answers stop coming, then lowers the
stations that answered further for those that did not (they count at their old limit), and
leaves their calls out here; a pass stopped by a limit change hands over its calls still out
(`adopt`, `sending.execute`).

The site limit holds by the rule a batch keeps (`budget.next_batch`: a change in flight counts
at max(old, new); `safety.serve_arrivals`: needs on an EVSE with a profile out wait for its
answer):

- while the call is out, the EVSE counts at max(what it counted when the call started, what the
  profile allows) in every read of the site (`mark`, `EvseInfo.out_series`), as a timeout's
  answer would count it (`conversion.outcome`). The mark is taken from a snapshot made before
  the read starts (`snapshot`), and the answer is written before the call leaves `out`, so a
  read that may have missed the answer's write still counts the max;
- no other profile goes to that EVSE until its answer is recorded: a pass keeps what it counts
  (`hold`, in `sending.execute`; `safety._share` and `actions.enforce_limit` treat it as a
  fixed load), and the answer wakes the site (`Work.ASIDE_DONE`) to apply a blocked plan and
  share with starved sessions again. So at most one profile per EVSE is ever out, and its
  station's per-station FIFO cannot deliver a later profile before an earlier answer is
  recorded over it;
- at most `ASIDE_MAX` such calls are out per service (`Aside.slots`; each also takes one of
  the service's `inflight` slots); one EVSE has at most one. A lost lease or shutdown cancels
  the site's calls (`cancel`); a cancelled call writes nothing, so its EVSE goes on counting its
  record, which for every kind is already at least what the profile allows (module `safety`,
  `actions`; a decrease's record is its old, higher limit). Every failure is logged with the
  site, EVSE and kind.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from csms.smart_charging import conversion, planner, sending
from csms.smart_charging.evse import EvseInfo
from csms.smart_charging.planner import Series
from csms.smart_charging.work import Work
from evfleet.store.port import EvseId

if TYPE_CHECKING:
    from csms.smart_charging.service import SmartChargingService

log = logging.getLogger(__name__)

ASIDE_MAX = 32
"""Single-EVSE calls (K17 re-sends, probes) out beside the site tasks at once per service; more
wait for a slot in the background (each EVSE has at most one, so their number is bounded)."""

Snapshot = Mapping[EvseId, Series]


@dataclass
class Aside:
    """The single-EVSE calls of one service that run beside its site tasks (module doc)."""

    slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(ASIDE_MAX))
    out: dict[EvseId, Series] = field(default_factory=dict)
    """EVSE -> what it counts while its call is out: max(before, the profile)."""
    site_of: dict[EvseId, str] = field(default_factory=dict)
    tasks: dict[str, set[asyncio.Task[bool | None]]] = field(default_factory=dict)
    """site -> its calls out (cancelled with its lease)."""
    held: set[EvseId] = field(default_factory=set)
    """EVSEs a pass left as they were because their call was out: the answer wakes their site."""

    def snapshot(self) -> Snapshot:
        """The calls out now (taken before a read of the store, given to `mark` after it)."""
        return dict(self.out)

    def mark(self, infos: Mapping[str, EvseInfo], before: Snapshot, now_s: float) -> None:
        """Count each EVSE of a read whose call was out when the read started or is out now at
        max(its record, the call's series) (`EvseInfo.out_series`)."""
        if not before and not self.out:
            return
        for ident, series in (*before.items(), *self.out.items()):
            info = infos.get(f"{ident[0]}/{ident[1]}")
            if info is None or info.out_series is series:
                continue
            info.out_series = series if info.out_series is None else planner.pointwise(
                info.out_series, series, now_s, "max")

    def busy(self, info: EvseInfo) -> bool:
        """A call to this EVSE is out, or was when it was read."""
        return info.out_series is not None or (bool(self.out) and info.ident in self.out)

    def hold(self, svc: SmartChargingService, site_id: str, evses: Mapping[str, EvseInfo],
             applied: Mapping[str, Series], target: dict[str, Series]) -> int:
        """Keep every busy EVSE of a pass at what it counts (no profile goes to it while its call
        is out); returns how many had a change, which their answer retries (`Work.ASIDE_DONE`)."""
        held = 0
        now_s = svc.clock.timestamp()
        for key, series in target.items():
            info = evses.get(key)
            if info is None or not self.busy(info) or key not in applied:
                continue
            if planner.max_abs_diff_w(applied[key], series, now_s) > planner.TOLERANCE_W:
                held += 1
                self.note_held(svc, site_id, info.ident)
            target[key] = applied[key]
        return held

    def note_held(self, svc: SmartChargingService, site_id: str, ident: EvseId) -> None:
        """A pass left this EVSE alone for its call: its site retries once the call is answered
        (at once if it already was)."""
        if ident in self.out:
            self.held.add(ident)
        else:
            svc.enqueue(site_id, Work.ASIDE_DONE, None)

    def start(self, svc: SmartChargingService, site_id: str, info: EvseInfo, payload: dict[str, Any],
              plan_id: str, kind: str, batch: bool = False) -> asyncio.Task[bool | None] | None:
        """Send one profile beside the site's task (`sending.send`, answer recorded as usual); the
        task's result is whether the station accepted it (None: the call failed). None if a call to
        this EVSE is already out (nothing started).

        `batch`: one of an enforcement pass's decreases (`actions.enforce_limit`), which awaits
        them itself for a moment: it takes no `ASIDE_MAX` slot (their number is bounded by the
        site's EVSEs, one call each; a slot behind a silent station's call would hold a decrease
        for the call timeout) and logs no line per answer (the pass logs its rounds)."""
        if self.busy(info):
            return None
        now_s = svc.clock.timestamp()
        old = info.applied(now_s)
        new = conversion.abs_series(payload, info.electrical)
        self.out[info.ident] = planner.pointwise(old, new, now_s, "max")
        self.site_of[info.ident] = site_id
        return self._track(svc, site_id, info,
                           lambda: sending.send(svc, site_id, info, payload, plan_id, kind), kind, batch)

    def adopt(self, svc: SmartChargingService, site_id: str, info: EvseInfo,
              call: asyncio.Future[tuple[bool, Series]], counted: Series, kind: str) -> None:
        """A pass's call still out when the pass stopped for a limit change (`sending.execute`): it
        goes on beside the site's task, the EVSE counting `counted` (what the pass counted for it,
        max(old, new)) until its answer is recorded; the answer wakes the site (`Work.ASIDE_DONE`:
        a plan whose changes the stop left undone is applied again)."""
        self.out[info.ident] = counted
        self.site_of[info.ident] = site_id
        self.held.add(info.ident)
        self._track(svc, site_id, info, lambda: call, kind, True)

    def _track(self, svc: SmartChargingService, site_id: str, info: EvseInfo,
               call: Callable[[], Awaitable[tuple[bool, Series]]], kind: str,
               batch: bool) -> asyncio.Task[bool | None]:
        task = asyncio.create_task(self._run(svc, site_id, info, call, kind, batch),
                                   name=f"smart-charging:{kind}:{info.key}")
        self.tasks.setdefault(site_id, set()).add(task)
        task.add_done_callback(lambda t: self._done(site_id, t))
        return task

    async def _run(self, svc: SmartChargingService, site_id: str, info: EvseInfo,
                   call: Callable[[], Awaitable[tuple[bool, Series]]], kind: str, batch: bool) -> bool | None:
        cancelled = False
        try:
            if batch:
                accepted, _ = await call()
            else:
                async with self.slots:
                    accepted, _ = await call()
                log.info("site %s: %s profile to %s answered beside the site's task (accepted=%s)",
                         site_id, kind, info.key, accepted)
            return accepted
        except asyncio.CancelledError:
            cancelled = True  # nothing more for this site here (its lease is gone, or the node stops)
            log.info("site %s: %s profile to %s cancelled (lease lost or shutdown); it counts its record",
                     site_id, kind, info.key)
            raise
        except Exception:  # one station's call must not stop anything else; its record is unchanged
            log.exception("site %s: %s profile to %s failed; it counts its record (at least this "
                          "profile's limits)", site_id, kind, info.key)
            return None
        finally:
            self.out.pop(info.ident, None)  # after the answer's write (`sending.send`), see `mark`
            self.site_of.pop(info.ident, None)
            # a pass left it alone meanwhile, or it refused (it counts at its maximum now: the site
            # task's next turn lowers the others, `site_task.handle`): wake the site. A batch's
            # call wakes it for its own refusal only: one refusal among a cut's 20,000 decreases
            # is one wake-up, not one per answer after it
            refused = not info.steerable if batch else site_id in svc._refused
            wake = info.ident in self.held or refused
            self.held.discard(info.ident)
            if wake and not cancelled and site_id in svc.held:
                svc.enqueue(site_id, Work.ASIDE_DONE, None)

    def _done(self, site_id: str, task: asyncio.Task[bool | None]) -> None:
        tasks = self.tasks.get(site_id)
        if tasks is not None:
            tasks.discard(task)
            if not tasks:
                del self.tasks[site_id]

    def cancel(self, site_id: str | None = None) -> None:
        """Cancel the calls of a site whose lease was lost (every site's: shutdown)."""
        sites = list(self.tasks) if site_id is None else [site_id]
        for site in sites:
            for task in list(self.tasks.get(site, ())):
                task.cancel()

    async def settled(self, site_id: str) -> None:
        """Wait until no call of the site is out (tests, shutdown)."""
        while self.tasks.get(site_id):
            await asyncio.gather(*self.tasks[site_id], return_exceptions=True)
