"""Run a scenario's stations in one process: controlled ramp-up, one shared timer, EV dispatch, stats.

`FleetRunner(scenario, clock, FleetConfig(...)).run()`:

- starts each station's connection task at `ramp_per_s` stations per (real) second, so a
  CSMS is not hit by thousands of TLS/auth handshakes at once;
- one ticker task advances every station every `tick_real_s` real seconds (`SimStation.tick`),
  instead of a timer task per station and per EVSE; it also plays the scenario's EV visits:
  an EV with a fixed station plugs in there at its arrival (or waits until the EVSE is free),
  an EV without one takes the first free EVSE of the site (first come, first served) and
  gives up if none frees before its departure;
- `stats()` aggregates counters for the live display and the benchmark; `outcome()` says how
  many stations connected, booted and charged, and the first error, for the run's verdict.

Every run draws a fresh run seed (`run_seed`) unless `FleetConfig.seed` is given: the stations'
generators, and so their transaction ids, differ from one run to the next, so a second run
against the same csms is not mistaken for a replay of the first.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import dataclasses
import random
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from evfleet.clock import Clock
from evfleet.tasks import describe
from evse_sim.ev import Ev, EvSpec
from evse_sim.hlc import BasicHlc, HlcLink
from evse_sim.scenarios.model import Scenario
from evse_sim.station import ConnectionConfig, SimStation, StationCore, StationError, VisitLog

OCPP_CHOICES = ("2.0.1", "1.6", "mixed")
SHUTDOWN_WAIT_S = 10.0  # real seconds the stations get to stop, then again after their cancellation


class FleetStuckError(RuntimeError):
    """A station task ignored its cancellation at shutdown (a bug): named, instead of a hang."""


@dataclass(frozen=True, slots=True)
class FleetConfig:
    """How the fleet connects and how fast it starts."""

    csms_url: str
    password: str | None = None
    passwords: dict[str, str] = field(default_factory=dict)
    tls_ca: str | None = None
    client_cert_dir: str | None = None
    ramp_per_s: float = 50.0
    tick_real_s: float = 0.5
    tx_updated_interval_s: int = 60
    aligned_interval_s: int = 300
    heartbeat_s: int = 300
    backoff_base_s: float = 1.0
    backoff_max_s: float = 60.0
    response_timeout_s: float = 30.0
    seed: int | None = None
    """Seed of the stations' generators (transaction ids, back-off jitter); None: a fresh one per run."""
    drop_rate_per_h: float = 0.0
    authorize: bool = False
    drop_real_s: float = 10.0
    max_clock_skew_s: float | None = None  # stop when the CSMS's currentTime is further off (None: no check)
    ocpp: str = "2.0.1"
    """OCPP version of the stations: "2.0.1", "1.6" or "mixed" (every second station 1.6J)."""

    def __post_init__(self) -> None:
        if self.ocpp not in OCPP_CHOICES:
            raise ValueError(f"ocpp must be one of {', '.join(OCPP_CHOICES)}, got {self.ocpp!r}")

    def ocpp_version_for(self, index: int) -> str:
        """The OCPP version of the `index`-th station (0-based)."""
        if self.ocpp == "mixed":
            return "1.6" if index % 2 == 1 else "2.0.1"
        return self.ocpp

    def connection_for(self, station_id: str) -> ConnectionConfig:
        """Connection settings of one station (its own password if listed)."""
        return ConnectionConfig(
            self.csms_url,
            password=self.passwords.get(station_id, self.password),
            tls_ca=self.tls_ca,
            client_cert_dir=self.client_cert_dir,
            backoff_base_s=self.backoff_base_s,
            backoff_max_s=self.backoff_max_s,
            response_timeout_s=self.response_timeout_s,
        )


@dataclass(slots=True)
class FleetStats:
    """Aggregate counters over all stations."""

    stations: int = 0
    started: int = 0
    connected: int = 0
    plugged: int = 0
    charging: int = 0
    power_kw: float = 0.0
    energy_kwh: float = 0.0
    sent: int = 0
    received: int = 0
    errors: int = 0
    queued: int = 0
    offline_events_sent: int = 0
    visits_started: int = 0
    visits_done: int = 0
    visits_missed: int = 0
    drops: int = 0
    sim_time: datetime | None = None


@dataclass(frozen=True, slots=True)
class FleetOutcome:
    """How far the stations got: the run's verdict (`evfleet sim` exits non-zero when `failure`)."""

    stations: int
    started: int
    connected: int
    """Stations that completed a WebSocket handshake at least once."""
    booted: int
    """Stations whose BootNotification was Accepted at least once."""
    charged: int
    """Booted stations that delivered energy to an EV (a simulated station also charges offline)."""
    failed: int
    """Started stations that never booted and recorded an error."""
    first_error: str = ""
    """`station: error` of the earliest error of any station ("" if none)."""

    @property
    def failure(self) -> str | None:
        """One line saying why the run failed (no station connected, or most failed), else None."""
        if self.started == 0:
            return None
        if self.connected == 0 or self.failed * 2 > self.started:
            cause = self.first_error or "no station connected before the run ended"
            if "HTTP 401" in cause:
                cause += " (wrong or missing --password / --password-file?)"
            elif "HTTP 404" in cause:
                cause += " (stations not provisioned in the csms? see --provision-redis)"
            return (f"{self.booted} of {self.stations} stations booted, {self.connected} connected; "
                    f"first error: {cause}")
        return None


def fleet_outcome(stations: list[SimStation], started: int) -> FleetOutcome:
    """The outcome of a run from its stations' counters (pure)."""
    errors = [(st.stats.first_error_at, st.id, st.stats.first_error) for st in stations
              if st.stats.first_error and st.stats.first_error_at is not None]
    first = min(errors) if errors else None
    return FleetOutcome(
        stations=len(stations), started=started,
        connected=sum(1 for st in stations if st.stats.connects > 0),
        booted=sum(1 for st in stations if st.stats.boots_accepted > 0),
        charged=sum(1 for st in stations
                    if st.stats.boots_accepted > 0 and any(e.energy_wh > 0 for e in st.evses.values())),
        failed=sum(1 for st in stations if st.stats.boots_accepted == 0 and st.stats.errors > 0),
        first_error=f"{first[1]}: {first[2]}" if first else "",
    )


@dataclass(slots=True)
class _Waiting:
    spec: EvSpec
    station: str | None
    evse: int


class FleetRunner:
    """Many `SimStation`s of one scenario in one asyncio loop (see the module docstring)."""

    def __init__(
        self,
        scenario: Scenario,
        clock: Clock,
        config: FleetConfig,
        hlc_factory: Callable[[SimStation], HlcLink | None] | None = None,
    ) -> None:
        self.scenario = scenario
        self.clock = clock
        self.config = config
        self.run_seed = config.seed if config.seed is not None else secrets.randbits(63)
        rng = random.Random(self.run_seed)
        self._fault_rng = random.Random(self.run_seed + 1)
        self.drops = 0
        self.stations: dict[str, SimStation] = {}
        for index, model in enumerate(scenario.stations):
            station_cfg = dataclasses.replace(
                model.config(
                    tx_updated_interval_s=config.tx_updated_interval_s,
                    aligned_interval_s=config.aligned_interval_s,
                    heartbeat_s=config.heartbeat_s,
                    authorize=config.authorize,
                ),
                ocpp_version=config.ocpp_version_for(index),
            )
            station = SimStation(
                station_cfg,
                config.connection_for(model.id),
                clock,
                rng=random.Random(rng.getrandbits(64)),
                unplug_when_full=scenario.unplug_when_full,
            )
            station.hlc = hlc_factory(station) if hlc_factory is not None else BasicHlc()
            station.on_unplugged = self._on_unplugged
            self.stations[model.id] = station
        arrivals = sorted(
            ((ev.spec(scenario.start), ev.station, ev.evse) for ev in scenario.evs),
            key=lambda item: item[0].arrival,
        )
        self._arrivals: deque[_Waiting] = deque(_Waiting(s, st, e) for s, st, e in arrivals)
        self._fixed_wait: dict[tuple[str, int], deque[_Waiting]] = {}
        self._site_wait: deque[_Waiting] = deque()
        self._free_site_evses: list[tuple[str, int]] = []  # sorted, for first-free assignment
        self._fixed: set[tuple[str | None, int]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self.started_stations = 0
        self.visits_started = 0
        self.visits_missed = 0
        self.ramp_done_at: float | None = None
        self.started_at: float | None = None
        self.all_connected_after_s: float | None = None
        self.clock_error: str | None = None
        self._init_free()

    def _init_free(self) -> None:
        self._fixed = {(w.station, w.evse) for w in self._arrivals if w.station is not None}
        self._free_site_evses = sorted(
            (sid, e) for sid, st in self.stations.items() for e in st.evses if (sid, e) not in self._fixed
        )

    # ------------------------------------------------------------------ EV dispatch
    def _plug(self, waiting: _Waiting, station_id: str, evse_id: int) -> None:
        try:
            self.stations[station_id].plug_in(evse_id, Ev(waiting.spec))
            self.visits_started += 1
        except StationError:
            self.visits_missed += 1

    def _dispatch(self, now: datetime) -> None:
        while self._arrivals and self._arrivals[0].spec.arrival <= now:
            w = self._arrivals.popleft()
            if w.spec.departure <= now:
                self.visits_missed += 1
                continue
            if w.station is not None:
                st = self.stations[w.station].evses.get(w.evse)
                if st is not None and st.ev is None and st.operative:
                    self._plug(w, w.station, w.evse)
                else:
                    self._fixed_wait.setdefault((w.station, w.evse), deque()).append(w)
            elif self._free_site_evses:
                sid, eid = self._free_site_evses.pop(0)
                self._plug(w, sid, eid)
            else:
                self._site_wait.append(w)

    def _on_unplugged(self, station: StationCore, evse_id: int, _ev: Ev) -> None:
        now = self.clock.now()
        key = (station.id, evse_id)
        fixed = key in self._fixed
        queue = self._fixed_wait.get(key, deque()) if fixed else self._site_wait
        while queue and queue[0].spec.departure <= now:
            queue.popleft()
            self.visits_missed += 1
        if queue:
            self._plug(queue.popleft(), station.id, evse_id)
        elif not fixed:
            bisect.insort(self._free_site_evses, key)

    # ------------------------------------------------------------------ running
    async def _ramp(self) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        self.started_at = t0
        interval = 1.0 / self.config.ramp_per_s if self.config.ramp_per_s > 0 else 0.0
        for i, station in enumerate(self.stations.values()):
            if self._stopping.is_set():
                return
            self._tasks.append(asyncio.create_task(station.run(), name=f"station-{station.id}"))
            self.started_stations += 1
            delay = t0 + (i + 1) * interval - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        self.ramp_done_at = loop.time()

    def _inject_faults(self, now: datetime, last: datetime) -> None:
        """Drop links at random: `drop_rate_per_h` per station per simulated hour, `drop_real_s` offline."""
        p = self.config.drop_rate_per_h * (now - last).total_seconds() / 3600.0
        if p <= 0:
            return
        for station in self.stations.values():
            if station.online and self._fault_rng.random() < p:
                station.go_offline(self.config.drop_real_s)
                self.drops += 1

    async def _ticker(self) -> None:
        last = self.clock.now()
        while not self._stopping.is_set():
            now = self.clock.now()
            self._inject_faults(now, last)
            last = now
            self._dispatch(now)
            online = 0
            for station in self.stations.values():
                station.tick(now)
                online += station.online
            self._check_clock(now)
            if self.all_connected_after_s is None and online == len(self.stations) and self.started_at:
                self.all_connected_after_s = asyncio.get_running_loop().time() - self.started_at
            with contextlib.suppress(TimeoutError):  # asyncio.timeout: 3.11's wait_for can lose a cancel
                async with asyncio.timeout(self.config.tick_real_s):
                    await self._stopping.wait()

    def _check_clock(self, now: datetime) -> None:
        """Stop the run when the CSMS is not on the fleet's clock (see FleetConfig.max_clock_skew_s)."""
        limit = self.config.max_clock_skew_s
        if limit is None or self.clock_error is not None:
            return
        for station in self.stations.values():
            skew = station.csms_clock_skew_s
            if skew is not None and abs(skew) > limit:
                theirs = now + timedelta(seconds=skew)
                self.clock_error = (
                    f"the csms is not on this simulation's clock: it answered {station.id} with "
                    f"{theirs:%Y-%m-%d %H:%M:%S}Z while the fleet's time is {now:%Y-%m-%d %H:%M:%S}Z")
                self.stop()
                return

    async def run(self, duration: timedelta | None = None) -> FleetStats:
        """Run until `duration` of clock time has passed (default: the scenario horizon) or `stop()`."""
        end = self.clock.now() + (duration if duration is not None else self.scenario.horizon)
        ramp = asyncio.create_task(self._ramp(), name="fleet-ramp")
        ticker = asyncio.create_task(self._ticker(), name="fleet-ticker")
        try:
            while not self._stopping.is_set() and self.clock.now() < end:
                left_s = (end - self.clock.now()).total_seconds() / max(self.clock.speed, 1e-9)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(1.0, max(0.01, left_s))):
                        await self._stopping.wait()
        finally:
            await self.shutdown(ramp, ticker)
        return self.stats()

    def stop(self) -> None:
        """Ask `run` to finish."""
        self._stopping.set()

    async def shutdown(self, *extra: asyncio.Task[None]) -> None:
        """Stop every station and wait for their tasks (bounded)."""
        self._stopping.set()
        for task in extra:
            task.cancel()
        for station in self.stations.values():
            station.stop()
        tasks = [*self._tasks, *extra]
        if not tasks:
            return
        _done, pending = await asyncio.wait(tasks, timeout=SHUTDOWN_WAIT_S)
        for task in pending:
            task.cancel()
        if pending:
            _done, pending = await asyncio.wait(pending, timeout=SHUTDOWN_WAIT_S)
        for task in tasks:  # collect what they ended with, so none is reported as never retrieved
            if task.done() and not task.cancelled():
                task.exception()
        if pending:
            raise FleetStuckError(f"{len(pending)} fleet task(s) still running {SHUTDOWN_WAIT_S:g} s after "
                                  "being cancelled: " + "; ".join(describe(t) for t in pending))

    def stats(self) -> FleetStats:
        """Counters summed over all stations."""
        s = FleetStats(
            stations=len(self.stations),
            started=self.started_stations,
            visits_started=self.visits_started,
            visits_missed=self.visits_missed,
            drops=self.drops,
            sim_time=self.clock.now(),
        )
        for station in self.stations.values():
            st = station.stats
            s.connected += station.online
            s.sent += st.sent
            s.received += st.received
            s.errors += st.errors
            s.offline_events_sent += st.offline_events_sent
            s.queued += station.queued
            for evse in station.evses.values():
                s.energy_kwh += evse.energy_wh / 1000.0
                if evse.ev is not None:
                    s.plugged += 1
                    if evse.power_w > 0:
                        s.charging += 1
                        s.power_kw += evse.power_w / 1000.0
            s.visits_done += sum(1 for v in station.visits if v.left_at is not None)
        return s

    def outcome(self) -> FleetOutcome:
        """How many stations connected, booted and charged; why the run failed, if it did."""
        return fleet_outcome(list(self.stations.values()), self.started_stations)

    def visits(self) -> list[VisitLog]:
        """Every EV visit so far, all stations."""
        return [v for station in self.stations.values() for v in station.visits]
