"""A site's serial task (`service`): what it does with each item of its queue.

Every site a node holds has one asyncio task (`enqueue` starts it, it ends after 60 s with
nothing to do) that takes the site's queue items one at a time, so plan application, interim
profiles, K17 re-sends and the watchdog's passes never interleave. An item is a stream event routed
by `intake` (`schedule.planned`, `site.limit`, `tx.started`, `tx.ended`, `ev.charging_schedule`)
or a `Work` item; `HANDLERS` names the step each one runs. After every item, before the next:

- a station refused a profile (it now counts at its maximum): an enforcement pass, then fair shares;
- a station booted or an EVSE appeared: its default profile (until it holds one it counts at its
  maximum, and a plug-in there would draw that);
- charging needs arrived meanwhile: their provisional share.

An item runs only while the node holds the site's lease (`leases.may_act`); one that raises is
logged with its site and kind and the task goes on with the next.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from csms.smart_charging import actions, balance, defaults, leases, pacing, quiet, safety, watchdog
from csms.smart_charging.work import Work
from evfleet.events import Event, EventType

if TYPE_CHECKING:
    from csms.smart_charging.service import SmartChargingService

log = logging.getLogger(__name__)

IDLE_EXIT_S = 60
"""A site's task ends after this long with an empty queue (the next item starts a new one)."""


@dataclass
class SiteQueue:
    """A site's queue of work and the task that serves it."""

    queue: asyncio.Queue[tuple[str, Any]] = field(default_factory=asyncio.Queue)
    task: asyncio.Task[None] | None = None


def enqueue(svc: SmartChargingService, site_id: str, kind: str, payload: Any) -> None:
    """Hand work to the site's serial task (started if it is not running)."""
    site = svc.sites.setdefault(site_id, SiteQueue())
    site.queue.put_nowait((kind, payload))
    if site.task is None or site.task.done():
        site.task = asyncio.create_task(serve(svc, site_id, site), name=f"smart-charging:{site_id}")


async def serve(svc: SmartChargingService, site_id: str, site: SiteQueue) -> None:
    """The site's task: its items one at a time while the lease is held, until idle (module doc)."""
    while True:
        try:  # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation
            async with asyncio.timeout(IDLE_EXIT_S):
                kind, payload = await site.queue.get()
        except TimeoutError:
            return
        if kind == EventType.SITE_LIMIT.value:  # taken: the passes after it wait for answers again
            svc._limit_changed.discard(site_id)
        try:
            if await leases.may_act(svc, site_id):
                await handle(svc, site_id, kind, payload)
        except asyncio.CancelledError:
            raise
        except Exception:  # one bad event must not stop the site's loop; it is logged with context
            log.exception("smart charging: %s on site %s failed", kind, site_id)


async def handle(svc: SmartChargingService, site_id: str, kind: str, payload: Any) -> None:
    """Run one queue item's step, then what must go before the next item (module doc)."""
    quiet.keep_for(svc, site_id, kind)
    handler = HANDLERS.get(kind)
    if handler is not None:
        await handler(svc, site_id, payload)
    if site_id not in svc.held and site_id in svc._lease_taken_until:
        return  # the lease went during the item (handed over, lost): what follows is the holder's
    if site_id in svc._refused:  # a station refused: it now counts at its maximum
        svc._refused.discard(site_id)
        await svc.enforce_limit(site_id, "refused")
        await safety.share_fairly(svc, site_id)
    if site_id in svc.defaults.queued and kind != Work.DEFAULTS:
        # a station booted or an EVSE appeared: its default profile goes before queued work
        # (until it holds one it counts at its maximum, and a plug-in there would draw that)
        quiet.drop(svc, site_id)
        await _on_defaults(svc, site_id, None)
    arrivals = svc._provisional_due.pop(site_id, None)
    if arrivals:  # needs arrived meanwhile: their provisional share goes before queued work
        await safety.share_fairly(svc, site_id, arrivals=arrivals)


# --- the steps, one per kind of item ------------------------------------------------------
async def _on_reconcile(svc: SmartChargingService, site_id: str, _: Any) -> None:
    """Lease taken (a take-over, a hand-over, a first start): the site is brought to what its stored
    state asks for, since the events that came while no node acted for it reached no site queue
    (`intake.dispatch`) and none is replayed. Each kind, and where this step finds it:

    - `station.booted`: the station's EVSEs carry `booted_at`; one booted since it accepted its
      default gets it again (`defaults.needs_default`);
    - `tx.ended`: the ended session's record and non-compliance mark (`actions.ended_unseen`);
    - `connector.status` of a new EVSE: the whole-site read has it; no default yet, it gets one;
    - `site.limit`: the limit in force (`enforce_limit`), the defaults at the new reservation;
    - `schedule.planned`: the latest plan (`apply_plan`);
    - `tx.started`, `ev.charging_needs`: K15's interim timer for every session still without a
      profile (the needs' provisional share comes with it, `interim_profile_after_s` later);
      the needs' session fields are written with the needs (`csms.store.state`).

    One read serves the bookkeeping and the defaults; the interim step reuses the last pass's read
    (its answers recorded into it), not a fourth whole-site read."""
    evses = await svc.site_evses(site_id)
    await actions.ended_unseen(svc, evses)
    await defaults.ensure(svc, site_id, evses=evses, count=len(evses))
    seen = [evses]
    await svc.enforce_limit(site_id, "reconcile", seen)
    await svc.apply_plan(site_id, seen)
    for info in seen[-1].values():
        if info.tx_ref and info.online and info.steerable and not info.has_profile():
            pacing.start_interim_timer_for(svc, site_id, (info.station_id, info.evse_id), info.tx_ref)


async def _on_handover(svc: SmartChargingService, site_id: str, taker: Any) -> None:
    """Balancing: the site's lease goes to a less loaded node (`balance.hand_over`)."""
    await balance.hand_over(svc, site_id, taker)


async def _on_tick(svc: SmartChargingService, site_id: str, _: Any) -> None:
    """The metered watchdog's pass (`watchdog.tick`); the next tick may be queued again."""
    svc._tick_queued.discard(site_id)
    await watchdog.tick(svc, site_id)


async def _on_plan(svc: SmartChargingService, site_id: str, _: Any) -> None:
    """A new plan: it replaces the fallback's shares (`safety.plan_arrived`) and is applied."""
    safety.plan_arrived(svc, site_id)
    svc._starved.pop(site_id, None)
    await svc.apply_plan(site_id)


async def _on_site_limit(svc: SmartChargingService, site_id: str, _: Any) -> None:
    """The site limit changed: enforced at once, every EVSE's default ensured, the headroom shared
    again."""
    await svc.enforce_limit(site_id, "site_limit")
    await svc.ensure_defaults(site_id)
    await safety.share_fairly(svc, site_id)


async def _on_defaults(svc: SmartChargingService, site_id: str, _: Any) -> None:
    """Stations booted / EVSEs appeared since the last pass (one pass, `defaults.run_pass`)."""
    await defaults.run_pass(svc, site_id)


async def _on_defaults_done(svc: SmartChargingService, site_id: str, _: Any) -> None:
    """A wave of defaults answered: more headroom. Sessions held at 0 W for want of it share again,
    and a plan whose increases were blocked is applied again (`defaults` module doc)."""
    svc.defaults.done_queued.discard(site_id)
    await _retry_blocked(svc, site_id)


async def _on_aside_done(svc: SmartChargingService, site_id: str, _: Any) -> None:
    """A call beside the site's task was answered after a pass left its EVSE alone (`aside`)."""
    await _retry_blocked(svc, site_id)


async def _retry_blocked(svc: SmartChargingService, site_id: str) -> None:
    """A plan whose increases were blocked, then sessions starved of a provisional share, again."""
    if site_id in svc._plan_blocked:
        await svc.apply_plan(site_id)
    starved = svc._starved.pop(site_id, None)
    if starved:
        await safety.share_fairly(svc, site_id, arrivals=starved)


async def _on_interim(svc: SmartChargingService, site_id: str, _: Any) -> None:
    """K15: interim shares for sessions whose plan is late (`pacing.interim_pass`)."""
    await pacing.interim_pass(svc, site_id)


async def _on_tx_started(svc: SmartChargingService, site_id: str, event: Event) -> None:
    """A session started: in fallback mode, a re-share soon."""
    quiet.touch(svc, site_id, event.station_id, event.evse_id)
    svc.reshare_soon(site_id)  # in fallback mode: re-share


async def _on_tx_ended(svc: SmartChargingService, site_id: str, event: Event) -> None:
    """A session ended: its profile's bookkeeping (`actions.tx_ended`), a re-share soon."""
    quiet.touch(svc, site_id, event.station_id, event.evse_id)
    await actions.tx_ended(svc, event)
    svc.reshare_soon(site_id)


async def _on_reshare(svc: SmartChargingService, site_id: str, _: Any) -> None:
    """Fallback mode: one re-share for the sessions started or ended (`pacing.reshare_pass`)."""
    await pacing.reshare_pass(svc, site_id)


async def _on_ev_schedule(svc: SmartChargingService, site_id: str, event: Event) -> None:
    """K17: the EV's own plan checked against the limits sent."""
    await svc.check_ev_schedule(site_id, event)


Handler = Callable[["SmartChargingService", str, Any], Awaitable[None]]

HANDLERS: dict[str, Handler] = {
    Work.RECONCILE: _on_reconcile, Work.TICK: _on_tick, Work.DEFAULTS: _on_defaults,
    Work.DEFAULTS_DONE: _on_defaults_done, Work.ASIDE_DONE: _on_aside_done,
    Work.INTERIM: _on_interim, Work.RESHARE: _on_reshare, Work.HANDOVER: _on_handover,
    EventType.SCHEDULE_PLANNED: _on_plan,
    EventType.SITE_LIMIT: _on_site_limit, EventType.TX_STARTED: _on_tx_started,
    EventType.TX_ENDED: _on_tx_ended, EventType.EV_CHARGING_SCHEDULE: _on_ev_schedule,
}
"""The step each kind of queue item runs (`Work` items and routed stream events)."""
