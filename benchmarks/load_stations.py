"""Client side of benchmarks/load_harness.py: simulated OCPP 2.0.1 stations, and the bare-library anchor.

A client process (`python benchmarks/load_stations.py client`) reads one JSON line (its config) from
stdin, opens its share of the stations (raw WebSockets, HTTP Basic, subprotocol ocpp2.0.1, about
`connect_rate` handshakes per second, retrying a refused handshake after its Retry-After or 1-3 s),
BootNotifies, reports its connector Available (StatusNotification, as a real charger does once
accepted; the csms then sends its TxDefaultProfile before any session starts; not with `boot_status`
false, the harness's `--no-boot-status`), prints `{"ready": n}`, reads the start time from stdin,
then every station sends one message every `interval_s` seconds (its first at a random offset inside
the interval, so the offered load is smooth; from `warmup_s` before the start time on, measured only
from the start time on) until the window ends, and prints its results as one JSON line (with its own
event loop's lateness in the window, `ClientLoop`). Its garbage collector is off while the stations
send: the round trips are timed here, and its collections were added to them. A station
answers the csms's own calls like a charger that has no device-model report (GetBaseReport
NotSupported), accepts charging profiles and says NotImplemented to the rest.

A station obeys the profiles it accepts, as a real charger does (`Limits`): its metered power is
min(`DRAW_W`, the limit in force now: the TxProfile of its running transaction, else its
TxDefaultProfile, else no limit), and 0 W between transactions. With `ignore_limits` in the config
(the harness's `--ignore-limits`, the behaviour before this option) every meter value says
`DRAW_W` whatever it was allowed: the csms then marks every station non-compliant and re-shares the
site on every watchdog pass, the worst case of a fleet that ignores its limits.

The message mix cycles through `mix` (default: TransactionEvent, MeterValues, TransactionEvent,
Heartbeat, TransactionEvent, MeterValues, i.e. half TransactionEvents with three-phase meter
values, a third MeterValues, a sixth Heartbeats); a transaction is Started, Updated and Ended
after `tx_events` events, then the next one starts.

With `trace` in the config (a file path; the harness's `--trace FILE`), the stations named in
`trace_sids` (all when empty; the harness's `--trace-station SID`) write one JSON line per
SetChargingProfile/ClearChargingProfile they get (what they accepted) and per meter reading they
send (the power and the profile it obeyed), to find out what a station held when the csms marked it.

`python benchmarks/load_stations.py bare PORT_FILE` is the anchor: the `ocpp` library's
ChargePoint (its own JSON-schema validation, no storage, no authentication) behind
`websockets.serve`, answering the same messages.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import json
import math
import random
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_MIX = ("TransactionEvent", "MeterValues", "TransactionEvent", "Heartbeat", "TransactionEvent",
               "MeterValues")
DRAW_W = 7200.0
"""What a station's EV draws when nothing limits it (7.2 kW)."""
VOLTAGE_V = 230.0


def _ts() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _sampled(energy_kwh: float, power_w: float) -> list[dict[str, Any]]:
    amps = power_w / (3 * VOLTAGE_V)
    return [
        {"value": round(energy_kwh, 3), "measurand": "Energy.Active.Import.Register",
         "unitOfMeasure": {"unit": "kWh"}},
        {"value": round(power_w / 1000.0, 3), "measurand": "Power.Active.Import",
         "unitOfMeasure": {"unit": "kW"}},
        {"value": round(amps, 2), "measurand": "Current.Import", "phase": "L1"},
        {"value": round(amps, 2), "measurand": "Current.Import", "phase": "L2"},
        {"value": round(amps, 2), "measurand": "Current.Import", "phase": "L3"},
    ]


def _limit_w(schedule: dict[str, Any], now_s: float) -> float:
    """The limit (W) a charging schedule sets at `now_s`: its period in force (the first one
    before the schedule starts), amperes per phase at `VOLTAGE_V`."""
    from datetime import datetime

    start = schedule.get("startSchedule")
    elapsed = now_s - datetime.fromisoformat(start.replace("Z", "+00:00")).timestamp() if start else 0.0
    periods = sorted(schedule["chargingSchedulePeriod"], key=lambda p: p["startPeriod"])
    period = periods[0]
    for p in periods:
        if p["startPeriod"] <= elapsed:
            period = p
    limit = float(period["limit"])
    if schedule.get("chargingRateUnit") == "A":
        return limit * VOLTAGE_V * int(period.get("numberPhases") or 3)
    return limit


class Limits:
    """The profiles a station accepted and what it may draw now (pure: no I/O)."""

    def __init__(self) -> None:
        self.default: dict[str, Any] | None = None
        self.tx: dict[str, dict[str, Any]] = {}  # transactionId -> its TxProfile's schedule

    def accept(self, payload: dict[str, Any]) -> None:
        """Record a SetChargingProfile the station answers Accepted."""
        profile = payload["chargingProfile"]
        schedule = profile["chargingSchedule"][0]
        if profile["chargingProfilePurpose"] == "TxDefaultProfile":
            self.default = schedule
        elif profile["chargingProfilePurpose"] == "TxProfile":
            self.tx = {str(profile.get("transactionId")): schedule}

    def draw_w(self, transaction_id: str | None, now_s: float) -> float:
        """What the EV draws now: 0 W without a transaction, else `DRAW_W` capped by the limit in force."""
        if transaction_id is None:
            return 0.0
        schedule = self.tx.get(transaction_id) or self.default
        return DRAW_W if schedule is None else max(0.0, min(DRAW_W, _limit_w(schedule, now_s)))


class Charger:
    """What one station sends next (pure: no I/O)."""

    def __init__(self, sid: str, mix: list[str], tx_events: int) -> None:
        self.sid, self.mix, self.tx_events = sid, mix, max(2, tx_events)
        self.step = random.randrange(len(mix))
        self.tx = 0
        self.seq = 0
        self.energy = 0.0

    def transaction_id(self, action: str) -> str | None:
        """The transaction the next `action` reports in (None between transactions)."""
        if action == "TransactionEvent" or self.seq > 0:
            return f"{self.sid}-{self.tx}"
        return None

    def next(self, limits: Limits | None = None) -> tuple[str, dict[str, Any]]:
        """(action, payload) of the next message; metered at what `limits` allow (None: `DRAW_W`)."""
        action = self.mix[self.step % len(self.mix)]
        self.step += 1
        self.energy += 0.01
        if action == "Heartbeat":
            return action, {}
        power_w = DRAW_W if limits is None else limits.draw_w(self.transaction_id(action), time.time())
        meter = [{"timestamp": _ts(), "sampledValue": _sampled(self.energy, power_w)}]
        if action == "MeterValues":
            return action, {"evseId": 1, "meterValue": meter}
        event = "Started" if self.seq == 0 else "Ended" if self.seq == self.tx_events - 1 else "Updated"
        payload = {"eventType": event, "timestamp": _ts(), "seqNo": self.seq,
                   "triggerReason": {"Started": "CablePluggedIn", "Ended": "EVCommunicationLost"}.get(
                       event, "MeterValuePeriodic"),
                   "transactionInfo": {"transactionId": f"{self.sid}-{self.tx}",
                                       "chargingState": "Idle" if event == "Ended" else "Charging"},
                   "evse": {"id": 1, "connectorId": 1}, "meterValue": meter}
        if event == "Ended":
            payload["transactionInfo"]["stoppedReason"] = "EVDisconnected"
            self.tx, self.seq = self.tx + 1, 0
        else:
            self.seq += 1
        return action, payload


_ANSWERS = {"GetBaseReport": {"status": "NotSupported"}, "SetChargingProfile": {"status": "Accepted"},
            "ClearChargingProfile": {"status": "Accepted"}}


class Trace:
    """The opt-in per-station trace (module doc): JSON lines appended to one file per client."""

    def __init__(self, path: str | None, sids: list[str]) -> None:
        self.file = open(path, "a", buffering=1) if path else None  # noqa: SIM115 (closed at exit)
        self.sids = set(sids)

    def on(self, sid: str) -> bool:
        """Whether `sid` is traced."""
        return self.file is not None and (not self.sids or sid in self.sids)

    def write(self, sid: str, kind: str, **fields: Any) -> None:
        """One line: time, station, kind and `fields`."""
        if self.file is not None:
            line = {"t": round(time.time(), 3), "sid": sid, "kind": kind, **fields}
            self.file.write(json.dumps(line) + "\n")


NO_TRACE = Trace(None, [])


class Station:
    """One WebSocket connection: calls with round-trip times, answers the csms's calls."""

    def __init__(self, sid: str, cfg: dict[str, Any], stats: dict[str, Any], trace: Trace = NO_TRACE) -> None:
        self.sid, self.cfg, self.stats = sid, cfg, stats
        self.trace = trace if trace.on(sid) else NO_TRACE
        self.ws: Any = None
        self.pending: dict[str, asyncio.Future[Any]] = {}
        self.counter = 0
        self.charger = Charger(sid, cfg["mix"], cfg["tx_events"])
        self.limits = None if cfg.get("ignore_limits") else Limits()
        self.window = (math.inf, math.inf)
        """The measured window (epoch s): calls from the csms in it are counted by action."""

    async def connect(self) -> None:
        """Open the WebSocket (retried while refused) and BootNotify."""
        from websockets.asyncio.client import connect
        from websockets.exceptions import InvalidStatus

        token = base64.b64encode(f"{self.sid}:{self.cfg['password']}".encode()).decode()
        for _ in range(self.cfg["connect_tries"]):
            try:
                self.ws = await connect(self.cfg["url"] + self.sid, subprotocols=["ocpp2.0.1"],  # type: ignore[list-item]
                                        additional_headers={"Authorization": f"Basic {token}"},
                                        open_timeout=60, max_queue=None, ping_interval=None,
                                        compression=None)
                break
            except InvalidStatus as err:
                self.stats["refused"] += 1
                retry = err.response.headers.get("Retry-After")
                await asyncio.sleep(float(retry) * random.uniform(1, 1.5) if retry else random.uniform(1, 3))
            except (OSError, TimeoutError):
                self.stats["refused"] += 1
                await asyncio.sleep(random.uniform(1, 3))
        if self.ws is None:
            raise ConnectionError(f"{self.sid}: not connected after {self.cfg['connect_tries']} tries")
        asyncio.create_task(self._reader())
        await self.call("BootNotification", {"reason": "PowerUp",
                                             "chargingStation": {"model": "L", "vendorName": "L"}})
        if self.cfg.get("boot_status", True):  # a real charger reports each connector once accepted (G01)
            await self.call("StatusNotification", {"timestamp": _ts(), "connectorStatus": "Available",
                                                   "evseId": 1, "connectorId": 1})

    async def _reader(self) -> None:
        with contextlib.suppress(Exception):
            async for raw in self.ws:
                msg = json.loads(raw)
                if msg[0] == 2:
                    answer = _ANSWERS.get(msg[2])
                    if msg[2] in ("SetChargingProfile", "ClearChargingProfile"):
                        self.trace.write(self.sid, msg[2], uid=msg[1], payload=msg[3])
                    if msg[2] == "SetChargingProfile" and self.limits is not None:
                        self.limits.accept(msg[3])
                    elif msg[2] == "ClearChargingProfile" and self.limits is not None:
                        self.limits = Limits()
                    self.stats["csms_calls"] += 1
                    if self.window[0] <= time.time() < self.window[1]:
                        key = f"window_call:{msg[2]}"
                        self.stats[key] = self.stats.get(key, 0) + 1
                    await self.ws.send(json.dumps([3, msg[1], answer]) if answer is not None else
                                       json.dumps([4, msg[1], "NotImplemented", "", {}]))
                elif (fut := self.pending.pop(msg[1], None)) is not None and not fut.done():
                    fut.set_result(msg)
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(ConnectionError("closed"))

    async def call(self, action: str, payload: dict[str, Any]) -> float:
        """Send a CALL, wait for its answer; the round trip in seconds."""
        self.counter += 1
        uid = str(self.counter)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.pending[uid] = fut
        start = time.perf_counter()
        try:
            await self.ws.send(json.dumps([2, uid, action, payload]))
            msg = await asyncio.wait_for(fut, self.cfg["answer_timeout_s"])
        finally:  # a send that failed leaves no future for the reader to fail unobserved
            self.pending.pop(uid, None)
        if msg[0] != 3:
            raise RuntimeError(f"{action}: {msg}")
        return time.perf_counter() - start

    def _trace_reading(self, action: str, payload: dict[str, Any]) -> None:
        """Trace a reading: its power, transaction and the schedules the station held then."""
        sampled = payload["meterValue"][0]["sampledValue"]
        power_w = next(v["value"] for v in sampled if v["measurand"] == "Power.Active.Import") * 1000.0
        limits = self.limits
        self.trace.write(self.sid, action, power_w=power_w, event=payload.get("eventType"),
                         tx=(payload.get("transactionInfo") or {}).get("transactionId"),
                         default=limits.default if limits else None,
                         tx_profiles=limits.tx if limits else None)

    async def run(self, t0: float, lat: list[float]) -> None:
        """Send one message every interval between t0 and t0 + duration."""
        interval, end = self.cfg["interval_s"], t0 + self.cfg["duration_s"]
        self.window = (t0, end)
        next_at = t0 - self.cfg.get("warmup_s", 0.0) + random.uniform(0, interval)
        while True:
            await asyncio.sleep(max(0.0, min(next_at, end) - time.time()))
            if time.time() >= end:
                return
            next_at += interval
            action, payload = self.charger.next(self.limits)
            if self.trace is not NO_TRACE and action != "Heartbeat":
                self._trace_reading(action, payload)
            try:
                rtt = await self.call(action, payload)
                if time.time() - rtt >= t0:  # sent inside the window (not during the warm-up)
                    lat.append(rtt)
            except Exception as err:
                key = f"error:{type(err).__name__}"
                self.stats[key] = self.stats.get(key, 0) + 1
                if self.ws.close_code is not None:
                    self.stats["closed"] += 1
                    return


class ClientLoop:
    """The client's own event loop in the window: how late a task sleeping `every_s` wakes up, and
    the client's garbage collections. A round trip is measured here, so a client whose loop is late
    (its CPU, a collection, other processes) adds that to the latencies it reports."""

    def __init__(self, every_s: float = 0.01) -> None:
        self.every_s = every_s
        self.lags_s: list[float] = []
        self.gc_s: list[float] = []
        self._gc_start = 0.0

    def _on_gc(self, phase: str, _info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_start = time.perf_counter()
        else:
            self.gc_s.append(time.perf_counter() - self._gc_start)

    async def run(self, t0: float, end: float) -> None:
        """Sample from `t0` to `end` (epoch s)."""
        await asyncio.sleep(max(0.0, t0 - time.time()))
        gc.callbacks.append(self._on_gc)
        try:
            while time.time() < end:
                asked = time.perf_counter()
                await asyncio.sleep(self.every_s)
                self.lags_s.append(max(0.0, time.perf_counter() - asked - self.every_s))
        finally:
            gc.callbacks.remove(self._on_gc)

    def summary(self) -> dict[str, Any]:
        """Lag max / p99 (ms), samples later than 50 ms, collections (count, ms in all, longest)."""
        lags = sorted(self.lags_s)
        return {"lag_max_ms": round(lags[-1] * 1000, 1) if lags else None,
                "lag_p99_ms": round(lags[int(0.99 * len(lags))] * 1000, 1) if lags else None,
                "lags_over_50ms": sum(1 for x in lags if x > 0.05), "samples": len(lags),
                "gcs": len(self.gc_s), "gc_ms": round(sum(self.gc_s) * 1000, 1),
                "gc_max_ms": round(max(self.gc_s, default=0.0) * 1000, 1)}


async def client_main() -> None:
    """One client process (see module docstring)."""
    loop = asyncio.get_running_loop()
    cfg = json.loads(await loop.run_in_executor(None, sys.stdin.readline))
    stats: dict[str, Any] = {"refused": 0, "closed": 0, "csms_calls": 0}
    trace = Trace(cfg.get("trace"), cfg.get("trace_sids") or [])
    stations = [Station(sid, cfg, stats, trace) for sid in cfg["sids"]]
    gap = 1.0 / cfg["connect_rate"]
    tasks = []
    for st in stations:
        tasks.append(asyncio.create_task(st.connect()))
        await asyncio.sleep(gap)
    done = await asyncio.gather(*tasks, return_exceptions=True)
    ready = [st for st, d in zip(stations, done, strict=True) if not isinstance(d, BaseException)]
    fails = [repr(d)[:200] for d in done if isinstance(d, BaseException)]
    print(json.dumps({"ready": len(ready), "connect_failures": fails[:3]}), flush=True)
    t0 = float(await loop.run_in_executor(None, sys.stdin.readline))
    lat: list[float] = []
    watch = ClientLoop()
    watching = asyncio.create_task(watch.run(t0, t0 + cfg["duration_s"]))
    # no collection in this process while the stations send (warm-up and window): a client times the
    # round trips, and its collections were added to them (20,000 stations, 4 clients, 20:49-20:52
    # UTC: 161 collections in the window, 7.7 s in all, the longest 1.2 s). What it built while
    # connecting is frozen; the garbage of the window is a few minutes' worth, collected afterwards.
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        await asyncio.gather(*(st.run(t0, lat) for st in ready), return_exceptions=True)
        await watching
    finally:
        gc.enable()
    print(json.dumps({"latencies": lat, "stats": stats, "loop": watch.summary()}), flush=True)
    # the stations stay connected until the harness has read the nodes' end-of-window figures (a line
    # or EOF on stdin): their 5,000 closes fired a node's gc thaw that its /metrics then counted in
    # the window although it ran seconds after it
    await loop.run_in_executor(None, sys.stdin.readline)
    await asyncio.gather(*(st.ws.close() for st in ready), return_exceptions=True)


async def bare_main(port_file: Path) -> None:
    """The `ocpp` library's own server, answering what the stations send (the anchor)."""
    from ocpp.routing import on
    from ocpp.v201 import ChargePoint, call_result
    from websockets.asyncio.server import serve
    from websockets.exceptions import ConnectionClosed

    class Bare(ChargePoint):
        @on("BootNotification")
        async def on_boot(self, **_: Any) -> call_result.BootNotification:
            return call_result.BootNotification(current_time=_ts(), interval=300, status="Accepted")

        @on("StatusNotification")
        async def on_status(self, **_: Any) -> call_result.StatusNotification:
            return call_result.StatusNotification()

        @on("Heartbeat")
        async def on_heartbeat(self) -> call_result.Heartbeat:
            return call_result.Heartbeat(current_time=_ts())

        @on("MeterValues")
        async def on_meter(self, **_: Any) -> call_result.MeterValues:
            return call_result.MeterValues()

        @on("TransactionEvent")
        async def on_tx(self, **_: Any) -> call_result.TransactionEvent:
            return call_result.TransactionEvent()

    async def handler(conn: Any) -> None:
        with contextlib.suppress(ConnectionClosed):
            await Bare(conn.request.path.rsplit("/", 1)[-1], conn).start()

    async with serve(handler, "127.0.0.1", 0, subprotocols=["ocpp2.0.1"],  # type: ignore[list-item]
                     backlog=4096, compression=None, max_queue=None) as server:
        port_file.write_text(str(next(iter(server.sockets)).getsockname()[1]))
        await asyncio.Future()


if __name__ == "__main__":
    if sys.argv[1] == "client":
        asyncio.run(client_main())
    else:
        asyncio.run(bare_main(Path(sys.argv[2])))
