"""Asyncio adapter running the modelled ISO 15118-2 session of one EVSE (SECC + EVCC in-process).

The station plugs this in through its HLC hook: it calls `start(needs)` when an HLC EV
plugs in, `on_tx_profile(profile)` when it accepted a TxProfile for the EVSE, `update_needs`
as the battery fills, `stop()` when the EV leaves, and reads `ev_limit_w(now)` to know what
the EV itself draws (its own plan). The adapter calls back into the station through
`HlcStationPort` to send NotifyEVChargingNeeds / NotifyEVChargingSchedule.

Protocol timers (message timeouts, the SECC's 1.5 s schedule wait, the charge-loop period)
run in real seconds, because they model network and processing latency; schedule times and
the EV's plan are in the shared clock's time.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from evfleet.clock import Clock
from evse_sim.iso15118.messages import AuthorizationRes, EvNeeds, PowerDeliveryRes
from evse_sim.iso15118.schedules import profile_power_at
from evse_sim.iso15118.session import (
    CancelTimer,
    Command,
    CsmsProfile,
    EvccSession,
    EvRenegotiate,
    EvStop,
    FollowPlan,
    LoopTick,
    MessageTimeout,
    NotifyChargingNeeds,
    NotifyEvSchedule,
    Plugged,
    ProtocolError,
    ScheduleTimeout,
    SeccConfig,
    SeccSession,
    Send,
    SessionEnded,
    StartTimer,
)

log = logging.getLogger(__name__)


class HlcStationPort(Protocol):
    """What the HLC layer needs from the station: two outbound OCPP calls."""

    async def notify_ev_charging_needs(self, evse_id: int, payload: dict[str, Any]) -> None:
        """Send NotifyEVChargingNeeds (payload: camelCase OCPP request)."""
        ...

    async def notify_ev_charging_schedule(self, evse_id: int, payload: dict[str, Any]) -> None:
        """Send NotifyEVChargingSchedule (payload: camelCase OCPP request)."""
        ...


class ModelledHlc:
    """One EVSE's modelled HLC session: a `SeccSession` and an `EvccSession` wired together."""

    def __init__(self, port: HlcStationPort, clock: Clock, config: SeccConfig,
                 loop_interval_s: float = 1.0, latency_s: float = 0.0, ev_ignores_pmax: bool = False,
                 meter: Callable[[], float | None] | None = None,
                 needs_source: Callable[[], EvNeeds | None] | None = None) -> None:
        self.port = port
        self.meter = meter  # the EVSE's energy register (Wh): tells repeated needs from new ones
        self.needs_source = needs_source  # the EV's needs now (what it still needs) for each request
        self.clock = clock
        self.config = config
        self.latency_s = latency_s
        self.secc = SeccSession(config)
        self.evcc = EvccSession(loop_interval_s, ignore_pmax=ev_ignores_pmax)
        self._timers: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self.trace: deque[tuple[float, str, str]] = deque(maxlen=40)
        self._inbox: deque[tuple[Callable[[Any], None], Any]] = deque()
        self._delivering = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.follow: FollowPlan | None = None
        self.ended: SessionEnded | None = None
        self.errors: list[str] = []
        self.needs_sent = 0
        self.schedules_sent = 0
        self.schedule_offers = 0  # ChargeParameterDiscoveryRes sent
        self.default_offers = 0  # ... of which the SECC's default schedule
        self.on_event: Callable[[str, Any], None] | None = None

    # --- station-facing API -------------------------------------------------------------
    def start(self, needs: EvNeeds) -> None:
        """The HLC EV plugged in: start the session."""
        self._ev(Plugged(needs))

    def on_tx_profile(self, profile: dict[str, Any]) -> None:
        """The station accepted a TxProfile for this EVSE (answer/renegotiate; never blocks)."""
        self._secc(CsmsProfile(profile))

    def update_needs(self, needs: EvNeeds, renegotiate: bool = False) -> None:
        """Refresh the EV's needs; `renegotiate` makes the EV start a renegotiation (K17 EV side)."""
        if renegotiate:
            self._ev(EvRenegotiate(needs))
        else:
            self.evcc.set_needs(needs, self.clock.timestamp())

    def stop(self) -> None:
        """The EV wants to stop (leaving or full): PowerDelivery(Stop), SessionStop."""
        self._ev(EvStop())

    def close(self) -> None:
        """Cancel timers and pending notifications (EV unplugged)."""
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        for task in self._tasks:
            task.cancel()

    async def drain(self) -> None:
        """Wait until the notifications sent so far are delivered."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def ev_limit_w(self, now_s: float) -> float | None:
        """What the EV's own plan lets it draw at clock time `now_s` (None: no plan, basic charging)."""
        if self.follow is None or (self.ended is not None and not self.ended.ok):
            return None
        return profile_power_at(self.follow.plan.profile, now_s - self.follow.time_base)

    @property
    def renegotiations(self) -> int:
        """Completed renegotiations (PowerDelivery(Renegotiate) accepted by the SECC)."""
        return self.secc.renegotiations

    @property
    def renegotiations_requested(self) -> int:
        """Renegotiations the SECC triggered (EVSENotification=ReNegotiation for a new offer)."""
        return self.secc.renegotiations_requested

    @property
    def failed(self) -> bool:
        """The HLC session failed: the EV charges without its ISO 15118 plan (basic charging)."""
        return self.ended is not None and not self.ended.ok

    # --- wiring -------------------------------------------------------------------------
    def _secc(self, event: Any) -> None:
        try:
            meter_wh = self.meter() if self.meter is not None else None
            commands = self.secc.handle(event, self.clock.timestamp(), meter_wh)
        except ProtocolError as err:
            self._fail("secc", err)
            return
        self._run("secc", commands)

    def _ev(self, event: Any) -> None:
        try:
            if self.needs_source is not None and isinstance(event, (AuthorizationRes, PowerDeliveryRes)):
                needs = self.needs_source()  # what the EV still needs, before its next request
                if needs is not None:
                    self.evcc.set_needs(needs, self.clock.timestamp())
            commands = self.evcc.handle(event, self.clock.timestamp())
        except ProtocolError as err:
            self._fail("evcc", err)
            return
        self._run("evcc", commands)

    def _fail(self, side: str, err: ProtocolError) -> None:
        msg = f"{side}: {err} ({err.response_code})"
        log.warning("HLC session on EVSE %s failed: %s", self.config.evse_id, msg)
        self.errors.append(msg)
        self.ended = SessionEnded(False, msg)
        self.close()

    def _run(self, side: str, commands: list[Command]) -> None:
        loop = asyncio.get_running_loop()
        for cmd in commands:
            if isinstance(cmd, Send):
                self.trace.append((round(loop.time(), 3), side, type(cmd.message).__name__))
                target = self._ev if side == "secc" else self._secc
                if side == "secc" and type(cmd.message).__name__ == "ChargeParameterDiscoveryRes":
                    self.schedule_offers += 1
                    if self.secc.offered_version == -1:
                        self.default_offers += 1
                if self.latency_s > 0:
                    loop.call_later(self.latency_s, target, cmd.message)
                else:  # deliver in order, in this same callback (no reordering against due timers)
                    self._inbox.append((target, cmd.message))
            elif isinstance(cmd, StartTimer):
                self._cancel(side, cmd.name)
                self._timers[(side, cmd.name)] = loop.call_later(cmd.delay_s, self._fire, side, cmd.name)
                self.trace.append((round(loop.time(), 3), side, f"start {cmd.name} {cmd.delay_s}"))
            elif isinstance(cmd, CancelTimer):
                self._cancel(side, cmd.name)
            elif isinstance(cmd, NotifyChargingNeeds):
                self.needs_sent += 1
                self._spawn(self.port.notify_ev_charging_needs(self.config.evse_id, cmd.payload))
            elif isinstance(cmd, NotifyEvSchedule):
                self.schedules_sent += 1
                self._spawn(self.port.notify_ev_charging_schedule(self.config.evse_id, cmd.payload))
            elif isinstance(cmd, FollowPlan):
                self.follow = cmd
            elif isinstance(cmd, SessionEnded):
                if self.ended is None or not cmd.ok:
                    self.ended = cmd
                if not cmd.ok:
                    self.errors.append(f"{side}: {cmd.reason}")
            if self.on_event is not None:
                self.on_event(side, cmd)
        self._deliver()

    def _deliver(self) -> None:
        if self._delivering:
            return
        self._delivering = True
        try:
            while self._inbox:
                target, message = self._inbox.popleft()
                target(message)
        finally:
            self._delivering = False

    def _cancel(self, side: str, name: str) -> None:
        handle = self._timers.pop((side, name), None)
        if handle is not None:
            handle.cancel()

    def _fire(self, side: str, name: str) -> None:
        self.trace.append((round(asyncio.get_running_loop().time(), 3), side, f"fire {name}"))
        self._timers.pop((side, name), None)
        if side == "secc" and name == "schedule_wait":
            self._secc(ScheduleTimeout())
        elif side == "evcc" and name == "loop":
            self._ev(LoopTick())
        elif side == "evcc" and name == "msg_timeout":
            self._ev(MessageTimeout())

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            log.error("HLC notification on EVSE %s failed: %r", self.config.evse_id, exc)
            self.errors.append(f"notify: {exc!r}")
