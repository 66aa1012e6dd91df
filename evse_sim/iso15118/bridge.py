"""Real ISO 15118 on the wire: an EVSE whose SECC and EV's EVCC are Josev processes.

`JosevHlc` has the same station-facing API as `ModelledHlc` (start, on_tx_profile, stop,
ev_limit_w, counters), so a station uses either. Underneath:

    station (main venv, pydantic 2)                 network namespace (unshare -rn)
    JosevHlc --- Unix socket, JSON lines ---+       +- vethS<n> <-- SDP/TCP/EXI --> vethE<n> -+
      - SECC asks "schedules" (needs)  <----+-------+- Josev SECC process (.iso15118-venv)     |
      - SECC reports "power_delivery"  <----+       +- Josev EVCC process (spawned at plug-in)-+
      - EVCC asks "ev_params" / "plan" / "continue"
      - pushes "renegotiate" (to SECC) and "stop" (to EVCC)

The SECC side turns the EV's ChargeParameterDiscoveryReq into NotifyEVChargingNeeds, waits
at most `SeccConfig.schedule_wait_s` for the TxProfile (Josev breaks if its schedule hook
says "still processing", and its own hook times out at 1.5 s), else offers the default
schedule and pushes a renegotiation when the profile comes. The EVCC side lets the
simulated EV (`plan_ev_profile`, the same code as the modelled EV) pick a tuple and plan
(`bridge_ev.EvSide`). ISO 15118-2 AC and DC (`dc.py`), or ISO 15118-20 AC in scheduled control
mode (`protocol="20"`, `v20.py`): the same needs and schedule tuples, then the TxProfile's limit
now in every ACChargeLoopRes instead of renegotiation. Wire format: `bridge_json.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from evfleet.clock import Clock
from evse_sim.iso15118.bridge_ev import EvSide
from evse_sim.iso15118.bridge_json import needs_from_josev, tuples_from_json, tuples_to_json
from evse_sim.iso15118.dc import evse_answer, evse_limit_w
from evse_sim.iso15118.hlc import HlcStationPort
from evse_sim.iso15118.messages import ChargeParameterDiscoveryReq, EvNeeds, ProfileEntry, SAScheduleTuple
from evse_sim.iso15118.needs import NeedsReference, is_new_request
from evse_sim.iso15118.netns import Capability, Iso15118UnavailableError, NetnsHolder, check, runner_argv
from evse_sim.iso15118.schedules import (
    EvPlan,
    default_sa_schedules,
    ev_schedule_payload,
    needs_payload,
    profile_to_sa_schedules,
    same_offer,
)
from evse_sim.iso15118.session import SeccConfig
from evse_sim.iso15118.v20 import JOSEV_PROTOCOL, PROTOCOL_2, PROTOCOL_20, PROTOCOLS, needs_from_v20

__all__ = ["JosevHlc", "needs_from_josev", "tuples_from_json", "tuples_to_json"]

log = logging.getLogger(__name__)
_ids = itertools.count(1)
STAGGER_S = 0.5  # minimum gap between two Josev process starts (each starts a JVM: CPU-heavy)
MAX_EV_RESTARTS = 3
"""Times per plug-in the station restarts an EV's communication that gave up (`JosevHlc._restart_ev`);
after that the EV charges without HLC (basic charging under the composite limit)."""


class _Stagger:
    """Spaces out Josev process starts in this process, so JVM start-ups do not pile up."""

    def __init__(self) -> None:
        self.last = 0.0
        self.locks: dict[asyncio.AbstractEventLoop, asyncio.Lock] = {}

    async def wait(self) -> None:
        """Return when this start may go."""
        loop = asyncio.get_running_loop()
        if loop not in self.locks:
            self.locks = {loop: asyncio.Lock()}  # one event loop at a time (tests make new ones)
        async with self.locks[loop]:
            delay = self.last + STAGGER_S - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            self.last = time.monotonic()


_stagger = _Stagger()


class _Conn:
    """One runner's connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    def send(self, msg: dict[str, Any]) -> None:
        self.writer.write((json.dumps(msg) + "\n").encode())


class JosevHlc(EvSide):
    """One EVSE with real ISO 15118: Josev SECC + Josev EVCC in a namespace, bridged to the station.

    AC on ISO 15118-2: the TxProfile reaches the EV as an SAScheduleList, again by renegotiation
    when it changes. DC (`dc=True`, ISO 15118-2): the first SAScheduleList likewise; then each
    CurrentDemand cycle carries the TxProfile's limit now as EVSEMaxPowerLimit, and the EV draws
    what CurrentDemand grants (`dc.py`); no renegotiation (Josev's DC EVCC cannot). AC on
    ISO 15118-20 (`protocol="20"`, scheduled control mode): the first ScheduleExchangeRes carries
    the TxProfile as PowerSchedule; then each ACChargeLoopRes its limit now as
    EVSETargetActivePower, which the EV draws at most (`v20.py`); no renegotiation either.
    """

    def __init__(self, port: HlcStationPort, clock: Clock, config: SeccConfig, name: str | None = None,
                 workdir: Path | None = None, capability: Capability | None = None, dc: bool = False,
                 protocol: str = PROTOCOL_2) -> None:
        if protocol not in PROTOCOLS:
            raise ValueError(f"ISO 15118 protocol {protocol!r} is not one of {', '.join(PROTOCOLS)}")
        if dc and protocol != PROTOCOL_2:
            raise ValueError("DC runs on ISO 15118-2 only (ISO 15118-20 DC is not bridged)")
        self.protocol = protocol
        self.v20 = protocol == PROTOCOL_20
        self.v20_limit_w: float | None = None  # -20: the session limit the SECC reported last
        self.v20_target_w: float | None = None  # -20: the EVSETargetActivePower the EV decoded last
        self.v20_cycles = 0
        self.dc = dc
        self.dc_granted_w: float | None = None  # DC: what the last CurrentDemand cycle delivers (W)
        self.dc_limit_w: float | None = None  # DC: the EVSE limit the SECC reported last
        self.dc_ev_limit_w: float | None = None  # DC: the EVSEMaxPowerLimit the EV decoded last
        self.dc_cycles = 0
        self.port = port
        self.clock = clock
        self.config = config
        self.index = next(_ids)
        self.name = name or f"evse{self.index}"
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="evfleet-josev-"))
        self.capability = capability
        self.iface_secc = f"vS{self.index}"
        self.iface_ev = f"vE{self.index}"
        self.socket_path = self.workdir / "bridge.sock"
        self.holder: NetnsHolder | None = None
        self._server: asyncio.AbstractServer | None = None
        self._secc: _Conn | None = None
        self._evcc: _Conn | None = None
        self._secc_ready = asyncio.Event()
        self._evcc_ready = asyncio.Event()
        self._profile_event = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.needs: EvNeeds | None = None
        self.needs_set_at = 0.0
        self.profile: dict[str, Any] | None = None
        self.profile_version = 0
        self.offered_version = -1
        self.offered: tuple[SAScheduleTuple, ...] = ()
        self.offered_at = 0.0
        self.last_needs: ChargeParameterDiscoveryReq | None = None
        self.needs_received_at = 0.0
        self.needs_ref: NeedsReference | None = None  # the request last forwarded to the CSMS
        self.needs_repeated = 0
        self.meter: Callable[[], float | None] | None = None  # EVSE energy register (Wh)
        self.needs_source: Callable[[], EvNeeds | None] | None = None  # what the EV still needs, now
        self.failed = False  # the HLC session failed: the EV dropped its plan (basic charging)
        self.restarts = 0  # failed sessions the EVCC replaced by a new one that reached PowerDelivery
        self.ev_restarts = 0  # this plug-in's EVCCs the station restarted after they gave up or ended
        self._evcc_pid: int | None = None  # the EVCC process of this plug-in (None while restarting)
        self.state = "idle"
        self.plan: EvPlan | None = None
        self.plan_time_base = 0.0
        self.plans: list[EvPlan] = []
        self.stop_requested = False
        self.needs_sent = 0
        self.schedules_sent = 0
        self.schedule_offers = 0
        self.default_offers = 0
        self.renegotiations = 0
        self.renegotiations_requested = 0
        self._renegotiation_pending = False
        self.ended: str | None = None
        self.errors: list[str] = []
        self.events: list[tuple[float, str, dict[str, Any]]] = []
        self.on_event: Callable[[str, dict[str, Any]], None] | None = None

    # --- lifecycle ----------------------------------------------------------------------
    async def open(self, timeout_s: float = 30.0) -> None:
        """Create the namespace + veth pair, the bridge socket and the SECC process; wait until ready."""
        cap = self.capability or check()
        if not cap.ok:
            raise Iso15118UnavailableError(cap.explain())
        assert cap.unshare is not None
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.socket_path))
        self.holder = NetnsHolder(cap.unshare, [(self.iface_secc, self.iface_ev)])
        await self.holder.start()
        lim = self.config.limits
        argv = runner_argv("secc", self.socket_path, [(self.name, self.iface_secc)],
                           evse_max_power_w=lim.evse_max_power_w, voltage_v=lim.voltage_v, phases=lim.phases,
                           kind="DC" if self.dc else "AC", protocol=JOSEV_PROTOCOL[self.protocol])
        await _stagger.wait()
        pid = await self.holder.spawn(argv, self.workdir / "secc.log")
        await self._wait_secc_ready(pid, timeout_s)

    async def _wait_secc_ready(self, pid: int, timeout_s: float) -> None:
        """Wait until the SECC process `pid` connected to the bridge; fail as soon as it exits."""
        log_path = self.workdir / "secc.log"
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not self._secc_ready.is_set():
            assert self.holder is not None
            if (how := self.holder.exited(pid)) is not None:
                raise Iso15118UnavailableError(f"Josev SECC ended ({how}) before it was ready; "
                                               f"see {log_path}")
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise Iso15118UnavailableError(f"Josev SECC did not start within {timeout_s:g} s; "
                                               f"see {log_path}")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(0.2, left)):
                    await self._secc_ready.wait()

    def start(self, needs: EvNeeds) -> None:
        """The EV plugs in: spawn its Josev EVCC (SDP, then the ISO 15118-2 session)."""
        self.needs = needs
        self.needs_set_at = self.clock.timestamp()
        self.stop_requested = False
        self.ev_restarts = 0
        self.failed = False
        self.plan = None
        self.needs_ref = None
        self.last_needs = None
        self.profile = None
        self.offered_version = -1
        self._renegotiation_pending = False
        self.dc_granted_w = self.dc_limit_w = self.dc_ev_limit_w = None
        self.v20_limit_w = self.v20_target_w = None
        self._evcc_ready.clear()
        self._spawn_task(self._start_evcc())

    async def _start_evcc(self) -> None:
        assert self.holder is not None
        mode = self.needs.energy_transfer_mode.value if self.needs else "AC_three_phase"
        argv = runner_argv("evcc", self.socket_path, [(self.name, self.iface_ev)], energy_mode=mode,
                           protocol=JOSEV_PROTOCOL[self.protocol])
        await _stagger.wait()
        self._record("evcc_spawn", {})
        self._evcc_pid = await self.holder.spawn(argv, self.workdir / f"evcc-{len(self.plans)}.log")

    def _restart_ev(self, reason: str) -> None:
        """The EV's HLC is down while plugged in (Josev's EVCC gave up, or its process ended): restart
        it as a charger does by re-initialising the control pilot (the EV starts SDP from scratch;
        here a new EVCC process), at most MAX_EV_RESTARTS times per plug-in."""
        if self.stop_requested or self._evcc_pid is None or self.ev_restarts >= MAX_EV_RESTARTS:
            return
        self.ev_restarts += 1
        self._record("ev_restart", {"reason": reason[:200], "count": self.ev_restarts})
        self._spawn_task(self._respawn_evcc(self._evcc_pid))

    async def _respawn_evcc(self, pid: int) -> None:
        self._evcc_pid = None  # its connection ending is not another failure
        assert self.holder is not None
        how = await self.holder.stop_child(pid)
        log.info("ISO 15118 %s: EVCC %d %s; starting a new one", self.name, pid, how)
        if not self.stop_requested:
            self._evcc_ready.clear()
            await self._start_evcc()

    async def wait_evcc_ready(self, timeout_s: float = 30.0) -> None:
        """Wait until the EVCC process connected to the bridge."""
        await asyncio.wait_for(self._evcc_ready.wait(), timeout_s)

    def on_tx_profile(self, profile: dict[str, Any]) -> None:
        """The station accepted a TxProfile: answer a waiting SECC, or push a renegotiation."""
        offered = self.profile if self.offered_version == self.profile_version else None
        self.profile = profile
        self.profile_version += 1
        schedule = (profile.get("chargingSchedule") or [{}])[0]
        self._record("tx_profile", {"version": self.profile_version, "start": schedule.get("startSchedule"),
                                    "unit": schedule.get("chargingRateUnit"),
                                    "periods": [[p.get("startPeriod"), p.get("limit")]
                                                for p in schedule.get("chargingSchedulePeriod", [])][:4]})
        if self.state == "waiting_schedule":
            self._profile_event.set()
        elif self.dc or self.v20:  # reaches the EV in the next CurrentDemandRes / ACChargeLoopRes
            self.offered_version = self.profile_version
        elif self.state in ("offered", "charging") and self._secc is not None:
            if offered is not None and self._same_offer(offered, profile):
                self.offered_version = self.profile_version  # same SAScheduleList: nothing to renegotiate
                self._record("renegotiation_skipped", {"version": self.profile_version})
                return
            self._renegotiate()

    def _renegotiate(self) -> None:
        """Ask the SECC for one renegotiation (not again while one is pending)."""
        if self._renegotiation_pending or self._secc is None:
            return
        self._renegotiation_pending = True
        self.renegotiations_requested += 1
        self._secc.send({"op": "renegotiate"})

    def _same_offer(self, offered: dict[str, Any], profile: dict[str, Any]) -> bool:
        req = self.last_needs
        departure, max_entries = None, None
        if req is not None:
            departure = req.ev_charge_parameter.departure_time_s
            if departure:
                departure = max(1, int(departure - (self.clock.timestamp() - self.needs_received_at)))
            max_entries = req.max_entries_sa_schedule_tuple
        return same_offer(offered, profile, self.clock.now(), self.config.limits, departure, max_entries)

    def stop(self) -> None:
        """The EV wants to stop: the EVCC ends its charge loop (PowerDelivery Stop, SessionStop)."""
        self.stop_requested = True
        if self._evcc is not None:
            self._evcc.send({"op": "stop"})

    async def close(self) -> None:
        """Stop the Josev processes and the namespace, remove the socket."""
        self._evcc_pid = None  # the EVCC ending now is no reason to restart it
        for task in list(self._tasks):
            task.cancel()
        if self.holder is not None:
            await self.holder.close()
            self.holder = None
        for conn in (self._secc, self._evcc):
            if conn is not None:
                conn.writer.close()
        if self._server is not None:
            self._server.close()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()

    # --- bridge server --------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Conn(reader, writer)
        role = ""
        pid = None
        try:
            while line := await reader.readline():
                msg = json.loads(line)
                op = msg.get("op")
                if op == "hello":
                    role, pid = msg.get("role", ""), msg.get("pid")
                    if role == "secc":
                        self._secc = conn
                    else:
                        self._evcc = conn
                    self._record("hello", msg)
                elif op == "ready":
                    (self._secc_ready if role == "secc" else self._evcc_ready).set()
                elif "id" in msg:
                    self._spawn_task(self._answer(conn, msg))
                else:
                    self._on_notice(role, msg)
        except (ConnectionError, json.JSONDecodeError) as err:
            self.errors.append(f"bridge {role}: {err!r}")
        finally:
            if role == "evcc" and self._evcc is conn:
                self._evcc = None
                self._record("evcc_gone", {})
                if not self.stop_requested and self.state not in ("stopped", "idle"):
                    self._fail(f"EVCC process ended in state {self.state}")
                if pid is not None and pid == self._evcc_pid:
                    self._restart_ev("EVCC process ended")

    async def _answer(self, conn: _Conn, msg: dict[str, Any]) -> None:
        op = msg["op"]
        result: Any
        if op == "schedules":
            result = {"tuples": tuples_to_json(await self._schedules(msg["needs"]))}
        elif op == "ac_limit":
            result = self._ac_limit()
        elif op == "ev_params":
            result = self._ev_params()
        elif op == "plan":
            result = self._plan(tuples_from_json(msg["tuples"]))
        elif op == "continue":
            result = not self.stop_requested
        elif op == "dc_demand":
            result = self._dc_demand(msg)
        elif op == "dc_state":
            result = self._dc_state(msg.get("evse_limit_w"))
        else:
            self.errors.append(f"unknown bridge request {op!r}")
            result = None
        conn.send({"id": msg["id"], "result": result})

    async def _schedules(self, raw_needs: dict[str, Any]) -> tuple[SAScheduleTuple, ...]:
        now = self.clock.timestamp()
        req: ChargeParameterDiscoveryReq
        if raw_needs.get("protocol") == PROTOCOL_20:
            req = needs_from_v20(raw_needs, self.config.limits)
        else:
            req = needs_from_josev(raw_needs, self.config.limits.phases)
        self._record("needs", raw_needs)
        meter_wh = self.meter() if self.meter is not None else None
        new_request = is_new_request(self.needs_ref, req, now, meter_wh)  # same rule as the modelled SECC
        if new_request:
            self.needs_ref = NeedsReference(req, now, meter_wh)
            payload = needs_payload(self.config.evse_id, req, self.clock.now())
            self.needs_sent += 1
            self._spawn_task(self.port.notify_ev_charging_needs(self.config.evse_id, payload))
        else:
            self.needs_repeated += 1
        self.last_needs = req
        self.needs_received_at = now
        if self.profile is None or (self.profile_version == self.offered_version and new_request):
            self.state = "waiting_schedule"
            self._profile_event.clear()
            started = time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._profile_event.wait(), self.config.schedule_wait_s)
            self._record("schedule_wait", {"waited_s": round(time.monotonic() - started, 3)})
        departure = req.ev_charge_parameter.departure_time_s
        self.offered_at = self.clock.timestamp()
        if self.profile is not None:  # a new profile, or (same request / none in time) the current one
            tuples = profile_to_sa_schedules(self.profile, self.clock.now(), self.config.limits, departure,
                                             req.max_entries_sa_schedule_tuple)
            self.offered_version = self.profile_version
        else:
            tuples = default_sa_schedules(self.config.limits.evse_max_power_w, departure)
            self.offered_version = -1
            self.default_offers += 1
        self.schedule_offers += 1
        self.offered = tuples
        self.state = "offered"
        self._record("offered", {"default": self.offered_version == -1, "tuples": tuples_to_json(tuples)})
        return tuples

    def _dc_demand(self, msg: dict[str, Any]) -> dict[str, float]:
        """The SECC's PreCharge/CurrentDemand cycle: the EVSE limit now and what it delivers."""
        limit_w = evse_limit_w(self.profile, self.clock.now(), self.config.limits)
        answer = evse_answer(limit_w, float(msg.get("target_voltage_v") or 0),
                             float(msg.get("target_current_a") or 0), bool(msg.get("precharge")))
        if not msg.get("precharge"):
            self.dc_cycles += 1
            if self.state != "charging" and self.state != "stopped":
                self.state = "charging"
            changed = self.dc_granted_w is None or abs(answer.delivered_w - self.dc_granted_w) > 1.0 \
                or self.dc_limit_w is None or abs(limit_w - self.dc_limit_w) > 1.0
            self.dc_granted_w = answer.delivered_w
            if changed:
                self._record("dc_demand", {"limit_w": round(limit_w, 1),
                                           "target_w": round(answer.target_w, 1),
                                           "delivered_w": round(answer.delivered_w, 1)})
        self.dc_limit_w = limit_w
        return answer.to_json()

    def _ac_limit(self) -> dict[str, float]:
        """-20 AC: the SECC's session limit for its next ACChargeLoopRes, the TxProfile's limit now."""
        limit_w = evse_limit_w(self.profile, self.clock.now(), self.config.limits)
        self.v20_cycles += 1
        if self.v20_limit_w is None or abs(limit_w - self.v20_limit_w) > 1.0:
            self._record("v20_limit", {"limit_w": round(limit_w, 1)})
        self.v20_limit_w = limit_w
        return {"limit_w": limit_w}

    def _on_notice(self, role: str, msg: dict[str, Any]) -> None:
        op = msg.get("op", "")
        if self._on_ev_notice(op, msg):  # each CurrentDemandRes/ACChargeLoopRes the EV decoded
            return
        self._record(op, msg)
        if op == "power_delivery":
            progress = msg.get("charge_progress")
            if progress == "Start":
                self.state = "charging"
                if self.failed:  # Josev's EVCC started a new HLC session by itself (SDP again)
                    self.failed = False
                    self.restarts += 1
                    self._record("hlc_recovered", {"restarts": self.restarts})
                if msg.get("entries"):
                    profile = tuple(ProfileEntry(int(s), float(w)) for s, w in msg["entries"])
                    time_base = datetime.fromtimestamp(self.offered_at, UTC)
                    payload = ev_schedule_payload(self.config.evse_id, time_base, int(msg["tuple_id"]),
                                                  profile)
                    self.schedules_sent += 1
                    self._spawn_task(self.port.notify_ev_charging_schedule(self.config.evse_id, payload))
                if not (self.dc or self.v20) and self.profile is not None \
                        and self.profile_version != self.offered_version:
                    # a profile came between the offer and PowerDelivery: renegotiate at once
                    self._renegotiate()
            elif progress == "Renegotiate":
                self.renegotiations += 1
                self._renegotiation_pending = False
                self.state = "renegotiating"
            elif progress == "Stop":
                self.state = "stopped"
        elif op == "hlc_gave_up":  # Josev's EVCC stopped trying: a charger restarts the communication
            self._fail(f"EV gave up: {msg.get('reason')}")
            self._restart_ev(str(msg.get("reason")))
        elif op == "session_ended":
            self.ended = str(msg.get("reason"))
            if not self.stop_requested and self.state != "stopped":
                self._fail(f"session ended: {self.ended}")
            self.state = "idle"

    def _fail(self, reason: str) -> None:
        """The HLC session failed while the EV is plugged in: it drops its plan (basic charging)."""
        if self.failed:
            return
        self.failed = True
        self.errors.append(reason)
        self._record("hlc_failed", {"reason": reason})

    def _record(self, kind: str, data: dict[str, Any]) -> None:
        self.events.append((self.clock.timestamp(), kind, data))
        if self.on_event is not None:
            self.on_event(kind, data)

    def _spawn_task(self, coro: Any) -> None:
        task: asyncio.Task[Any] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("ISO 15118 bridge task on %s failed: %r", self.name, task.exception())
            self.errors.append(repr(task.exception()))
