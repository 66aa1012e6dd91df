"""Event intake of the smart-charging service (`service`): which stream events reach a site's
task, and what is noted on the way: a session's metered power (for the watchdog, `metered`), an
EVSE not seen before (its default profile, `defaults`), and new charging needs (flagged for their
provisional share before the read is dispatched: the fast first answer)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from csms.smart_charging import actions, defaults, leases
from csms.smart_charging.work import Work
from evfleet.events import Event, EventType
from evfleet.store.port import StoreWrite

if TYPE_CHECKING:
    from csms.smart_charging.service import SmartChargingService

RELEVANT = frozenset({EventType.SCHEDULE_PLANNED, EventType.TX_STARTED, EventType.TX_ENDED,
                      EventType.EV_CHARGING_NEEDS, EventType.EV_CHARGING_SCHEDULE, EventType.STATION_BOOTED,
                      EventType.SITE_LIMIT})
"""Events that reach a site's queue (power readings and new EVSEs are handled on intake)."""

POWER_EVENTS = frozenset({EventType.TX_UPDATED.value, EventType.METER_VALUES.value})
"""Metered-power events (`foreign_power_event` skips those of sites another node holds)."""


async def dispatch(svc: SmartChargingService, event: Event, batch: StoreWrite | None = None) -> None:
    """Route one stream event to its site's task (only for sites this node holds); session
    bookkeeping goes into `batch` when given (written by the caller)."""
    if event.type in (EventType.TX_UPDATED, EventType.METER_VALUES):
        _note_power(svc, event)
        return
    if event.type == EventType.CONNECTOR_STATUS:
        await _note_evse(svc, event)
        return
    if event.type == EventType.STATION_CONNECTED:
        await defaults.reconnected(svc, event)
        return
    if event.type not in RELEVANT:
        return
    if event.type == EventType.EV_CHARGING_NEEDS and event.data.get("status") == "Rejected":
        return
    if event.type == EventType.EV_CHARGING_NEEDS and event.data.get("status") == "Repeated":
        if event.tx_ref:  # the same request again: counted, nothing re-planned or reset
            w = StoreWrite() if batch is None else batch
            w.incr(event.tx_ref, "needs_repeated")
            if batch is None:
                await svc.store.write(w)
        return
    if event.type == EventType.TX_ENDED and event.evse_id is not None:
        svc.metered.drop((event.station_id, int(event.evse_id)))
    if event.type == EventType.SCHEDULE_PLANNED:  # of any site: the optimizer is at work
        svc.plan_seen_any = time.monotonic()
    site_id = await svc.site_of(event)
    if event.type == EventType.SITE_LIMIT and site_id not in svc.held:
        # a site another node may have just handed to this one (`balance`): asked now, beside the
        # stream loop, not after `LEASE_RECHECK_S`; taken, its RECONCILE enforces the new limit
        leases.recheck_aside(svc, site_id, time.monotonic())
    if not await svc.holds(site_id, aside=True):
        return
    if event.type == EventType.STATION_BOOTED:
        svc.defaults_due(site_id, event.station_id)
        return
    if event.type in (EventType.TX_STARTED, EventType.EV_CHARGING_NEEDS):
        if event.type == EventType.EV_CHARGING_NEEDS:
            await actions.needs_received(svc, event, batch)
            if event.evse_id is not None and event.tx_ref:  # fast first answer (provisional)
                svc.needs_due(site_id, (event.station_id, int(event.evse_id)))
        svc.start_interim_timer(site_id, event)
    if event.type == EventType.SITE_LIMIT:  # a pass awaiting answers must not hold the enforcement
        svc.limit_changed(site_id)
    svc.enqueue(site_id, event.type.value, event)


def flag_needs(svc: SmartChargingService, events: Sequence[Event]) -> None:
    """New charging needs in a read of the stream: flagged for their provisional share before
    the read is dispatched (`needs_due`), so the site's task can answer them while the stream
    loop works through the rest (a read holds up to `service.STREAM_READ_COUNT` events). Only for
    sites whose lease is known held without asking Redis (`holds`); the others are flagged by
    `dispatch`."""
    mono = time.monotonic()
    flagged: set[str] = set()
    for event in events:
        if (event.type != EventType.EV_CHARGING_NEEDS or event.evse_id is None or not event.tx_ref
                or event.data.get("status") in ("Rejected", "Repeated")):
            continue
        site_id = event.site_id or svc._station_site.get(event.station_id)
        if site_id is not None and leases.trusted(svc, site_id, mono):
            svc.needs_due(site_id or "", (event.station_id, int(event.evse_id)))
            flagged.add(site_id or "")
    for site_id in flagged:  # served after the site's current work (`_handle`), or at once
        svc.enqueue(site_id, Work.ARRIVALS, None)


async def _note_evse(svc: SmartChargingService, event: Event) -> None:
    """A connector status from an EVSE not seen before: it needs its default profile."""
    evse = (event.station_id, event.evse_id or 0)
    if evse[1] and evse not in svc._known_evses:
        svc._known_evses.add(evse)
        site_id = await svc.site_of(event)
        if await svc.holds(site_id, aside=True):
            svc.defaults.note_new(site_id, evse)
            svc.defaults_due(site_id, None)


def foreign_power_event(svc: SmartChargingService, fields: Mapping[str, str]) -> bool:
    """A meter event (tx.updated, meter.values) of a site another node holds: skipped before
    it is parsed (it would only feed the watchdog of a site this node does not watch). An
    event whose site is unknown here is not foreign: it is parsed as before."""
    if fields.get("type") not in POWER_EVENTS:
        return False
    site = fields.get("site_id") or svc._station_site.get(fields.get("station_id", ""))
    return site is not None and site not in svc.held


def _note_power(svc: SmartChargingService, event: Event) -> None:
    """Remember the last metered power of a session (the watchdog compares it with its limit)."""
    power = event.data.get("power_w")
    if event.evse_id is None or not event.tx_ref or power is None:
        return
    try:
        value = float(power)
    except (TypeError, ValueError):
        return
    if value == value and abs(value) != float("inf"):
        site = event.site_id or svc._station_site.get(event.station_id)
        svc.metered.note((event.station_id, int(event.evse_id)), site, event.tx_ref, value,
                         event.ts.timestamp())
