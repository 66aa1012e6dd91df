"""ISO 15118 links for a simulated station (its `evse_sim.hlc.HlcLink` seam).

- `ModelledHlcLink`: every HLC EV runs the modelled ISO 15118-2 session (`ModelledHlc`):
  cheap, for fleets of thousands.
- `JosevHlcLink`: every EVSE of the station has a real Josev SECC and, per visit, a real
  Josev EVCC on its own veth pair (`JosevHlc`); call `await link.open(station)` first.

Both relay NotifyEVChargingNeeds / NotifyEVChargingSchedule through the station's queue and
make the EV follow its own plan by capping its draw (`set_ev_limit`) at each period change.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from ocpp.charge_point import camel_to_snake_case

from evfleet.clock import Clock
from evfleet.isotime import parse_iso
from evse_sim.hlc import BasicHlc, HlcContext, charging_needs_from_ev
from evse_sim.iso15118.hlc import ModelledHlc
from evse_sim.iso15118.messages import DcNeeds, EvNeeds
from evse_sim.iso15118.schedules import SecLimits
from evse_sim.iso15118.session import FollowPlan, SeccConfig, SessionEnded
from evse_sim.iso15118.v20 import PROTOCOLS

if TYPE_CHECKING:  # pragma: no cover
    from evse_sim.core import StationCore
    from evse_sim.iso15118.bridge import JosevHlc
    from evse_sim.smart_charging import ChargingProfile
    from evse_sim.station import SimStation


class _Session(Protocol):
    def on_tx_profile(self, profile: dict[str, Any]) -> None: ...
    def stop(self) -> None: ...
    def ev_limit_w(self, now_s: float) -> float | None: ...


class StationPort:
    """`HlcStationPort` over a station core's outbound queue (payloads camelCase -> snake_case)."""

    def __init__(self, station: StationCore) -> None:
        self.station = station

    async def notify_ev_charging_needs(self, evse_id: int, payload: dict[str, Any]) -> None:
        """Queue NotifyEVChargingNeeds."""
        self.station.queue_charging_needs(evse_id, camel_to_snake_case(payload["chargingNeeds"]),
                                          payload.get("maxScheduleTuples"))

    async def notify_ev_charging_schedule(self, evse_id: int, payload: dict[str, Any]) -> None:
        """Queue NotifyEVChargingSchedule."""
        time_base = parse_iso(payload["timeBase"])
        self.station.queue_ev_charging_schedule(evse_id, camel_to_snake_case(payload["chargingSchedule"]),
                                                time_base)


def ev_needs(ctx: HlcContext, max_entries: int | None = 24) -> EvNeeds:
    """The EV's needs for the ISO 15118 model, from the station's view of the EV (AC or DC)."""
    needs = charging_needs_from_ev(ctx, max_entries or 24)
    departure = parse_iso(needs["departure_time"])
    departure_s = int((departure - ctx.now).total_seconds())
    if "dc_charging_parameters" in needs:
        dc = needs["dc_charging_parameters"]
        return EvNeeds(departure_time_s=departure_s if departure_s > 0 else None,
                       energy_wh=float(dc["energy_amount"]), ev_max_current_a=float(dc["ev_max_current"]),
                       ev_min_current_a=0.0, ev_max_voltage_v=float(dc["ev_max_voltage"]), phases=1,
                       voltage_v=ctx.evse.voltage_v, max_entries_sa_schedule_tuple=max_entries,
                       evcc_id=f"EVCC{ctx.ev.spec.ev_id}"[:20],
                       dc=DcNeeds(float(dc["ev_max_power"]), int(dc["state_of_charge"]),
                                  float(dc["ev_energy_capacity"]), int(dc["full_soc"]), ctx.evse.voltage_v))
    ac = needs["ac_charging_parameters"]
    phases = min(ctx.ev.spec.ac_phases, ctx.evse.phases)
    return EvNeeds(departure_time_s=departure_s if departure_s > 0 else None,
                   energy_wh=float(ac["energy_amount"]),
                   ev_max_current_a=float(ac["ev_max_current"]), ev_min_current_a=float(ac["ev_min_current"]),
                   ev_max_voltage_v=float(ac["ev_max_voltage"]), phases=phases, voltage_v=ctx.evse.voltage_v,
                   max_entries_sa_schedule_tuple=max_entries, evcc_id=f"EVCC{ctx.ev.spec.ev_id}"[:20])


def needs_source(station: StationCore, evse_id: int, max_entries: int | None) -> Callable[[], EvNeeds | None]:
    """What the EV on `evse_id` still needs, now (None once it left)."""
    def read() -> EvNeeds | None:
        ctx = station.hlc_context(evse_id)
        return None if ctx is None else ev_needs(ctx, max_entries)
    return read


def meter_of(station: StationCore, evse_id: int) -> Callable[[], float | None]:
    """The EVSE's energy register (Wh) as the SECC reads it."""
    def read() -> float | None:
        st = station.evses.get(evse_id)
        return None if st is None else float(st.energy_wh)
    return read


def secc_config(ctx_evse_id: int, max_power_w: float, voltage_v: float, phases: int,
                schedule_wait_s: float, enforce_pmax: bool) -> SeccConfig:
    """SECC configuration for one EVSE."""
    return SeccConfig(evse_id=ctx_evse_id, limits=SecLimits(max_power_w, voltage_v, phases),
                      schedule_wait_s=schedule_wait_s, enforce_pmax=enforce_pmax)


class _Follower:
    """Makes the EV follow its own plan: re-caps its draw at every period boundary of the plan."""

    def __init__(self, station: StationCore, evse_id: int, clock: Clock, session: _Session) -> None:
        self.station, self.evse_id, self.clock, self.session = station, evse_id, clock, session
        self.changed = asyncio.Event()
        self.task = asyncio.get_running_loop().create_task(self._run())

    def poke(self) -> None:
        """The plan changed."""
        self.changed.set()

    async def _run(self) -> None:
        while True:
            now = self.clock.timestamp()
            limit = self.session.ev_limit_w(now)
            self.station.set_ev_limit(self.evse_id, limit)
            wait_s = self._next_change_s(now)
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s / max(self.clock.speed, 1e-9)):
                    await self.changed.wait()

    def _next_change_s(self, now: float) -> float:
        follow = getattr(self.session, "follow", None)
        plan = getattr(self.session, "plan", None) or getattr(follow, "plan", None)
        base = getattr(self.session, "plan_time_base", None)
        if base is None and follow is not None:
            base = follow.time_base
        if plan is None or base is None:
            return 3600.0
        rel = now - base
        upcoming = [e.start_s - rel for e in plan.profile if e.start_s > rel + 1e-6]
        return max(0.05, min(upcoming)) if upcoming else 3600.0

    def cancel(self) -> None:
        """Stop following (EV left)."""
        self.task.cancel()


class ModelledHlcLink:
    """HlcLink running the modelled ISO 15118-2 session for each HLC EV of one station."""

    def __init__(self, schedule_wait_s: float = 1.5, loop_interval_s: float = 1.0,
                 enforce_pmax: bool = True, max_entries: int | None = 24,
                 ev_ignores_pmax: bool = False) -> None:
        self.ev_ignores_pmax = ev_ignores_pmax  # with enforce_pmax=False a bad EV plan reaches the csms
        self.schedule_wait_s = schedule_wait_s
        self.loop_interval_s = loop_interval_s
        self.enforce_pmax = enforce_pmax
        self.max_entries = max_entries
        self.sessions: dict[int, ModelledHlc] = {}
        self.history: list[ModelledHlc] = []
        self._followers: dict[int, _Follower] = {}
        self._basic = BasicHlc()

    def on_plug_in(self, ctx: HlcContext) -> None:
        """Start the EV's HLC session (AC); DC EVSEs only announce needs (no DC model yet)."""
        if ctx.evse.kind.value != "AC":
            self._basic.on_plug_in(ctx)
            return
        station = ctx.station
        cfg = secc_config(ctx.evse_id, ctx.evse.max_power_w, ctx.evse.voltage_v, ctx.evse.phases,
                          self.schedule_wait_s, self.enforce_pmax)
        evse_id, max_entries = ctx.evse_id, self.max_entries
        hlc = ModelledHlc(StationPort(station), station.clock, cfg, self.loop_interval_s,
                          ev_ignores_pmax=self.ev_ignores_pmax, meter=meter_of(station, evse_id),
                          needs_source=needs_source(station, evse_id, max_entries))
        self.sessions[ctx.evse_id] = hlc
        self.history.append(hlc)
        follower = _Follower(station, ctx.evse_id, station.clock, hlc)
        self._followers[ctx.evse_id] = follower
        # a new plan, or the session ended (after a failure the EV drops its plan: basic charging)
        hlc.on_event = lambda _s, cmd: follower.poke() if isinstance(cmd, FollowPlan | SessionEnded) else None
        hlc.start(ev_needs(ctx, self.max_entries))

    def on_profile(self, ctx: HlcContext, profile: ChargingProfile) -> None:
        """Hand the accepted TxProfile to the SECC (answer or renegotiate)."""
        hlc = self.sessions.get(ctx.evse_id)
        if hlc is not None:
            hlc.on_tx_profile(profile.to_ocpp())

    def on_unplug(self, ctx: HlcContext) -> None:
        """End the session and stop following the plan."""
        hlc = self.sessions.pop(ctx.evse_id, None)
        follower = self._followers.pop(ctx.evse_id, None)
        if follower is not None:
            follower.cancel()
        if hlc is not None:
            hlc.stop()
            hlc.close()


class JosevHlcLink:
    """HlcLink whose SECCs and EVCCs are real Josev processes (one veth pair per EVSE).

    `protocol` "2" (ISO 15118-2, AC and DC) or "20" (ISO 15118-20 AC, scheduled control mode, for
    the AC EVSEs; DC EVSEs stay on ISO 15118-2)."""

    def __init__(self, schedule_wait_s: float = 1.2, workdir: Any = None,
                 open_timeout_s: float = 90.0, protocol: str = "2") -> None:
        if protocol not in PROTOCOLS:
            raise ValueError(f"ISO 15118 protocol {protocol!r} is not one of {', '.join(PROTOCOLS)}")
        self.protocol = protocol
        self.schedule_wait_s = schedule_wait_s
        self.workdir = workdir
        self.open_timeout_s = open_timeout_s  # a JVM start + codec warm-up takes 5-60 s, more under load
        self.sessions: dict[int, JosevHlc] = {}
        self._followers: dict[int, _Follower] = {}
        self._basic = BasicHlc()  # EVs on an EVSE without a Josev SECC (before `open`)

    async def open(self, station: SimStation) -> None:
        """Start one namespace, veth pair and Josev SECC per EVSE of `station` (raises if impossible)."""
        from pathlib import Path

        from evse_sim.iso15118.bridge import JosevHlc

        for evse_id, st in station.evses.items():
            spec = st.spec
            cfg = secc_config(evse_id, spec.max_power_w, spec.voltage_v, spec.phases, self.schedule_wait_s,
                              True)
            workdir = None
            if self.workdir is not None:
                workdir = Path(self.workdir) / f"{station.id}-{evse_id}"
                workdir.mkdir(parents=True, exist_ok=True)
            dc = spec.kind.value == "DC"
            hlc = JosevHlc(StationPort(station.core), station.clock, cfg, name=f"{station.id}-{evse_id}",
                           workdir=workdir, dc=dc, protocol="2" if dc else self.protocol)
            self.sessions[evse_id] = hlc
            await hlc.open(self.open_timeout_s)

    def on_plug_in(self, ctx: HlcContext) -> None:
        """Spawn the EV's Josev EVCC (AC or DC) on the EVSE's veth pair (before `open`: needs only)."""
        hlc = self.sessions.get(ctx.evse_id)
        if hlc is None:
            self._basic.on_plug_in(ctx)
            return
        station, evse_id = ctx.station, ctx.evse_id
        follower = _Follower(station, evse_id, station.clock, hlc)
        self._followers[evse_id] = follower
        # a new plan, a DC cycle that grants another power, a new -20 target, the session stopping/failing
        wake = ("ev_plan", "hlc_failed", "dc_demand", "v20_ev_target", "power_delivery", "session_ended")
        hlc.on_event = lambda kind, data: follower.poke() if kind in wake else None
        hlc.meter = meter_of(station, evse_id)
        hlc.needs_source = needs_source(station, evse_id, None)
        hlc.start(ev_needs(ctx, None))

    def on_profile(self, ctx: HlcContext, profile: ChargingProfile) -> None:
        """Hand the TxProfile to the bridge (answers the SECC or pushes a renegotiation)."""
        hlc = self.sessions.get(ctx.evse_id)
        if hlc is not None:
            hlc.on_tx_profile(profile.to_ocpp())

    def on_unplug(self, ctx: HlcContext) -> None:
        """The EV stops its session."""
        follower = self._followers.pop(ctx.evse_id, None)
        if follower is not None:
            follower.cancel()
        hlc = self.sessions.get(ctx.evse_id)
        if hlc is not None:
            hlc.stop()

    async def close(self) -> None:
        """Stop every Josev process and namespace."""
        for follower in self._followers.values():
            follower.cancel()
        for hlc in self.sessions.values():
            await hlc.close()
