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
- `tx.started` / `ev.charging_needs`: if no plan-based profile reaches the session within
  `interim_profile_after_s`, send an interim profile (fair share of the remaining headroom,
  capped by `fallback_limit_kw`); the real one follows when the plan arrives (K15).
- `ev.charging_schedule`: K17 check of the EV's own plan against the limits we sent; a breach
  is logged, counted (`evfleet_k17_schedule_violations_total`) and our profile re-sent.
- every answer is recorded in `profile:{sid}:{eid}` and `applied_limit_w`; NotImplemented or
  NotSupported marks the EVSE `steerable=0` (budgeted at its maximum by the optimizer).
- per-session counters in `tx:{ref}:loop` (docs/redis-schema.md).

A session is identified by its `tx_ref` (station, transactionId, generation) in plans, records
and events; the station's own transactionId only goes into the profiles sent to it.

Interim and lease timers use real seconds (they measure how long the optimizer and nodes take,
not simulated time); every timestamp written comes from the shared clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter

from csms.commands import CommandClient, CommandReply, Outcome
from csms.context import CsmsContext
from csms.settings import CsmsSettings
from csms.smart_charging import budget, planner, safety
from csms.smart_charging.planner import Series
from evfleet.clock import Clock
from evfleet.events import Event, EventType, event_fields
from evfleet.keys import Keys
from evfleet.records import DEFAULT_MAX_POWER_W
from evfleet.store.sites import site_station_ids
from evfleet.txprofile import (
    DEFAULT_VOLTAGE_V,
    EvLimits,
    EvseElectrical,
    ProfileError,
    build_tx_profile,
    energy_report,
    parse_ts,
    profile_series_w,
    stable_profile_id,
)

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger(__name__)

K17_VIOLATIONS = Counter("evfleet_k17_schedule_violations_total",
                         "EV charging schedules (NotifyEVChargingSchedule) above the limits we sent")
PROFILES_SENT = Counter("evfleet_smart_charging_profiles_sent_total", "TxProfiles sent", ["kind"])
PROFILES_ANSWERED = Counter("evfleet_smart_charging_profile_answers_total", "Answers to TxProfiles",
                            ["result"])
PROFILE_BUILD_FAILURES = Counter(
    "evfleet_smart_charging_profile_build_failures_total",
    "Profiles that could not be built from an EV's charging needs (the EVSE got its safe minimum)")
CHURN_SKIPPED = Counter("evfleet_k16_replans_skipped_total",
                        "Re-planned schedules not sent because no limit moved by more than the threshold")

STREAM_MAXLEN = 100_000
TX_RACE_REASONS = {"TxNotFound", "UnknownTransaction"}
"""Rejection reasons that mean "that transaction is gone", not "this station refuses profiles"."""
MAX_ROUNDS = 8


@dataclass
class EvseInfo:
    """What the service needs to know about one EVSE right now."""

    station_id: str
    evse_id: int
    online: bool
    steerable: bool
    electrical: EvseElectrical
    transaction_id: str
    """The running transaction's OCPP transactionId ("" if none): what profiles carry."""
    record: dict[str, Any] | None
    needs: dict[str, Any] | None
    default_w: float | None = None
    """Limit of the TxDefaultProfile the station accepted (None = none installed)."""
    tx_ref: str = ""
    """The running transaction's `tx_ref` ("" if none): its identity in plans and records."""
    metered_max_w: float = 0.0
    """Highest power metered on the EVSE (`metered_max_w`)."""
    noncompliant_w: float | None = None
    """What the EVSE draws while it is non-compliant (`noncompliant_w`; None = compliant)."""
    refusals: int = 0
    retry_after_s: float = 0.0
    """Unix time from which a refusing (steerable=0) EVSE may be tried again."""

    @property
    def key(self) -> str:
        """`sid/eid`."""
        return f"{self.station_id}/{self.evse_id}"

    def applied(self, now_s: float) -> Series:
        """The series counted against the site limit now (`budget.counted_series`)."""
        return budget.counted_series(self._budget_state(self.noncompliant_w), now_s)

    def allowed(self, now_s: float) -> Series:
        """What the EVSE is allowed to draw (as `applied`, ignoring its non-compliance)."""
        return budget.counted_series(self._budget_state(None), now_s)

    def _budget_state(self, noncompliant_w: float | None) -> budget.EvseBudgetState:
        rec = self.record or {}
        series = rec.get("applied_series_w")
        return budget.EvseBudgetState(
            transaction_id=self.tx_ref, online=self.online, steerable=self.steerable,
            max_power_w=self.electrical.max_power_w, metered_max_w=self.metered_max_w,
            record_tx=str(rec.get("tx_ref") or ""),
            record_series=[(float(t), float(v)) for t, v in series] if series else None,
            default_w=self.default_w, noncompliant_w=noncompliant_w)

    def has_profile(self) -> bool:
        """An accepted profile for the running transaction exists."""
        rec = self.record
        return bool(rec and rec.get("tx_ref") == self.tx_ref and rec.get("applied_series_w"))

    def ev_limits(self) -> EvLimits:
        """The EV's limits from its charging needs (this session's only)."""
        n = self.needs if self.needs and self.needs.get("tx_ref") == self.tx_ref else {}
        return EvLimits(min_current_a=n.get("ev_min_current_a"), max_current_a=n.get("ev_max_current_a"),
                        min_power_w=n.get("ev_min_power_w"), max_power_w=n.get("ev_max_power_w"),
                        max_schedule_tuples=n.get("max_schedule_tuples"))


@dataclass
class _Site:
    queue: asyncio.Queue[tuple[str, Any]] = field(default_factory=asyncio.Queue)
    task: asyncio.Task[None] | None = None


def _f(value: Any, default: float) -> float:
    try:
        return float(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


class SmartChargingService:
    """The service's state and loop (one per csms node)."""

    def __init__(self, redis: Redis, keys: Keys, clock: Clock, settings: CsmsSettings, node_id: str,
                 commands: CommandClient | None = None, lease_ttl_s: float = 15.0) -> None:
        self.redis = redis
        self.keys = keys
        self.clock = clock
        self.settings = settings
        self.node_id = node_id
        self.commands = commands or CommandClient(redis, keys, clock, settings.call_timeout_s)
        self.lease_ttl_s = lease_ttl_s
        self.sites: dict[str, _Site] = {}
        self.held: set[str] = set()
        self._station_site: dict[str, str] = {}
        self._timers: set[asyncio.Task[None]] = set()
        self._known_evses: set[tuple[str, int]] = set()
        self._interim_due: dict[str, dict[tuple[str, int], str]] = {}
        self._plan_energy: dict[int, tuple[float, float]] = {}
        """id(payload) -> (planned kWh, allowed kWh) of the plan profiles being sent (profile.sent data)."""
        self._refused: set[str] = set()
        """Sites where a station refused a profile since the last enforcement pass."""
        self._fallback: set[str] = set()
        """Sites without a plan covering their sessions: headroom is shared fairly (`share_fairly`)."""
        self._power: dict[tuple[str, int], tuple[str, float]] = {}
        """(station, evse) -> (tx_ref, last metered power W), from the event stream."""
        self._noncompliant = budget.Persistence(settings.noncompliant_after_s)
        self._compliant = budget.Persistence(settings.noncompliant_after_s)
        self._over = budget.Persistence(settings.over_limit_after_s)
        self._alarmed: set[str] = set()
        self._booted: dict[str, set[str]] = {}
        """Stations (re)booted since the site's last default pass: re-sent defaults, probed at once."""
        self._defaults_queued: set[str] = set()
        self._tick_queued: set[str] = set()
        self._refusing: dict[str, set[tuple[str, int]]] = {}
        """site -> EVSEs with steerable=0 (probed after their backoff; filled on refusal and reconcile)."""

    # --- leases -------------------------------------------------------------------------
    async def holds(self, site_id: str) -> bool:
        """True if this node holds (or just took) the site's lease."""
        key = self.keys.smart_charging_lease(site_id)
        ttl_ms = int(self.lease_ttl_s * 1000)
        if await self.redis.set(key, self.node_id, nx=True, px=ttl_ms):
            if site_id not in self.held:
                self.held.add(site_id)
                self.enqueue(site_id, "reconcile", None)
            return True
        owner = await self.redis.get(key)
        if owner == self.node_id:
            await self.redis.pexpire(key, ttl_ms)
            if site_id not in self.held:  # handed to this node: bring the site to its limit and plan
                self.held.add(site_id)
                self.enqueue(site_id, "reconcile", None)
            return True
        self.held.discard(site_id)
        return False

    async def _renew_leases(self) -> None:
        while True:
            await asyncio.sleep(self.lease_ttl_s / 3)
            for site_id in list(self.held):
                await self.holds(site_id)

    async def _watchdog(self) -> None:
        """Every `watchdog_interval_s`: a metered check of each held site (`safety.tick`)."""
        while True:
            await asyncio.sleep(self.settings.watchdog_interval_s)
            for site_id in list(self.held):
                if site_id not in self._tick_queued:  # a slow site gets one tick at a time
                    self._tick_queued.add(site_id)
                    self.enqueue(site_id, "tick", None)

    # --- event intake -------------------------------------------------------------------
    async def site_of(self, event: Event) -> str:
        """The site an event belongs to."""
        if event.site_id:
            return event.site_id
        if event.station_id not in self._station_site:
            site = await self.redis.hget(self.keys.station(event.station_id), "site_id")
            self._station_site[event.station_id] = str(site) if site else self.settings.default_site
        return self._station_site[event.station_id]

    def enqueue(self, site_id: str, kind: str, payload: Any) -> None:
        """Hand work to the site's serial task."""
        site = self.sites.setdefault(site_id, _Site())
        site.queue.put_nowait((kind, payload))
        if site.task is None or site.task.done():
            site.task = asyncio.create_task(self._site_loop(site_id, site), name=f"smart-charging:{site_id}")

    async def dispatch(self, event: Event) -> None:
        """Route one stream event to its site's task (only for sites this node holds)."""
        relevant = {EventType.SCHEDULE_PLANNED, EventType.TX_STARTED, EventType.TX_ENDED,
                    EventType.EV_CHARGING_NEEDS, EventType.EV_CHARGING_SCHEDULE, EventType.STATION_BOOTED,
                    EventType.SITE_LIMIT}
        if event.type in (EventType.TX_UPDATED, EventType.METER_VALUES):
            self._note_power(event)
            return
        if event.type == EventType.CONNECTOR_STATUS:
            evse = (event.station_id, event.evse_id or 0)
            if evse[1] and evse not in self._known_evses:  # a new EVSE: it needs its default profile
                self._known_evses.add(evse)
                site_id = await self.site_of(event)
                if await self.holds(site_id):
                    self._defaults_due(site_id, None)
            return
        if event.type not in relevant:
            return
        if event.type == EventType.EV_CHARGING_NEEDS and event.data.get("status") == "Rejected":
            return
        if event.type == EventType.EV_CHARGING_NEEDS and event.data.get("status") == "Repeated":
            if event.tx_ref:  # the same request again: counted, nothing re-planned or reset
                await self.redis.hincrby(self.keys.session_loop(event.tx_ref), "needs_repeated", 1)
            return
        if event.type == EventType.TX_ENDED and event.evse_id is not None:
            self._power.pop((event.station_id, int(event.evse_id)), None)
        site_id = await self.site_of(event)
        if not await self.holds(site_id):
            return
        if event.type == EventType.STATION_BOOTED:
            self._defaults_due(site_id, event.station_id)
            return
        if event.type in (EventType.TX_STARTED, EventType.EV_CHARGING_NEEDS):
            if event.type == EventType.EV_CHARGING_NEEDS:
                await self._needs_received(event)
            self._start_interim_timer(site_id, event)
        self.enqueue(site_id, event.type.value, event)

    def _note_power(self, event: Event) -> None:
        """Remember the last metered power of a session (the watchdog compares it with its limit)."""
        power = event.data.get("power_w")
        if event.evse_id is None or not event.tx_ref or power is None:
            return
        try:
            value = float(power)
        except (TypeError, ValueError):
            return
        if value == value and abs(value) != float("inf"):
            self._power[(event.station_id, int(event.evse_id))] = (event.tx_ref, value)

    async def _site_loop(self, site_id: str, site: _Site) -> None:
        while True:
            try:  # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation
                async with asyncio.timeout(60):
                    kind, payload = await site.queue.get()
            except TimeoutError:
                return
            try:
                await self._handle(site_id, kind, payload)
            except asyncio.CancelledError:
                raise
            except Exception:  # one bad event must not stop the site's loop; it is logged with context
                log.exception("smart charging: %s on site %s failed", kind, site_id)

    async def _handle(self, site_id: str, kind: str, payload: Any) -> None:
        if kind == "reconcile":  # lease taken (start, take-over): the configured limit holds at once
            await self.ensure_defaults(site_id)
            await self.enforce_limit(site_id)
            await self.apply_plan(site_id)
        elif kind == "tick":
            self._tick_queued.discard(site_id)
            await safety.tick(self, site_id)
        elif kind == EventType.SCHEDULE_PLANNED.value:
            self._fallback.discard(site_id)
            await self.apply_plan(site_id)
        elif kind == EventType.SITE_LIMIT.value:
            await self.enforce_limit(site_id)
            await self.ensure_defaults(site_id)
            await safety.share_fairly(self, site_id)
        elif kind == "defaults":  # stations booted / EVSEs appeared since the last pass (one pass)
            self._defaults_queued.discard(site_id)
            await self.ensure_defaults(site_id, frozenset(self._booted.pop(site_id, set())))
        elif kind == "interim":
            await self.send_interims(site_id)
        elif kind == EventType.TX_STARTED.value:
            await safety.share_fairly(self, site_id)  # in fallback mode: re-share at once
        elif kind == EventType.TX_ENDED.value:
            await self._tx_ended(payload)
            await safety.share_fairly(self, site_id)
        elif kind == EventType.EV_CHARGING_SCHEDULE.value:
            await self.check_ev_schedule(site_id, payload)
        if site_id in self._refused:  # a station refused: it now counts at its maximum
            self._refused.discard(site_id)
            await self.enforce_limit(site_id)
            await safety.share_fairly(self, site_id)

    def _defaults_due(self, site_id: str, booted: str | None) -> None:
        """Queue one default-profile pass for the site (boots at fleet start coalesce into one)."""
        if booted:
            self._booted.setdefault(site_id, set()).add(booted)
        if site_id not in self._defaults_queued:
            self._defaults_queued.add(site_id)
            self.enqueue(site_id, "defaults", None)

    def _start_interim_timer(self, site_id: str, event: Event) -> None:
        if event.evse_id is None or not event.tx_ref:
            return
        key, txid = (event.station_id, int(event.evse_id)), event.tx_ref

        async def fire() -> None:
            await asyncio.sleep(self.settings.interim_profile_after_s)
            due = self._interim_due.setdefault(site_id, {})
            first = not due
            due[key] = txid
            if first:  # one queue item handles every interim that falls due meanwhile
                self.enqueue(site_id, "interim", None)

        task = asyncio.create_task(fire())
        self._timers.add(task)
        task.add_done_callback(self._timers.discard)

    # --- reading state ------------------------------------------------------------------
    async def site_limit_w(self, site_id: str) -> float:
        """The site's import limit in W."""
        limit = await self.redis.hget(self.keys.site(site_id), "limit_kw")
        return _f(limit, self.settings.default_site_limit_kw) * 1000.0

    async def site_evses(self, site_id: str) -> dict[str, EvseInfo]:
        """Every EVSE of the site that matters for the budget, with its current state."""

        stations = await site_station_ids(self.redis, self.keys, site_id, self.settings.default_site)
        pipe = self.redis.pipeline(transaction=False)
        for sid in stations:
            pipe.hgetall(self.keys.station(sid))
            pipe.hkeys(self.keys.station_connectors(sid))
        raw = await pipe.execute()
        pairs: list[tuple[str, int, dict[str, str]]] = []
        active = [str(t) for t in await self.redis.smembers(self.keys.transactions_active())]
        tx_pipe = self.redis.pipeline(transaction=False)
        for txid in active:
            tx_pipe.hmget(self.keys.transaction(txid), ["station_id", "evse_id"])
        tx_evses: dict[str, set[int]] = {}
        for sid_eid in await tx_pipe.execute():
            if sid_eid[0] and str(sid_eid[1] or "").isdigit():
                tx_evses.setdefault(sid_eid[0], set()).add(int(sid_eid[1]))
        for i, sid in enumerate(stations):
            eids = {int(f.split("/", 1)[0]) for f in raw[2 * i + 1] if f.split("/", 1)[0].isdigit()}
            eids |= tx_evses.get(sid, set())
            pairs += [(sid, eid, raw[2 * i]) for eid in sorted(eids) if eid > 0]
        return await self._infos(pairs)

    async def evse_infos(self, pairs: list[tuple[str, int]]) -> dict[str, EvseInfo]:
        """State of a few EVSEs (without reading the whole site)."""
        pipe = self.redis.pipeline(transaction=False)
        for sid, _ in pairs:
            pipe.hgetall(self.keys.station(sid))
        stations = await pipe.execute()
        return await self._infos([(sid, eid, st) for (sid, eid), st in zip(pairs, stations, strict=True)])

    async def _infos(self, pairs: list[tuple[str, int, dict[str, str]]]) -> dict[str, EvseInfo]:
        pipe = self.redis.pipeline(transaction=False)
        for sid, eid, _ in pairs:
            pipe.hgetall(self.keys.station_evse(sid, eid))
            pipe.get(self.keys.applied_profile(sid, eid))
            pipe.get(self.keys.charging_needs(sid, eid))
        raw = await pipe.execute()
        out: dict[str, EvseInfo] = {}
        for i, (sid, eid, station) in enumerate(pairs):
            h, rec, needs = raw[3 * i], raw[3 * i + 1], raw[3 * i + 2]
            unit = h.get("rate_unit") or "A"
            info = EvseInfo(
                station_id=sid, evse_id=eid, online=station.get("online") == "1",
                steerable=h.get("steerable", "1") != "0",
                electrical=EvseElectrical(
                    rate_unit="W" if unit == "W" else "A", phases=int(_f(h.get("phases"), 3)),
                    voltage_v=_f(h.get("voltage_v"), DEFAULT_VOLTAGE_V),
                    max_power_w=_f(h.get("max_power_w"), 0.0) or DEFAULT_MAX_POWER_W),
                transaction_id=h.get("transaction_id", ""),
                record=json.loads(rec) if rec else None, needs=json.loads(needs) if needs else None,
                default_w=_f(h.get("default_limit_w"), -1.0) if h.get("default_limit_w") else None,
                tx_ref=h.get("tx_ref", ""),
                metered_max_w=_f(h.get("metered_max_w"), 0.0),
                noncompliant_w=_f(h.get("noncompliant_w"), 0.0) if h.get("noncompliant_w") else None,
                refusals=int(_f(h.get("refusals"), 0)), retry_after_s=_f(h.get("retry_after"), 0.0))
            out[info.key] = info
        return out

    # --- plan application (K15 delivery, K16) ---------------------------------------------
    async def apply_plan(self, site_id: str) -> dict[str, int]:
        """Bring the stations of a site to its latest plan, safely ordered. Returns counters."""
        raw = await self.redis.get(self.keys.site_plan(site_id))
        stats = {"sent": 0, "accepted": 0, "skipped": 0, "blocked": 0, "failed": 0}
        if not raw:
            return stats
        plan = json.loads(raw)
        t_real = time.perf_counter()
        now_s = self.clock.timestamp()
        evses = await self.site_evses(site_id)
        applied = {k: e.applied(now_s) for k, e in evses.items()}
        planned: dict[str, Series] = {}
        payloads: dict[str, dict[str, Any]] = {}
        start = parse_ts(plan["start"])
        for key, limits_kw in plan.get("evses", {}).items():
            info = evses.get(key)
            ref = plan.get("transactions", {}).get(key)
            if (info is None or not info.online or not info.steerable or not ref
                    or info.tx_ref != ref):
                continue
            try:
                payload = self._build(info, info.transaction_id, start, int(plan["step_s"]), limits_kw,
                                      prices=plan.get("prices"), now=self.clock.now())
            except ProfileError as err:
                log.warning("plan %s: cannot build a profile for %s: %s", plan["plan_id"], key, err)
                continue
            payloads[key] = payload
            planned[key] = self._abs_series(payload, info)
            self._plan_energy[id(payload)] = energy_report(start=start, step_s=int(plan["step_s"]),
                                                           limits_kw=limits_kw, payload=payload,
                                                           evse=info.electrical)
        budget_w = _f(plan.get("limit_kw"), 0.0) * 1000.0 or await self.site_limit_w(site_id)
        budget_w = min(budget_w, await self.site_limit_w(site_id))
        threshold_w = self.settings.replan_threshold_kw * 1000.0
        # interim profiles always give way to the plan (K15 follow-up): no churn filter for them
        churnable = {k: v for k, v in applied.items() if k in planned and evses[k].has_profile()
                     and (evses[k].record or {}).get("kind") in ("plan", "plan-step")}
        decision = planner.churn_filter(churnable, planned, budget_w, threshold_w, now_s)
        target = {k: applied[k] for k in applied}
        target.update(decision.target)
        if decision.skipped:
            pipe = self.redis.pipeline(transaction=False)
            for key in decision.skipped:
                pipe.hincrby(self.keys.session_loop(evses[key].tx_ref), "replans_skipped", 1)
            await pipe.execute()
            stats["skipped"] += len(decision.skipped)
            CHURN_SKIPPED.inc(len(decision.skipped))
        try:
            stats_run = await self._execute(site_id, evses, applied, target, payloads, budget_w,
                                            plan["plan_id"], "plan")
        finally:
            for payload in payloads.values():
                self._plan_energy.pop(id(payload), None)
        for k, v in stats_run.items():
            stats[k] += v
        log.info("site %s plan %s applied in %.3f s (real): %s", site_id, plan["plan_id"],
                 time.perf_counter() - t_real, stats)
        return stats

    def _abs_series(self, payload: Mapping[str, Any], info: EvseInfo) -> Series:
        start, periods = profile_series_w(dict(payload), info.electrical.voltage_v, info.electrical.phases)
        t0 = start.timestamp()
        return [(t0 + s, w) for s, w in periods]

    async def _execute(self, site_id: str, evses: dict[str, EvseInfo], applied: dict[str, Series],
                       target: dict[str, Series], payloads: dict[str, dict[str, Any]], budget_w: float,
                       plan_id: str, kind: str) -> dict[str, int]:
        """Send batches from `planner.next_batch` until nothing more can move."""
        stats = {"sent": 0, "accepted": 0, "blocked": 0, "failed": 0}
        for _ in range(MAX_ROUNDS):
            now_s = self.clock.timestamp()
            batch = planner.next_batch(applied, target, budget_w, now_s)
            if not batch:
                break
            sends = []
            for change in list(batch):
                info = evses[change.key]
                try:
                    payload = payloads[change.key] if change.final else self._step_payload(
                        info, change.series, payloads[change.key])
                except Exception as err:  # one EVSE's profile must not stop the others
                    log.error("site %s: no profile for %s (%r): it keeps its applied limit",
                              site_id, change.key, err)
                    target[change.key] = applied[change.key]
                    batch.remove(change)
                    continue
                step_kind = kind if change.final else kind + "-step"
                sends.append(self._send(site_id, info, payload, plan_id, step_kind))
            results = await asyncio.gather(*sends, return_exceptions=True)
            stats["sent"] += len(batch)
            for change, result in zip(batch, results, strict=True):
                if isinstance(result, BaseException):  # unknown whether it applied: count the higher
                    if isinstance(result, asyncio.CancelledError):
                        raise result
                    log.error("profile to %s failed: %r", change.key, result)
                    result = (False, planner.pointwise(applied[change.key], change.series, now_s, "max"))
                ok, series = result
                if ok:
                    applied[change.key] = series
                    stats["accepted"] += 1
                else:
                    applied[change.key] = series
                    target[change.key] = series
                    stats["failed"] += 1
        now_s = self.clock.timestamp()
        stats["blocked"] = sum(1 for k in target
                               if planner.max_abs_diff_w(applied[k], target[k], now_s) > 1.0)
        return stats

    def _step_payload(self, info: EvseInfo, series: Series, final_payload: dict[str, Any]) -> dict[str, Any]:
        """A TxProfile for an intermediate (decreasing) step, never above `series` at any instant."""
        profile = final_payload["chargingProfile"]
        start = parse_ts(profile["chargingSchedule"][0]["startSchedule"])
        step_s = 60
        end_s = max([t for t, _ in series] + [self.clock.timestamp()]) + step_s
        limits_kw = [w / 1000.0 for w in planner.series_to_steps(series, start.timestamp(), step_s, end_s)]
        return self._build(info, profile["transactionId"], start, step_s, limits_kw, profile_id=profile["id"])

    def _build(self, info: EvseInfo, txid: str, start: datetime, step_s: int, limits_kw: list[float],
               profile_id: int | None = None, prices: list[float] | None = None,
               now: datetime | None = None) -> dict[str, Any]:
        """A TxProfile for one EVSE; never fails because of the EV's data.

        If the EV's charging needs make the profile impossible to build (e.g. maxScheduleTuples
        -1, evMinCurrent 1e308), the EVSE gets its safe minimum instead: the lowest of the
        limits, without the EV's parameters, logged with the reason. Only a missing transaction
        id raises (ProfileError).
        """
        pid = profile_id if profile_id is not None else stable_profile_id(info.station_id, info.evse_id)
        try:
            return build_tx_profile(evse_id=info.evse_id, transaction_id=txid, start=start, step_s=step_s,
                                    limits_kw=limits_kw, evse=info.electrical, ev=info.ev_limits(),
                                    profile_id=pid, prices=prices, now=now)
        except ProfileError:
            if not txid:
                raise
            reason = "profile error"
        except (ValueError, OverflowError, TypeError, ArithmeticError) as err:
            reason = repr(err)
        safe_kw = max(0.0, min([float(v) for v in limits_kw if v == v] or [0.0]))
        log.warning("%s tx %s: cannot build a profile from the EV's charging needs (%s); "
                    "sending its safe minimum %.1f kW without them", info.key, txid, reason, safe_kw)
        PROFILE_BUILD_FAILURES.inc()
        return build_tx_profile(evse_id=info.evse_id, transaction_id=txid, start=start, step_s=step_s,
                                limits_kw=[safe_kw], evse=info.electrical, ev=EvLimits(), profile_id=pid)

    def _energy_fields(self, payload: dict[str, Any]) -> dict[str, float]:
        """planned_kwh / allowed_kwh of a plan profile (what the plan gives, what the profile allows)."""
        report = self._plan_energy.get(id(payload))
        return {} if report is None else {"planned_kwh": report[0], "allowed_kwh": report[1]}

    async def _send(self, site_id: str, info: EvseInfo, payload: dict[str, Any], plan_id: str,
                    kind: str) -> tuple[bool, Series]:
        """Send one TxProfile, record the answer; (accepted, series now counted for the EVSE)."""
        now_s = self.clock.timestamp()
        old = info.applied(now_s)
        new = self._abs_series(payload, info)
        txid, ref = payload["chargingProfile"]["transactionId"], info.tx_ref
        sent_at = self.clock.now().isoformat()
        await self._event(EventType.PROFILE_SENT, site_id, info, ref, {
            "plan_id": plan_id, "kind": kind, "profile_id": payload["chargingProfile"]["id"],
            "periods": len(payload["chargingProfile"]["chargingSchedule"][0]["chargingSchedulePeriod"]),
            "limit_w": planner.value_at(new, now_s), **self._energy_fields(payload)})
        PROFILES_SENT.labels(kind).inc()
        reply = await self.commands.call(info.station_id, "SetChargingProfile", payload,
                                         timeout_s=self.settings.call_timeout_s)
        accepted, steerable, counted = self._outcome(reply, old, new, now_s)
        status = (reply.payload or {}).get("status") if reply.ok else reply.outcome.value
        PROFILES_ANSWERED.labels(str(status)).inc()
        prev = info.record or {}
        loop_key = self.keys.session_loop(ref)
        renegotiates = accepted and planner.max_abs_diff_w(old, counted, now_s) > 1.0
        if renegotiates:  # an ISO 15118 EV (it sent needs) that already has a schedule renegotiates
            needs_n, plans_n = await self.redis.hmget(loop_key, ["needs_received", "ev_plans_received"])
            had_profile = prev.get("tx_ref") == ref and bool(prev.get("accepted_profile"))
            renegotiates = _f(needs_n, 0.0) > 0 and (had_profile or _f(plans_n, 0.0) > 0)
        record = {
            "plan_id": plan_id, "kind": kind if accepted else prev.get("kind", ""), "transaction_id": txid,
            "tx_ref": ref,
            "profile": payload, "status": status, "outcome": reply.outcome.value, "error": reply.error,
            "sent_at": sent_at, "answered_at": self.clock.now().isoformat(),
            "limit_w": planner.value_at(counted, self.clock.timestamp()),
            "applied_series_w": [[t, w] for t, w in counted],
            "accepted_profile": payload if accepted else prev.get("accepted_profile"),
        }
        if not accepted and prev.get("tx_ref") != ref:
            record["kind"] = ""
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(self.keys.applied_profile(info.station_id, info.evse_id), json.dumps(record, default=str))
        evse_fields: dict[Any, Any] = {"applied_limit_w": repr(record["limit_w"])}
        if not steerable:
            evse_fields.update(self._refusal_fields(site_id, info))
        elif accepted and (info.refusals or kind == "probe"):
            evse_fields.update({"steerable": "1", "refusals": "0", "retry_after": "0"})
            info.refusals = 0
        pipe.hset(self.keys.station_evse(info.station_id, info.evse_id), mapping=evse_fields)
        pipe.hincrby(loop_key, "schedules_sent", 1)
        pipe.hset(loop_key, mapping={"last_schedule_sent_at": sent_at, "last_schedule_status": str(status),
                                     "last_plan_id": plan_id})
        if kind.startswith("interim"):
            pipe.hincrby(loop_key, "interim_sent", 1)
        if renegotiates:
            pipe.hincrby(loop_key, "renegotiations", 1)
        pipe.xadd(self.keys.events(), event_fields(  # type: ignore[arg-type]
            EventType.PROFILE_ANSWERED, self.clock.now(), info.station_id, info.evse_id, ref, site_id,
            {"plan_id": plan_id, "kind": kind, "status": status, "outcome": reply.outcome.value,
             "error": reply.error, "steerable": steerable, "limit_w": record["limit_w"]}),
            maxlen=STREAM_MAXLEN, approximate=True)
        await pipe.execute()
        info.record = record
        if not steerable:
            log.warning("station %s EVSE %s refused a profile (%s): budgeted at its maximum, retry in %.0f s",
                        info.station_id, info.evse_id, status,
                        info.retry_after_s - self.clock.timestamp())
        elif accepted and kind == "probe":
            info.steerable = True
        return accepted, counted

    def _outcome(self, reply: CommandReply, old: Series, new: Series,
                 now_s: float) -> tuple[bool, bool, Series]:
        """(accepted, steerable, series to count) for a station's answer.

        Rejected (other than for a transaction that just ended), NotImplemented, NotSupported
        or any other CALLERROR: the station does not obey profiles (steerable=False; budgeted at
        its metered maximum, tried again after a backoff or a reboot). A timeout counts
        max(old, new): the station may have applied it.
        """
        if reply.ok:
            payload = reply.payload or {}
            if payload.get("status") == "Accepted":
                return True, True, new
            reason = str((payload.get("statusInfo") or {}).get("reasonCode") or "")
            return False, reason in TX_RACE_REASONS, old
        if reply.outcome is Outcome.CALL_ERROR:
            return False, False, old
        if reply.outcome is Outcome.TIMEOUT:  # unknown whether it applied: count the higher one
            return False, True, planner.pointwise(old, new, now_s, "max")
        return False, True, old

    def _refusal_fields(self, site_id: str, info: EvseInfo) -> dict[str, str]:
        """EVSE hash fields for a station that just refused a profile (backoff before a retry)."""
        refusals = info.refusals + 1
        retry = self.clock.timestamp() + budget.refusal_backoff_s(refusals, self.settings.refusal_backoff_s)
        info.refusals, info.retry_after_s, info.steerable = refusals, retry, False
        self._refused.add(site_id)
        self._refusing.setdefault(site_id, set()).add((info.station_id, info.evse_id))
        return {"steerable": "0", "refusals": str(refusals), "retry_after": repr(retry)}

    def _fields(self, etype: EventType, site_id: str, data: Mapping[str, Any],
                info: EvseInfo | None = None) -> Any:
        """Stream fields of an event about a site (or one of its EVSEs), stamped now."""
        return event_fields(etype, self.clock.now(), info.station_id if info else "",
                            info.evse_id if info else None, info.tx_ref if info else "", site_id,
                            dict(data))

    async def _event(self, etype: EventType, site_id: str, info: EvseInfo, ref: str,
                     data: Mapping[str, Any]) -> None:
        await self.redis.xadd(self.keys.events(), event_fields(  # type: ignore[arg-type]
            etype, self.clock.now(), info.station_id, info.evse_id, ref, site_id, data),
            maxlen=STREAM_MAXLEN, approximate=True)

    # --- fail-safe: a lower site limit is honoured at once, optimizer or not --------------------
    async def enforce_limit(self, site_id: str) -> dict[str, int]:
        """If the applied limits exceed the (new) site limit, scale the steerable ones down now.

        Every steerable, online session's applied series is multiplied by one factor so the sum
        fits the site limit at every instant (fixed loads, i.e. unsteerable and offline EVSEs,
        count as they are). All changes are decreases, sent in one batch; the optimizer's next
        plan then redistributes the power.
        """
        stats = {"sent": 0, "accepted": 0, "blocked": 0, "failed": 0}
        evses = await self.site_evses(site_id)
        now_s = self.clock.timestamp()
        budget_w = await self.site_limit_w(site_id)
        applied = {k: e.applied(now_s) for k, e in evses.items()}
        movable = [k for k, e in evses.items() if e.tx_ref and e.online and e.steerable]
        fixed = [applied[k] for k in applied if k not in movable]
        points = planner.grid(list(applied.values()), now_s)
        fixed_load = planner.total(fixed, points)
        movable_load = planner.total([applied[k] for k in movable], points)
        if not movable or all(f + m <= budget_w + 1.0 for f, m in zip(fixed_load, movable_load, strict=True)):
            return stats
        factor = min((max(0.0, budget_w - f) / m) if m > 0 else 1.0
                     for f, m in zip(fixed_load, movable_load, strict=True))
        factor = max(0.0, min(1.0, factor))
        target = dict(applied)
        payloads: dict[str, dict[str, Any]] = {}
        for key in movable:
            info = evses[key]
            scaled = [(t, w * factor) for t, w in applied[key]]
            base = (info.record or {}).get("accepted_profile") if info.has_profile() else None
            if base is None:
                base = self._build(info, info.transaction_id, self.clock.now(), 900, [0.0])
            payload = self._step_payload(info, scaled, base)
            payloads[key] = payload
            target[key] = self._abs_series(payload, info)
        log.warning("site %s: applied limits exceed the site limit %.0f W; scaling sessions by %.3f now",
                    site_id, budget_w, factor)
        return await self._execute(site_id, evses, applied, target, payloads, budget_w,
                                   f"limit-{int(now_s)}", "limit")

    # --- reservation: a TxDefaultProfile on every EVSE (budget.reserve_w) ------------------
    async def ensure_defaults(self, site_id: str, force: frozenset[str] = frozenset()) -> int:
        """Install/lower the TxDefaultProfile of every EVSE of the site; returns profiles sent.

        limit = `budget.reserve_w` (min(reserve_kw_per_evse, site limit / EVSEs, EVSE max),
        capped by `fallback_limit_kw`): what a plug-in may draw before the csms admits the
        session; idle EVSEs are counted at it. Defaults are only installed or lowered here
        (every change is a decrease); `force` stations (just booted: they may have lost it) get
        theirs again. A refusing EVSE whose backoff has passed is probed with its default.
        """
        evses = await self.site_evses(site_id)
        if not evses:
            return 0
        site_w = await self.site_limit_w(site_id)
        now_s = self.clock.timestamp()
        sends = []
        for info in evses.values():
            limit_w = budget.reserve_w(self.settings.reserve_kw_per_evse * 1000.0, site_w, len(evses),
                                       info.electrical.max_power_w)
            if self.settings.fallback_limit_kw is not None:
                limit_w = min(limit_w, self.settings.fallback_limit_kw * 1000.0)
            if not info.online:
                continue
            if not info.steerable:
                self._refusing.setdefault(site_id, set()).add((info.station_id, info.evse_id))
                if info.tx_ref or (info.retry_after_s > now_s and info.station_id not in force):
                    continue  # a refusing EVSE with a session is probed with a TxProfile (safety.tick)
            if (info.steerable and info.station_id not in force and info.default_w is not None
                    and info.default_w <= limit_w + 1.0):
                continue
            sends.append(self._send_default(site_id, info, limit_w))
        results = await asyncio.gather(*sends, return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                log.error("site %s: default profile failed: %r", site_id, r)
        return len(results)

    async def _send_default(self, site_id: str, info: EvseInfo, limit_w: float) -> bool:
        """One TxDefaultProfile (stack level 0, one period); record `default_limit_w` if accepted."""
        from evfleet.txprofile import floor1, iso_z, power_to_unit

        unit_limit = power_to_unit(limit_w, info.electrical, EvLimits())
        pid = stable_profile_id(info.station_id, info.evse_id) + 0x40000000
        period: dict[str, Any] = {"startPeriod": 0, "limit": floor1(unit_limit)}
        if info.electrical.rate_unit == "A":
            period["numberPhases"] = info.electrical.phases
        payload = {"evseId": info.evse_id, "chargingProfile": {
            "id": pid, "stackLevel": 0, "chargingProfilePurpose": "TxDefaultProfile",
            "chargingProfileKind": "Absolute", "chargingSchedule": [{
                "id": pid, "startSchedule": iso_z(self.clock.now()),
                "chargingRateUnit": info.electrical.rate_unit, "chargingSchedulePeriod": [period]}]}}
        counted_w = float(self._abs_series(payload, info)[0][1])
        await self._event(EventType.PROFILE_SENT, site_id, info, "", {
            "kind": "default", "plan_id": f"default-{time.time_ns()}", "profile_id": pid, "periods": 1,
            "limit_w": counted_w})
        PROFILES_SENT.labels("default").inc()
        reply = await self.commands.call(info.station_id, "SetChargingProfile", payload,
                                         timeout_s=self.settings.call_timeout_s)
        zero = planner.constant(0.0)
        accepted, steerable, _ = self._outcome(reply, zero, zero, 0.0)
        status = (reply.payload or {}).get("status") if reply.ok else reply.outcome.value
        PROFILES_ANSWERED.labels(str(status)).inc()
        fields: dict[Any, Any] = {}
        if accepted:
            fields["default_limit_w"] = repr(counted_w)
            if info.refusals or not info.steerable:  # a probe after a refusal: steerable again
                fields.update({"steerable": "1", "refusals": "0", "retry_after": "0"})
                info.steerable, info.refusals = True, 0
        if not steerable:
            fields.update(self._refusal_fields(site_id, info))
        if fields:
            await self.redis.hset(self.keys.station_evse(info.station_id, info.evse_id), mapping=fields)
        await self._event(EventType.PROFILE_ANSWERED, site_id, info, "", {
            "kind": "default", "status": status, "outcome": reply.outcome.value, "error": reply.error,
            "steerable": steerable, "limit_w": counted_w if accepted else None})
        return accepted

    # --- fail-safe interim profile (K15) -------------------------------------------------
    async def send_interims(self, site_id: str) -> int:
        """Sessions still without a profile `interim_profile_after_s` after they started: the site
        shares its headroom fairly until a plan covers them (`safety.share_fairly`)."""
        due = self._interim_due.pop(site_id, {})
        return await safety.share_fairly(self, site_id, due)

    # --- K15 bookkeeping, tx end, K17 -------------------------------------------------------
    async def _needs_received(self, event: Event) -> None:
        txid = event.tx_ref
        if not txid:
            return
        energy = event.data.get("meter_wh")  # metered when the needs came (the csms node wrote it)
        if energy is None:
            energy = await self.redis.hget(self.keys.transaction(txid), "energy_wh")
        pipe = self.redis.pipeline(transaction=True)
        pipe.hincrby(self.keys.session_loop(txid), "needs_received", 1)
        pipe.hset(self.keys.session_loop(txid), mapping={
            "needs_received_at": event.ts.isoformat(), "energy_at_needs_wh": str(_f(energy, 0.0)),
            "departure_time": str(event.data.get("departure_time") or ""),
            "energy_amount_wh": str(event.data.get("energy_amount_wh") or "")})
        await pipe.execute()

    async def _tx_ended(self, event: Event) -> None:
        if event.evse_id is None:
            return
        # a non-compliance mark belongs to the session (the next one starts compliant)
        await self.redis.hdel(self.keys.station_evse(event.station_id, event.evse_id), "noncompliant_w")
        key = self.keys.applied_profile(event.station_id, event.evse_id)
        raw = await self.redis.get(key)
        if not raw:
            return
        record = json.loads(raw)
        if record.get("tx_ref") != event.tx_ref:
            return
        now_s = self.clock.timestamp()
        record.update({"kind": "ended", "applied_series_w": [[now_s, 0.0]], "limit_w": 0.0})
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(key, json.dumps(record, default=str))
        pipe.hset(self.keys.station_evse(event.station_id, event.evse_id), "applied_limit_w", "0.0")
        await pipe.execute()

    async def check_ev_schedule(self, site_id: str, event: Event) -> dict[str, Any] | None:
        """K17: compare the EV's plan with the profile we applied; record; on breach count + re-send."""
        if event.evse_id is None:
            return None
        infos = await self.evse_infos([(event.station_id, int(event.evse_id))])
        info = infos.get(f"{event.station_id}/{event.evse_id}")
        txid = event.tx_ref
        loop_key = self.keys.session_loop(txid) if txid else None
        if loop_key:
            await self.redis.hincrby(loop_key, "ev_plans_received", 1)
        if info is None or not info.has_profile():
            return None
        sent_payload = (info.record or {}).get("accepted_profile")
        if not sent_payload:
            return None
        ours = self._abs_series(sent_payload, info)
        ev_plan = ev_plan_series(event.data, info.electrical)
        if ev_plan is None:
            return None
        now_s = self.clock.timestamp()
        if loop_key:
            await self.redis.hincrby(loop_key, "k17_checks", 1)
        if _planned_before(event.data, (info.record or {}).get("sent_at")):
            # made before we sent the profile now applied (for an older one, or the SECC's default):
            # the station renegotiates onto the new one anyway, so a breach here is not the EV's, and
            # re-sending would renegotiate twice
            if loop_key:
                await self.redis.hincrby(loop_key, "k17_stale", 1)
            return None
        tol_w = max(50.0, 0.1 * info.electrical.w_per_a())  # one 0.1 A rounding step
        result = planner.check_ev_plan(ev_plan, ours, now_s, tol_w)
        key = self.keys.ev_schedule(info.station_id, info.evse_id)
        raw = await self.redis.get(key)
        record = json.loads(raw) if raw else dict(event.data)
        record.update({"within_limits": result.within_limits,
                       "worst_excess_w": round(result.worst_excess_w, 1),
                       "checked_at": self.clock.now().isoformat()})
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(key, json.dumps(record, default=str))
        if loop_key:
            pipe.hset(loop_key, mapping={"ev_plan_received_at": event.ts.isoformat(),
                                         "ev_plan_within_limits": "1" if result.within_limits else "0"})
            if not result.within_limits:
                pipe.hincrby(loop_key, "k17_violations", 1)
        await pipe.execute()
        if not result.within_limits:
            K17_VIOLATIONS.inc()
            digest = hashlib.sha1(json.dumps(sent_payload, sort_keys=True).encode()).hexdigest()[:16]
            again = bool(loop_key) and await self.redis.hget(str(loop_key), "k17_resent_profile") == digest
            log.warning("K17: EV plan on %s/%s (tx %s, time base %s; our profile sent %s) exceeds our "
                        "limit by %.0f W at %s; %s", info.station_id, info.evse_id, txid,
                        event.data.get("time_base"), (info.record or {}).get("sent_at"),
                        result.worst_excess_w, result.at_s,
                        "breach persists after a re-send: not re-sending the same profile again" if again
                        else "re-sending profile")
            if again:  # no endless re-send/renegotiation cycle with an EV that ignores the limits
                return record
            if loop_key:
                pipe = self.redis.pipeline(transaction=True)
                pipe.hincrby(loop_key, "k17_resent", 1)
                pipe.hset(loop_key, "k17_resent_profile", digest)
                await pipe.execute()
            await self._send(site_id, info, sent_payload, str((info.record or {}).get("plan_id", "")),
                             str((info.record or {}).get("kind") or "plan"))
        return record

    # --- main loop ------------------------------------------------------------------------
    async def run(self) -> None:
        """Follow the event stream until cancelled."""
        renew = asyncio.create_task(self._renew_leases())
        watchdog = asyncio.create_task(self._watchdog())
        # start at the current tail id (not "$" on every call: no event lost between two reads)
        tail = await self.redis.xrevrange(self.keys.events(), count=1)
        last_id: str = str(tail[0][0]) if tail else "0-0"
        try:
            sites = {str(s) for s in await self.redis.smembers(self.keys.sites())}
            sites.add(self.settings.default_site)
            for site_id in sorted(sites):
                await self.holds(site_id)
            while True:
                resp: Any = await self.redis.xread({self.keys.events(): last_id}, count=500, block=1000)
                _raise_if_cancelling()
                for _stream, entries in resp or []:
                    for entry_id, fields in entries:
                        last_id = entry_id
                        try:
                            event = Event.from_fields(fields)
                        except (ValueError, KeyError) as err:
                            log.warning("smart charging: skipping malformed event %s: %s", entry_id, err)
                            continue
                        await self.dispatch(event)
        finally:
            renew.cancel()
            watchdog.cancel()
            for site in self.sites.values():
                if site.task:
                    site.task.cancel()
            for t in list(self._timers):
                t.cancel()
            with contextlib.suppress(Exception):
                for site_id in list(self.held):
                    if await self.redis.get(self.keys.smart_charging_lease(site_id)) == self.node_id:
                        await self.redis.delete(self.keys.smart_charging_lease(site_id))


def _raise_if_cancelling() -> None:
    """Re-raise a cancellation that a library swallowed (asyncio.wait_for race in Python 3.11)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _planned_before(data: Mapping[str, Any], sent_at: Any) -> bool:
    """The EV's plan (its time base: when the station offered the schedule) predates our profile."""
    base = data.get("time_base") or (data.get("schedule") or {}).get("startSchedule")
    if not base or not sent_at:
        return False
    try:
        return parse_ts(str(base)).timestamp() < parse_ts(str(sent_at)).timestamp()
    except ValueError:
        return False


def ev_plan_series(data: Mapping[str, Any], evse: EvseElectrical) -> Series | None:
    """The EV's own plan (NotifyEVChargingSchedule record) as an absolute series in W."""
    schedule = data.get("schedule") or {}
    periods = schedule.get("chargingSchedulePeriod") or []
    if not periods:
        return None
    base = schedule.get("startSchedule") or data.get("time_base")
    if not base:
        return None
    t0 = parse_ts(str(base)).timestamp()
    unit = schedule.get("chargingRateUnit", "W")
    out: Series = []
    for p in periods:
        limit = float(p["limit"])
        watts = limit * evse.voltage_v * (p.get("numberPhases") or evse.phases) if unit == "A" else limit
        out.append((t0 + int(p["startPeriod"]), watts))
    return sorted(out)


async def run(ctx: CsmsContext) -> None:
    """Run the smart-charging service of this csms node until cancelled."""
    if not ctx.settings.smart_charging:
        log.info("smart charging disabled (EVFLEET_SMART_CHARGING=0)")
        return
    service = SmartChargingService(ctx.redis, ctx.keys, ctx.clock, ctx.settings, ctx.node_id,
                                   commands=ctx.extras.get("commands"))  # the node's (own reply pool)
    ctx.extras["smart_charging"] = service
    await service.run()
