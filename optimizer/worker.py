"""The optimizer worker: session events in, per-EVSE schedules out (docs/smart-charging.md).

Loop:
1. `XREADGROUP` the `evfleet:events` stream as consumer group `optimizer` (several workers
   share the stream; each entry goes to one worker) and `XACK` each entry once handled.
2. Events that change what a site should do mark it dirty: `tx.started`, `tx.ended`,
   `ev.charging_needs`, `site.limit`, `site.prices`, `station.connected/disconnected`,
   `profile.answered` with a steerable change, `tx.updated` whose charging state changed to
   SuspendedEV (`ev_suspended`: the EV takes no energy although offered), and `meter.values`
   whose power drifts from the plan by more than `meter_drift_kw` (at most once per
   `drift_min_interval_s`). The
   rolling horizon also re-plans a site when its plan's first step has passed.
3. A dirty site is solved once it has been quiet for `debounce_s` (or dirty for
   `max_delay_s`), under a per-site lease (`SET NX PX`) so only one worker solves a site at a
   time; a worker that misses the lease retries later, reading fresh state. A worker that is
   behind (several sites due) solves them one at a time, the longest-waiting first, and reads
   the stream (without blocking) between two solves, so each solve starts from the latest
   requests of every site. An event the site's last snapshot already saw (its stream id is
   older than the Redis time at which that snapshot's read started, less `SNAPSHOT_SKEW_MS`)
   asks for nothing: the plan already rests on it. Only the newest request per site is
   planned, never a backlog of stale ones.
4. The solve runs in a thread with a time limit; on timeout or error the worker falls back to
   a safe baseline (`optimizer.solve.fallback_schedule`) and says so (`status: fallback`).
5. It writes `schedule:{sid}:{eid}` per EVSE, `site:{id}:plan` and appends `schedule.planned`
   in one MULTI; the csms smart-charging service turns that into SetChargingProfile calls.

Debounce and lease timing use the event loop's monotonic time (real seconds: a solve costs
real CPU whatever the simulation speed); every timestamp written comes from the shared clock.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from evfleet.clock import Clock, ClockSpec, RealClock, ScaledClock, describe, read_shared_clock
from evfleet.events import Event, EventType
from evfleet.isotime import parse_iso
from evfleet.keys import Keys
from evfleet.logs import log_context
from evfleet.store.lag import GroupLagPoll, StreamLag, track
from evfleet.store.owned import DEL_IF_OWNED
from evfleet.store.sites import DEFAULT_SITE_LIMIT_KW
from evfleet.tasks import stop_tasks
from optimizer import consumer, peers, plan_json
from optimizer.consumer import GROUP
from optimizer.min_power import ev_min_kw
from optimizer.problem import Schedule
from optimizer.publish import plan_documents, planned_kw_at, write_plan
from optimizer.reference import with_references
from optimizer.shaping import shape
from optimizer.site_reader import ReadMemo, read_site
from optimizer.snapshot import Snapshot, SnapshotConfig, build_instance
from optimizer.standing import kept_documents, plan_inputs, standing_plan_holds

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger(__name__)

HISTORY_LEN = 60

TRIGGERS = {
    EventType.TX_STARTED, EventType.TX_ENDED, EventType.EV_CHARGING_NEEDS, EventType.SITE_LIMIT,
    EventType.SITE_PRICES, EventType.STATION_CONNECTED, EventType.STATION_DISCONNECTED,
    EventType.SITE_OVER_LIMIT, EventType.EVSE_NONCOMPLIANT,
}

KEEPABLE = {t.value for t in (EventType.TX_STARTED, EventType.TX_ENDED, EventType.EV_CHARGING_NEEDS,
                              EventType.SITE_LIMIT, EventType.SITE_PRICES, EventType.STATION_CONNECTED,
                              EventType.STATION_DISCONNECTED)} | {"lease_busy", "ev_suspended"}
"""Re-plan reasons whose effect `optimizer.standing` sees in the snapshot (others always re-solve)."""


def _unchanged_needs(event: Event) -> bool:
    """A needs event that changes nothing to plan: rejected, or a repeat of the session's request."""
    return event.type == EventType.EV_CHARGING_NEEDS and event.data.get("status") in ("Rejected", "Repeated")


def _ev_suspended(event: Event) -> bool:
    """A transaction's charging state changed to SuspendedEV: the EV takes no energy although offered
    (full: the snapshot then plans an EV without needs at 0, `ev_full`). Only the change
    (triggerReason ChargingStateChanged; OCPP 1.6: a StatusNotification), not every periodic sample
    that repeats the state. An ISO 15118 EV whose own schedule asks 0 changes nothing the plan rests
    on: the re-plan keeps the standing plan (`optimizer.standing`), so no profile is re-sent."""
    return (event.type == EventType.TX_UPDATED and event.data.get("charging_state") == "SuspendedEV"
            and event.data.get("trigger_reason") == "ChargingStateChanged")


SNAPSHOT_SKEW_MS = 1000
"""With one event stream per shard (Redis Cluster layout): margin for clock skew between the servers
that stamp stream ids and the one that answered TIME before a snapshot; an event stamped less than
this before the snapshot's read started still re-plans its site (a re-plan too many, never one too
few). With one stream (one server) ids and TIME come from one clock: no margin."""


@dataclass(frozen=True)
class WorkerConfig:
    """Settings of one optimizer worker (flags of `evfleet optimizer`)."""

    sites: tuple[str, ...] = ()
    """Sites this worker solves (empty = every site)."""
    strategy: str = "cost"
    horizon_steps: int = 96
    step_minutes: int = 15
    debounce_s: float = 1.0
    max_delay_s: float = 5.0
    solve_timeout_s: float = 10.0
    meter_drift_kw: float = 2.0
    drift_min_interval_s: float = 60.0
    lease_ttl_s: float = 60.0
    default_limit_kw: float = DEFAULT_SITE_LIMIT_KW
    """Limit of a site without one while no csms has published `default_site_limit_kw` (it governs)."""
    default_site: str = "default"
    consumer: str = field(default_factory=lambda: f"worker-{uuid.uuid4().hex[:8]}")
    block_ms: int = 200
    stickiness: float = 1e-3
    """K16: cost per kWh (relative to the largest price) of moving an EV away from its previous plan."""
    group_lag: bool = False
    """Read the consumer group's lag (XINFO GROUPS, every `GROUP_POLL_S`) for /metrics (set when the
    worker serves /metrics: `metrics_port`)."""

    def snapshot_config(self) -> SnapshotConfig:
        """The instance-building settings."""
        return SnapshotConfig(horizon_steps=self.horizon_steps, step_minutes=self.step_minutes,
                              strategy_kind=self.strategy if self.strategy in (
                                  "cost", "profit", "service_time") else "cost")


# --- the worker -----------------------------------------------------------------------------

@dataclass
class _SiteState:
    first_dirty: float | None = None
    last_dirty: float | None = None
    last_solve: float = -1e18
    plan: dict[str, Any] | None = None
    reasons: set[str] = field(default_factory=set)
    snapshot_ms: int = 0
    """Redis time (ms) at which the read of the site's last snapshot started (0: none yet)."""
    rolls_of: dict[str, Any] | None = None
    rolls_at: datetime | None = None

    def first_step_end(self) -> datetime | None:
        """When the plan's first step ends (the rolling horizon re-plans the site then), parsed
        once per plan: `_due` asks it of every site on every turn of the worker's loop (twice per
        plan solved), and parsing each plan's start there was a third of that loop's CPU (issue 14)."""
        plan = self.plan
        if plan is None:
            return None
        if self.rolls_of is not plan:
            self.rolls_of, self.rolls_at = plan, parse_iso(plan["start"]) + timedelta(seconds=plan["step_s"])
        return self.rolls_at


class OptimizerWorker:
    """One worker process's loop (see module doc)."""

    def __init__(self, redis: Redis, keys: Keys, cfg: WorkerConfig, clock: Clock | None = None) -> None:
        self.redis = redis
        self.keys = keys
        self.cfg = cfg
        self._fixed_clock = clock
        self.clock: Clock = clock or RealClock()
        self._ignored_stale: ClockSpec | None = None
        self.sites: dict[str, _SiteState] = {}
        self._station_site: dict[str, str] = {}
        self._release = redis.register_script(DEL_IF_OWNED)
        self._read_memo = ReadMemo()
        self.solves = 0
        self.fallbacks = 0
        self.stale_skipped = 0
        """Events not acted on: the site's last snapshot had already seen them (`seen_by_snapshot`)."""
        self.stream_lag = StreamLag("optimizer")
        """How far the worker is behind the stream (exposed while `run` runs: `evfleet.store.lag`)."""
        self._group_lag = GroupLagPoll()

    # -- setup ---------------------------------------------------------------------------
    async def refresh_clock(self) -> None:
        """Follow the shared ClockSpec in `evfleet:clock` (unless a clock was injected)."""
        if self._fixed_clock is not None:
            return
        shared = await read_shared_clock(self.redis, self.keys.clock())
        if shared is not None and shared.live:
            if not isinstance(self.clock, ScaledClock) or self.clock.spec() != shared.spec:
                log.info("following %s", describe(shared))
                self.clock = ScaledClock.from_spec(shared.spec)
            return
        if shared is not None and shared.spec != self._ignored_stale:
            log.warning("ignoring %s in %s: planning in real time", describe(shared), self.keys.clock())
            self._ignored_stale = shared.spec
        if isinstance(self.clock, ScaledClock):
            log.info("the shared clock is gone: back to real time")
            self.clock = RealClock()

    async def ensure_group(self) -> None:
        """Create the consumer group (from the stream's end) if it does not exist."""
        await consumer.ensure_group(self.redis, self.keys)

    async def ack_stale(self, min_idle_ms: int = 60_000) -> int:
        """Acknowledge entries a dead worker left pending (start-up re-plans every site anyway)."""
        return await consumer.ack_stale(self.redis, self.keys, self.cfg.consumer, min_idle_ms)

    async def known_sites(self) -> list[str]:
        """Sites to plan: the site set plus the default site, filtered by `cfg.sites`."""
        sites = {str(s) for s in await self.redis.smembers(self.keys.sites())} | {self.cfg.default_site}
        if self.cfg.sites:
            sites &= set(self.cfg.sites)
        return sorted(sites)

    def _mine(self, site_id: str) -> bool:
        return not self.cfg.sites or site_id in self.cfg.sites

    def mark_dirty(self, site_id: str, reason: str) -> None:
        """Ask for a (debounced) re-solve of a site."""
        if not self._mine(site_id):
            return
        st = self.sites.setdefault(site_id, _SiteState())
        now = asyncio.get_running_loop().time()
        st.first_dirty = st.first_dirty if st.first_dirty is not None else now
        st.last_dirty = now
        st.reasons.add(reason)

    # -- events --------------------------------------------------------------------------
    async def site_of(self, event: Event) -> str:
        """The site an event belongs to."""
        if event.site_id:
            return event.site_id
        if not event.station_id:
            return self.cfg.default_site
        if event.station_id not in self._station_site:
            site = await self.redis.hget(self.keys.station(event.station_id), "site_id")
            self._station_site[event.station_id] = str(site) if site else self.cfg.default_site
        return self._station_site[event.station_id]

    def seen_by_snapshot(self, site_id: str, stamp_ms: int | None) -> bool:
        """True if the site's last snapshot read started after the event stamped `stamp_ms` (its
        stream id) was written, `SNAPSHOT_SKEW_MS` included: its plan already rests on it."""
        st = self.sites.get(site_id)
        skew_ms = SNAPSHOT_SKEW_MS if len(self.keys.event_streams()) > 1 else 0
        return stamp_ms is not None and st is not None and stamp_ms < st.snapshot_ms - skew_ms

    async def handle(self, event: Event, stamp_ms: int | None = None) -> None:
        """Update the worker's view from one event (`stamp_ms`: the ms of its stream id, if known)."""
        site = await self.site_of(event)
        if event.type == EventType.TX_ENDED and event.tx_ref:
            await self.record_history(event.tx_ref)
        if self.seen_by_snapshot(site, stamp_ms):
            self.stale_skipped += 1
            return
        if event.type in TRIGGERS and not _unchanged_needs(event):
            self.mark_dirty(site, event.type.value)
        elif _ev_suspended(event):
            self.mark_dirty(site, "ev_suspended")
        if event.type == EventType.PROFILE_ANSWERED and (
                event.data.get("steerable") is False
                or (event.data.get("kind") == "probe" and event.data.get("status") == "Accepted")):
            self.mark_dirty(site, "steerable")
        elif event.type == EventType.METER_VALUES and event.evse_id and "power_w" in event.data:
            self._check_drift(site, event)

    def _check_drift(self, site: str, event: Event) -> None:
        st = self.sites.get(site)
        if st is None or st.plan is None or event.data.get("power_w") is None:
            return
        planned = planned_kw_at(st.plan, f"{event.station_id}/{event.evse_id}", self.clock.now())
        if planned is None:
            return
        drift_kw = abs(float(event.data["power_w"]) / 1000.0 - planned)
        now = asyncio.get_running_loop().time()
        if drift_kw > self.cfg.meter_drift_kw and now - st.last_solve >= self.cfg.drift_min_interval_s:
            self.mark_dirty(site, "meter_drift")

    async def record_history(self, ref: str) -> None:
        """Append an ended session's energy (`ref`: its tx_ref) to its driver's history (seed-001 input)."""
        tx = await self.redis.hgetall(self.keys.transaction(ref))
        token = tx.get("id_token")
        if not token or not tx.get("energy_wh"):
            return
        ended = tx.get("ended_at") or self.clock.now().isoformat()
        started = parse_iso(str(tx.get("started_at") or ended))
        row = json.dumps({"ended_at": ended, "weekday": started.weekday(),
                          "energy_kwh": round(float(tx["energy_wh"]) / 1000.0, 3)})
        pipe = self.redis.pipeline(transaction=True)
        pipe.lpush(self.keys.energy_history(str(token)), row)
        pipe.ltrim(self.keys.energy_history(str(token)), 0, HISTORY_LEN - 1)
        await pipe.execute()

    # -- solving -------------------------------------------------------------------------
    async def solve_site(self, site_id: str, reasons: set[str] | None = None) -> dict[str, Any] | None:
        """Snapshot, solve (thread, time limit, fallback) and write a site's plan; None if leased.

        With `reasons` all in KEEPABLE (what the snapshot comparison sees), a standing plan made from
        the same inputs is re-published instead of re-solved (`optimizer.standing`)."""
        lease_key = self.keys.optimizer_lease(site_id)
        token = f"{self.cfg.consumer}:{uuid.uuid4().hex[:6]}"
        if not await self.redis.set(lease_key, token, nx=True, px=int(self.cfg.lease_ttl_s * 1000)):
            return None
        try:
            with log_context(site=site_id):  # every log line of this solve carries "site"
                return await self._solve_and_write(site_id, bool(reasons) and (reasons or set()) <= KEEPABLE)
        finally:
            await self._release(keys=[lease_key], args=[token])

    async def _solve_and_write(self, site_id: str, may_keep: bool = False) -> dict[str, Any]:
        await self.refresh_clock()
        secs, micros = await self.redis.time()  # before the read: what the snapshot sees (seen_by_snapshot)
        self.sites.setdefault(site_id, _SiteState()).snapshot_ms = int(secs) * 1000 + int(micros) // 1000
        now = self.clock.now()
        state = await read_site(self.redis, self.keys, site_id, now, self.cfg.default_limit_kw,
                                self.cfg.default_site, memo=self._read_memo)
        previous_raw = await self.redis.get(self.keys.site_plan(site_id))
        previous = plan_json.loads(previous_raw) if previous_raw else {}
        snap = build_instance(state, now, self.cfg.snapshot_config())
        min_kw = ev_min_kw(state)
        plan_id = f"{site_id}-{uuid.uuid4().hex[:10]}"
        if may_keep and standing_plan_holds(previous, snap, min_kw, state.limit_kw, now):
            plan, per_evse = kept_documents(previous, plan_id, self.clock.now(), snap.instance.start)
            plan["prices"] = snap.prices if state.prices else None
        else:
            snap = with_references(snap, previous, self.cfg.stickiness)
            t0 = time.perf_counter()
            # 0 or >= each EV's minimum, then the blocks' sum flat at the same cost and energies;
            # checked against the site limit (`optimizer.shaping`)
            schedule, refused = shape(snap.instance, await self._solve(snap), min_kw)
            if refused:
                log.error("site %s: the plan shaped to the EV minimum power exceeds the site limit %.1f kW "
                          "at %d step(s) (first: step %d, %.2f kW over); publishing the LP's schedule",
                          site_id, state.limit_kw, len(refused), min(refused), refused[min(refused)])
            solve_s = time.perf_counter() - t0
            plan, per_evse = plan_documents(site_id, snap, schedule, plan_id=plan_id, limit_kw=state.limit_kw,
                                            computed_at=self.clock.now(), solve_s=solve_s,
                                            strategy=self.cfg.strategy)
            plan["inputs"] = plan_inputs(snap, min_kw, state.limit_kw, now)
            if not state.prices:  # no tariff on the site: the csms sends limits only (no salesTariff)
                plan["prices"] = None
        await write_plan(self.redis, self.keys, self.clock.now(), site_id, plan_id, plan, per_evse, previous)
        self.solves += 1
        if plan.get("kept"):
            log.info("site %s: plan %s keeps the standing plan (nothing material changed)", site_id, plan_id)
        elif plan["status"] == "fallback" or "fell back to baseline" in plan["message"]:
            self.fallbacks += 1
            log.warning("site %s: fallback plan %s (%s)", site_id, plan_id, plan["message"])
        else:
            log.info("site %s: plan %s %s in %.3fs for %d EVs", site_id, plan_id, plan["status"],
                     plan["solve_s"], len(per_evse))
        return plan

    async def _solve(self, snap: Snapshot) -> Schedule:
        from optimizer.solve import fallback_schedule, solve

        inst = snap.instance
        timeout = self.cfg.solve_timeout_s
        try:
            return await asyncio.wait_for(asyncio.to_thread(solve, inst, self.cfg.strategy, timeout),
                                          timeout + min(2.0, timeout))
        except TimeoutError:
            return fallback_schedule(inst, f"solve did not finish within {timeout:g}s")

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Consume events and solve dirty sites until cancelled (or `stop` is set)."""
        await self.ensure_group()
        stale = await self.ack_stale()
        if stale:
            log.info("acknowledged %d events left pending by stopped workers", stale)
        await self.refresh_clock()
        for site in await self.known_sites():
            self.mark_dirty(site, "startup")
        presence = asyncio.create_task(peers.keep_alive(self.redis, self.keys, self.cfg.consumer),
                                       name="optimizer-presence")
        watched = asyncio.get_running_loop().time()
        self.stream_lag = track("optimizer")
        try:
            while stop is None or not stop.is_set():
                # a site due: read what is there without waiting, solve one, read again (module doc)
                await self._read_events(block=not self._due())
                if asyncio.get_running_loop().time() - watched >= peers.WATCH_S:
                    watched = asyncio.get_running_loop().time()
                    await self._take_over_dead_peers()
                if self.cfg.group_lag:  # XINFO GROUPS, at most once per GROUP_POLL_S
                    await self._group_lag.poll(self.redis, self.keys.event_streams())
                await self._solve_due(limit=1)
        finally:  # bounded: a Redis command can lose a cancellation (evfleet.tasks)
            self.stream_lag.close()
            await stop_tasks([presence], what="optimizer presence")

    async def _take_over_dead_peers(self) -> None:
        """Re-plan every site when another worker died (see optimizer.peers)."""
        for dead in await peers.dead_peers(self.redis, self.keys, GROUP, self.cfg.consumer):
            sites = await self.known_sites()
            if await peers.rescue(self.redis, self.keys, GROUP, self.cfg.consumer, dead, sites):
                for site in sites:
                    self.mark_dirty(site, f"worker {dead} died")

    async def _read_events(self, block: bool = True) -> None:
        """Handle the new entries (`optimizer.consumer.read_events`: drains a backlog)."""
        await consumer.read_events(self.redis, self.keys, self.cfg.consumer, self.cfg.block_ms, self.handle,
                                   block, self.stream_lag)

    async def _read_once(self, block: bool) -> int:
        """One XREADGROUP's entries handled and acknowledged; returns the most entries of one stream."""
        return await consumer.read_once(self.redis, self.keys, self.cfg.consumer, self.cfg.block_ms,
                                        self.handle, block, self.stream_lag)

    def _due(self) -> list[str]:
        """Sites to solve now (quiet for `debounce_s` or dirty for `max_delay_s`), the longest
        waiting first; marks sites whose plan's first step has passed (rolling horizon)."""
        loop_now = asyncio.get_running_loop().time()
        clock_now = self.clock.now()
        due: list[tuple[float, str]] = []
        for site_id, st in self.sites.items():
            if st.plan is not None and st.first_dirty is None:
                rolls_at = st.first_step_end()
                if rolls_at is not None and clock_now >= rolls_at:
                    self.mark_dirty(site_id, "rolling_horizon")
            if st.first_dirty is None or st.last_dirty is None:
                continue
            quiet = loop_now - st.last_dirty >= self.cfg.debounce_s
            overdue = loop_now - st.first_dirty >= self.cfg.max_delay_s
            if quiet or overdue:
                due.append((st.first_dirty, site_id))
        return [site_id for _, site_id in sorted(due)]

    async def _solve_due(self, limit: int | None = None) -> None:
        """Solve the due sites (`_due`), at most `limit` of them."""
        due = self._due()
        for site_id in due[:limit]:
            st = self.sites[site_id]
            loop_now = asyncio.get_running_loop().time()
            waited_s = loop_now - (st.first_dirty if st.first_dirty is not None else loop_now)
            reasons = sorted(st.reasons)
            st.first_dirty = st.last_dirty = None
            st.reasons = set()
            plan = await self.solve_site(site_id, set(reasons))
            if plan is None:  # another worker holds the lease: try again shortly with fresh state
                self.mark_dirty(site_id, "lease_busy")
                st.first_dirty = loop_now - self.cfg.max_delay_s + 0.5
                continue
            st.plan = plan
            st.last_solve = asyncio.get_running_loop().time()
            log.debug("site %s solved for %s after waiting %.1f s (%d sites were due)", site_id,
                      ",".join(reasons), waited_s, len(due))
