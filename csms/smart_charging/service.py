"""Smart-charging service of a csms node: plans -> SetChargingProfile, K15-K17, fail-safe.

Runs inside every csms node (`run(ctx)`), reads `evfleet:events` with plain XREAD (every node
sees every event) and acts only for the sites whose lease (`lease:smart-charging:{site}`,
`SET NX PX`, renewed) it holds, so exactly one node applies a site's plans; the calls reach
stations held by any node through the command protocol (`CommandClient`). Per site, work is
serialised in one task (a queue), so plan application, interim profiles and K17 re-sends never
interleave.

- `schedule.planned`: turn the site plan into TxProfiles (`evfleet.txprofile`), drop changes
  below `replan_threshold_kw` (K16 churn control, counted), order them with
  `planner.next_batch` (decreases confirmed before increases; sum of applied limits within the
  site limit at every instant, offline stations at their last applied limit) and send them.
- `ev.charging_needs`: a provisional profile at once (the session's share of the unallocated
  headroom, `safety.share_fairly`), before queued work; the plan replaces it if it differs (K16).
- `tx.started` / `ev.charging_needs`: if no plan-based profile reaches the session within
  `interim_profile_after_s`, the sessions without a plan share what the plan leaves (interim,
  capped by `fallback_limit_kw`); the real one follows when the plan arrives (K15).
- `ev.charging_schedule`: K17 check of the EV's own plan against the limits we sent; a breach
  is logged, counted (`evfleet_k17_schedule_violations_total`) and our profile re-sent.
- every answer is recorded in `profile:{sid}:{eid}` and `applied_limit_w`; NotImplemented or
  NotSupported marks the EVSE `steerable=0` (budgeted at its maximum by the optimizer).
- per-session counters in `tx:{ref}:loop` (docs/redis-schema.md).

A session is identified by its `tx_ref` (station, transactionId, generation) in plans, records
and events; the station's own transactionId only goes into the profiles sent to it.

Layout: this module is the thin asyncio driver (the service's state, the stream loop);
`site_task` runs each site's queue (the step per item, what goes before the next), `leases`
takes and renews the site leases, `intake` routes stream events to a site's queue, `pacing`
spaces the whole-site passes and runs K15's timers, `work` names the queue items; `budget`
states the site-limit rule and holds every policy that keeps it (counting, ordering, scaling,
churn filter, K17, fair shares);
`conversion` turns limits into payloads and answers into what counts; `actions` and `safety`
are the steps for one site; `sending` sends profiles and records answers; all reads and writes
go through the store port (`evfleet.store.port`).

Interim and lease timers use real seconds (they measure how long the optimizer and nodes take,
not simulated time); every timestamp written comes from the shared clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

from csms.commands import CommandClient
from csms.context import CsmsContext
from csms.settings import CsmsSettings
from csms.smart_charging import (
    actions,
    aside,
    balance,
    budget,
    conversion,
    defaults,
    intake,
    leases,
    metered,
    pacing,
    provisional,
    quiet,
    safety,
    sending,
    site_alarm,
    site_task,
    watchdog,
)
from csms.smart_charging.calls import Caller, LocalFirst
from csms.smart_charging.decoding import DecodeMemo, decode_all
from csms.smart_charging.evse import EvseInfo, ev_plan_series
from csms.smart_charging.inflight import InFlight
from csms.smart_charging.leases import LEASE_RECHECK_S
from csms.smart_charging.planner import Series
from csms.smart_charging.work import Work
from csms.smart_charging.writes import WriteGroup
from csms.store.port_redis import RedisStateStore
from evfleet.clock import Clock
from evfleet.events import Event, EventType
from evfleet.records import stored_float
from evfleet.store.client import own_connection
from evfleet.store.lag import StreamLag, track
from evfleet.store.port import StateStore, StoreWrite
from evfleet.store.sites import budget_kw, margin_kw
from evfleet.tasks import raise_if_cancelling, stop_tasks

__all__ = ["EvseInfo", "SmartChargingService", "Work", "ev_plan_series", "run"]

log = logging.getLogger(__name__)


class SmartChargingService:
    """The service's state and stream loop (one per csms node); each site's queue runs in
    `site_task`, the steps are in `actions`/`safety`."""

    def __init__(self, store: StateStore, clock: Clock, settings: CsmsSettings, node_id: str,
                 commands: Caller, lease_ttl_s: float = 15.0) -> None:
        self.store = store
        self.clock = clock
        self.settings = settings
        self.node_id = node_id
        self.commands = commands
        self.writes = WriteGroup(store)
        """The sends' store writes of one event-loop turn, applied together (`writes`)."""
        self.lease_ttl_s = lease_ttl_s
        self.sites: dict[str, site_task.SiteQueue] = {}
        """site -> its queue of work and the task serving it (`site_task`)."""
        self.held: set[str] = set()
        self._station_site: dict[str, str] = {}
        self._timers: set[asyncio.Task[None]] = set()
        self._known_evses: set[tuple[str, int]] = set()
        self._lease_fresh_until: dict[str, float] = {}
        """site -> monotonic time until which a held lease is taken as held without asking Redis."""
        self.lease_recheck_s = LEASE_RECHECK_S
        self._lease_taken_until: dict[str, float] = {}
        """site -> monotonic time until which a lease another node holds is not asked for again."""
        self.lease_rechecks: dict[str, asyncio.Task[bool]] = {}
        """site -> the task asking for a lease another node held (`leases.recheck_aside`)."""
        self.liveness = leases.Liveness(node_id, ttl_s=settings.smart_charging_alive_ttl_s)
        """The node's liveness token (the value of its leases) and the other holders' (`leases`)."""
        self.balance_s = settings.smart_charging_balance_s
        """How often the node compares its share of the site leases (`balance`; 0: never)."""
        self.lease_slack = settings.smart_charging_lease_slack
        """Sites held above the fair share before one is handed over (`balance`)."""
        self.handing: str | None = None
        """The site whose hand-over is queued or running (`balance`: one at a time)."""
        self.handover_after: dict[str, float] = {}
        """site -> monotonic time before which it is not chosen again (its last hand-over was left)."""
        self.defaults = defaults.DefaultsState(timeouts=defaults.TimeoutBackoff(
            settings.default_timeout_backoff_s, settings.default_timeout_backoff_max_s))
        self._starved: dict[str, set[tuple[str, int]]] = {}
        """site -> sessions that got no provisional share for want of headroom (re-shared after a wave)."""
        self._plan_blocked: set[str] = set()
        """Sites whose last plan application left increases blocked (applied again on confirmations)."""
        self._interim_due: dict[str, dict[tuple[str, int], str]] = {}
        self._plan_energy: dict[int, tuple[float, float]] = {}
        """id(payload) -> (planned kWh, allowed kWh) of the plan profiles being sent (profile.sent data)."""
        self._refused: set[str] = set()
        """Sites where a station refused a profile since the last enforcement pass."""
        self._fallback: set[str] = set()
        """Sites where a session's plan is late: unplanned sessions share (`safety.share_fairly`)."""
        self._late_since: dict[str, float] = {}
        """site -> monotonic time it entered fallback mode (`optimizer_silent_after_s` counts from it)."""
        self._plan_seen: dict[str, float] = {}
        """site -> monotonic time of its last plan (`safety.plan_arrived`)."""
        self.plan_seen_any: float | None = None
        """Monotonic time of the latest plan for any site, held here or not (`provisional.optimizer_silent`:
        an optimizer planning other sites is alive and behind, not silent)."""
        self._silent: set[str] = set()
        """Sites whose optimizer is taken as silent: every session shares the headroom."""
        self._plan_view: dict[str, provisional.PlanView] = {}
        """site -> its current plan's sessions and prices (`safety.current_plan`)."""
        self._decoded: DecodeMemo = {}
        """`decode_all`'s memo: the last decode of each EVSE read and its inputs."""
        self.stream_lag: StreamLag | None = None
        """How far `run` is behind the event stream (`evfleet.store.lag`; set while it runs)."""
        self.stream_read_interval_s = pacing.STREAM_READ_INTERVAL_S
        """Shortest time between two reads of the event stream while it keeps up (`pacing.read_pause_s`)."""
        self._provisional_due: dict[str, set[tuple[str, int]]] = {}
        """site -> EVSEs whose charging needs arrived: a provisional share goes out first thing."""
        self.metered = metered.MeteredState()
        """Last metered power per session and what the watchdog reads next (`metered`)."""
        self._between: set[str] = set()
        """Sites whose arrivals are being served between two rounds of a longer pass (not nested)."""
        self.inflight = InFlight()
        """The TxProfile calls out at once (`inflight.SENDS_OUT_MAX`)."""
        self.aside = aside.Aside()
        """Single-EVSE calls (K17 re-sends, probes) out beside the site tasks (`aside`)."""
        self.wakers: dict[str, asyncio.Event] = {}
        """site -> set when needs arrive (or its limit changes) while its pass awaits answers
        (`sending.await_answers`)."""
        self._limit_changed: set[str] = set()
        """Sites with a `site.limit` event not yet taken by their task: a pass awaiting answers
        there stops once they stop coming (`limit_changed`)."""
        self._noncompliant = budget.Persistence(settings.noncompliant_after_s)
        self._compliant = budget.Persistence(settings.noncompliant_after_s)
        self.alarms = site_alarm.SiteAlarms(settings.over_limit_after_s)
        """The over-limit alarm of each held site: since when over, raised or not (`site_alarm`)."""
        self._tick_queued: set[str] = set()
        self.quiet: dict[str, quiet.Quiet] = {}
        """Silent fallback sites whose re-shares can be skipped (`quiet`)."""
        self.pacing = pacing.Pacing()
        """When each site's next fallback re-share and interim pass may run (`pacing`)."""
        self._refusing: dict[str, set[tuple[str, int]]] = {}
        """site -> EVSEs with steerable=0 (probed after their backoff; filled on refusal and reconcile)."""

    # --- leases (`leases`) ----------------------------------------------------------------
    async def holds(self, site_id: str, renew: bool = False, aside: bool = False) -> bool:
        """True if this node holds (or just took) the site's lease (`leases.holds`)."""
        return await leases.holds(self, site_id, renew, aside)

    async def renew_leases(self) -> None:
        """Renew every held lease in one batch (`leases.renew_leases`)."""
        await leases.renew_leases(self)

    # --- event intake -------------------------------------------------------------------
    async def station_site(self, station_id: str) -> str:
        """The site of a station (cached; the default site when it names none)."""
        if station_id not in self._station_site:
            site = await self.store.station_site(station_id)
            self._station_site[station_id] = site or self.settings.default_site
        return self._station_site[station_id]

    async def site_of(self, event: Event) -> str:
        """The site an event belongs to."""
        return event.site_id or await self.station_site(event.station_id)

    def enqueue(self, site_id: str, kind: str, payload: Any) -> None:
        """Hand work to the site's serial task (`site_task.enqueue`)."""
        site_task.enqueue(self, site_id, kind, payload)

    async def _handle(self, site_id: str, kind: str, payload: Any) -> None:
        """One queue item as the site's task runs it (`site_task.handle`)."""
        await site_task.handle(self, site_id, kind, payload)

    async def dispatch(self, event: Event, batch: StoreWrite | None = None) -> None:
        """Route one stream event to its site's task (`intake.dispatch`)."""
        await intake.dispatch(self, event, batch)

    def flag_needs(self, events: Sequence[Event]) -> None:
        """Flag new needs in a read of the stream before it is dispatched (`intake.flag_needs`)."""
        intake.flag_needs(self, events)

    def foreign_power_event(self, fields: Mapping[str, str]) -> bool:
        """A meter event of a site another node holds (`intake.foreign_power_event`)."""
        return intake.foreign_power_event(self, fields)

    def needs_due(self, site_id: str, evse: tuple[str, int]) -> None:
        """New charging needs on `evse`: its provisional share goes out as the next thing the
        site's task does, or at once if that task is awaiting answers (`sending.await_answers`)."""
        self._provisional_due.setdefault(site_id, set()).add(evse)
        waker = self.wakers.get(site_id)
        if waker is not None:
            waker.set()

    def limit_changed(self, site_id: str) -> None:
        """A `site.limit` event for a site this node holds: a pass of the site awaiting answers
        stops once they stop coming (`sending.await_answers`; its calls still out go on beside the
        site's task), so the site's task reaches the enforcement without waiting for a silent
        station's call timeout, and no increase of the pass goes out under the old limit. Cleared
        when the task takes the event (`site_task.serve`)."""
        self._limit_changed.add(site_id)
        waker = self.wakers.get(site_id)
        if waker is not None:
            waker.set()

    def reshare_soon(self, site_id: str) -> None:
        """In fallback mode, sessions started or ended: one re-share soon (`pacing.reshare_soon`)."""
        pacing.reshare_soon(self, site_id)

    def start_interim_timer(self, site_id: str, event: Event) -> None:
        """K15's interim timer of a session (`pacing.start_interim_timer`)."""
        pacing.start_interim_timer(self, site_id, event)

    def defaults_due(self, site_id: str, booted: str | None) -> None:
        """Queue one default-profile pass for the site (boots at fleet start coalesce into one)."""
        if booted:
            self.defaults.booted.setdefault(site_id, set()).add(booted)
        if site_id not in self.defaults.queued:
            self.defaults.queued.add(site_id)
            self.enqueue(site_id, Work.DEFAULTS, None)

    # --- reading state ------------------------------------------------------------------
    async def site_limit_w(self, site_id: str) -> float:
        """The site's import limit in W: its own, else the published deployment default (the same
        figure the optimizer plans with), else this node's `default_site_limit_kw`."""
        limit_kw = await self.store.site_limit_kw(site_id)
        return stored_float(limit_kw, self.settings.default_site_limit_kw) * 1000.0

    async def site_budget_w(self, site_id: str) -> float:
        """What the csms may hand out at the site in W: the limit in force minus the site margin
        (the published `site_margin_kw`, else this node's), as the optimizer plans it
        (`evfleet.store.sites.budget_kw`). The margin is never allocated (budget.py)."""
        raw = await self.store.site_margin_kw()
        margin = margin_kw(raw) if raw is not None else self.settings.site_margin_kw
        return budget_kw(await self.site_limit_w(site_id) / 1000.0, margin) * 1000.0

    async def site_evses(self, site_id: str) -> dict[str, EvseInfo]:
        """Every EVSE of the site that matters for the budget, with its current state."""
        out = self.aside.snapshot()
        records = await self.store.site_evses(site_id, self.settings.default_site)
        infos = await decode_all(records, self._decoded)
        self.aside.mark(infos, out, self.clock.timestamp())
        # at 20,000 EVSEs the decode's last chunk, the notes and the caller's first loop were one
        # 70-110 ms stretch (issue 14): the notes (bookkeeping, no decision) go in steps of their own
        for _ in self.defaults.note_read_steps(site_id, infos):
            await asyncio.sleep(0)
        return infos

    async def evse_infos(self, pairs: list[tuple[str, int]]) -> dict[str, EvseInfo]:
        """State of a few EVSEs (without reading the whole site)."""
        out = self.aside.snapshot()
        infos = await decode_all(await self.store.evse_records(pairs), self._decoded)
        self.aside.mark(infos, out, self.clock.timestamp())
        return infos

    # --- the steps (actions, sending, conversion) -----------------------------------------
    async def apply_plan(self, site_id: str, seen: list[dict[str, EvseInfo]] | None = None) -> dict[str, int]:
        """Bring the stations of a site to its latest plan (`actions.apply_plan`; its read into `seen`)."""
        return await actions.apply_plan(self, site_id, seen)

    async def enforce_limit(self, site_id: str, cause: str = "",
                            seen: list[dict[str, EvseInfo]] | None = None) -> dict[str, int]:
        """Scale the steerable sessions down if the site limit is exceeded (`actions.enforce_limit`;
        `cause` labels the pass in `evfleet_smart_charging_passes_total`; its read into `seen`)."""
        return await actions.enforce_limit(self, site_id, cause, seen)

    async def ensure_defaults(self, site_id: str, force: frozenset[str] = frozenset()) -> int:
        """The reservation on every EVSE of the site, answers in the background (`defaults.ensure`)."""
        return await defaults.ensure(self, site_id, force)

    async def send_interims(self, site_id: str) -> int:
        """Sessions still without a profile `interim_profile_after_s` after they started: the site
        shares its headroom fairly until a plan covers them (`safety.share_fairly`)."""
        due = self._interim_due.pop(site_id, {})
        return await safety.share_fairly(self, site_id, due)

    async def check_ev_schedule(self, site_id: str, event: Event) -> dict[str, Any] | None:
        """K17 (`actions.check_ev_schedule`)."""
        return await actions.check_ev_schedule(self, site_id, event)

    async def between_rounds(self, site_id: str, evses: dict[str, EvseInfo], applied: dict[str, Series],
                             target: dict[str, Series], payloads: Mapping[str, Any],
                             busy: Collection[tuple[str, int]] = ()) -> None:
        """Between two rounds of a pass (or while it awaits answers, `busy` still out): provisional
        shares for needs that came meanwhile (`safety.serve_arrivals`)."""
        await safety.serve_arrivals(self, site_id, evses, applied, target, payloads, busy)

    def _abs_series(self, payload: Mapping[str, Any], info: EvseInfo) -> Series:
        return conversion.abs_series(payload, info.electrical)

    def _build(self, info: EvseInfo, txid: str, start: datetime, step_s: int, limits_kw: list[float],
               profile_id: int | None = None, prices: list[float] | None = None,
               now: datetime | None = None) -> dict[str, Any]:
        return conversion.build(info, txid, start, step_s, limits_kw, profile_id, prices, now)

    async def _execute(self, site_id: str, evses: dict[str, EvseInfo], applied: dict[str, Series],
                       target: dict[str, Series], payloads: dict[str, dict[str, Any]], budget_w: float,
                       plan_id: str, kind: str) -> dict[str, int]:
        return await sending.execute(self, site_id, evses, applied, target, payloads, budget_w, plan_id, kind)

    async def _send(self, site_id: str, info: EvseInfo, payload: dict[str, Any], plan_id: str,
                    kind: str) -> tuple[bool, Series]:
        return await sending.send(self, site_id, info, payload, plan_id, kind)

    def _fields(self, etype: EventType, site_id: str, data: Mapping[str, Any],
                info: EvseInfo | None = None) -> dict[str, str]:
        return sending.event(self, etype, site_id, data, info)

    def energy_fields(self, payload: dict[str, Any]) -> dict[str, float]:
        """planned_kwh / allowed_kwh of a plan profile (what the plan gives, what the profile allows)."""
        report = self._plan_energy.get(id(payload))
        return {} if report is None else {"planned_kwh": report[0], "allowed_kwh": report[1]}

    # --- main loop ------------------------------------------------------------------------
    async def run(self) -> None:
        """Follow the event stream until cancelled."""
        await leases.ensure_alive(self)
        renew = asyncio.create_task(leases.lease_loops(self))
        balancer = asyncio.create_task(balance.balance_loop(self), name="smart-charging:balance")
        ticks = asyncio.create_task(watchdog.queue_ticks(self))
        # start at the current tail id (not "$" on every call: no event lost between two reads)
        last_id = await self.store.events_tail()
        self.stream_lag = lag = track("smart_charging")  # evfleet_stream_lag_seconds (evfleet.store.lag)
        try:
            sites = await self.store.site_ids()
            sites.add(self.settings.default_site)
            for site_id in sorted(sites):
                await self.holds(site_id)
            skipped = [0]  # entries of the read passed over unparsed (they count towards a full read)

            def skip(fields: Mapping[str, str]) -> bool:
                if self.foreign_power_event(fields):
                    skipped[0] += 1
                    return True
                return False

            while True:
                started, skipped[0] = time.monotonic(), 0
                last_id, events = await self.store.read_events(
                    last_id, count=STREAM_READ_COUNT, block_ms=1000, skip=skip, lag=lag)
                raise_if_cancelling()  # redis-py can swallow a cancellation: evfleet.tasks
                self.flag_needs(events)
                batch = StoreWrite()  # the read's session bookkeeping in one write, not one per event
                for event in events:
                    await self.dispatch(event, batch)
                if batch:
                    await self.store.write(batch)
                # batch the stream's tail: not one round trip per event or two (pacing.read_pause_s)
                pause_s = pacing.read_pause_s(started, time.monotonic(), len(events) + skipped[0],
                                              STREAM_READ_COUNT, self.stream_read_interval_s)
                if pause_s > 0:
                    await asyncio.sleep(pause_s)
        finally:
            lag.close()
            renew.cancel()
            balancer.cancel()
            ticks.cancel()
            for site in self.sites.values():
                if site.task:
                    site.task.cancel()
            for t in [*self._timers, *self.defaults.tasks, *self.lease_rechecks.values()]:
                t.cancel()
            self.aside.cancel()
            with contextlib.suppress(Exception):
                for site_id in list(self.held):
                    await self.store.release_lease(site_id, self.liveness.token)
            # awaited, not only cancelled: a lease loop that outlived the service (a cancellation
            # swallowed by redis-py) refreshed the liveness of a stopped node against a closed Redis
            await stop_tasks([renew, balancer, ticks], timeout_s=5.0, what="smart-charging lease loops")


STREAM_READ_COUNT = 100
"""Events per read of the stream (`run`): parsed and dispatched in one event-loop callback (500
were 10-18 ms of CPU each when a node fell behind at 800 msg/s, issue 14)."""


async def run(ctx: CsmsContext) -> None:
    """Run the smart-charging service of this csms node until cancelled."""
    if not ctx.settings.smart_charging:
        log.info("smart charging disabled (EVFLEET_SMART_CHARGING=0)")
        return
    commands: Caller | None = ctx.extras.get("commands")  # the node's (own reply pool)
    if commands is None:
        commands = CommandClient(ctx.redis, ctx.keys, ctx.clock, ctx.settings.call_timeout_s)
    executor, registry = ctx.extras.get("executor"), ctx.extras.get("registry")
    if executor is not None and registry is not None:  # stations held here: in process (calls.py)
        commands = LocalFirst(commands, executor, registry)
    # the liveness refresh on a connection of its own: in a mass connect or disconnect it waited 4.6-10.9 s
    # for the node's shared pool and the node lost its sites (issue 14)
    alive_redis = own_connection(ctx.redis)
    try:
        store = RedisStateStore(ctx.redis, ctx.keys, alive_redis)
        service = SmartChargingService(store, ctx.clock, ctx.settings, ctx.node_id, commands)
        ctx.extras["smart_charging"] = service
        await service.run()
    finally:
        if alive_redis is not ctx.redis:
            await alive_redis.aclose()
