"""Benchmark: N concurrent OCPP 2.0.1 and/or 1.6J stations against one csms process (not a test).

    .venv/bin/python benchmarks/csms_throughput.py --stations 1000 --clients 2 --duration 15
    .venv/bin/python benchmarks/csms_throughput.py --stations 2000 --ocpp mixed   # 1,000 of each

`--ocpp 1.6` makes every station OCPP 1.6J, `mixed` every second one (the table then has a
row per version; CPU per message is over both). A 1.6J station's "TransactionEvent" phase is
its transaction messages: StartTransaction once, then MeterValues with its transactionId.

Starts a private Redis, provisions N stations, runs `python -m csms` as a separate process
(OCPP only: `EVFLEET_RUN_SERVICES=false`), and `--clients` client processes that each open
N/clients raw WebSocket connections (HTTP Basic, subprotocol ocpp2.0.1) and BootNotify.
Then, per message type (Heartbeat, MeterValues, TransactionEvent), two phases:

- paced: every station sends one message every N/rate seconds (offered load `--rate` msg/s
  in total), each measured from send to CALLRESULT;
- saturation: every station sends its next message as soon as the previous is answered.

Prints a table (msg/s answered, latency p50/p95/p99/max) and writes JSON (`--output`).
All processes share the machine: client load competes with the csms and Redis for CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchlib import pct, proc_cpu_s  # noqa: E402

MESSAGES = ("Heartbeat", "MeterValues", "TransactionEvent")
PASSWORD = "bench-password-1"
OCPP_CHOICES = ("2.0.1", "1.6", "mixed")


def version_of(index: int, ocpp: str) -> str:
    """OCPP version of station `index` for `--ocpp`."""
    return "1.6" if ocpp == "1.6" or (ocpp == "mixed" and index % 2 == 1) else "2.0.1"


def _payload16(action: str, seq: int, txid: int | None) -> tuple[str, dict[str, Any]]:
    """(1.6 action, payload) of a station's `seq`-th message of a phase."""
    ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    sampled = [
        {"value": f"{1.5 + seq * 0.01:.2f}", "measurand": "Energy.Active.Import.Register", "unit": "kWh"},
        {"value": "7.2", "measurand": "Power.Active.Import", "unit": "kW"},
        {"value": "10.1", "measurand": "Current.Import", "phase": "L1", "unit": "A"},
        {"value": "10.0", "measurand": "Current.Import", "phase": "L2", "unit": "A"},
        {"value": "9.9", "measurand": "Current.Import", "phase": "L3", "unit": "A"},
    ]
    if action == "Heartbeat":
        return "Heartbeat", {}
    if action == "TransactionEvent" and txid is None:
        return "StartTransaction", {"connectorId": 1, "idTag": "BENCH", "meterStart": 1500, "timestamp": ts}
    mv: dict[str, Any] = {"connectorId": 1, "meterValue": [{"timestamp": ts, "sampledValue": sampled}]}
    if action == "TransactionEvent":
        mv["transactionId"] = txid
    return "MeterValues", mv


# --- client process ---------------------------------------------------------------------------
def _payload(action: str, sid: str, seq: int) -> dict[str, Any]:
    ts = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    sampled = [
        {"value": 1.5 + seq * 0.01, "measurand": "Energy.Active.Import.Register",
         "unitOfMeasure": {"unit": "kWh"}},
        {"value": 7.2, "measurand": "Power.Active.Import", "unitOfMeasure": {"unit": "kW"}},
        {"value": 10.1, "measurand": "Current.Import", "phase": "L1"},
        {"value": 10.0, "measurand": "Current.Import", "phase": "L2"},
        {"value": 9.9, "measurand": "Current.Import", "phase": "L3"},
    ]
    if action == "Heartbeat":
        return {}
    if action == "MeterValues":
        return {"evseId": 1, "meterValue": [{"timestamp": ts, "sampledValue": sampled}]}
    return {"eventType": "Started" if seq == 0 else "Updated", "timestamp": ts, "seqNo": seq,
            "triggerReason": "CablePluggedIn" if seq == 0 else "MeterValuePeriodic",
            "transactionInfo": {"transactionId": f"bench-{sid}", "chargingState": "Charging"},
            "evse": {"id": 1, "connectorId": 1},
            "meterValue": [{"timestamp": ts, "sampledValue": sampled}]}


async def _station(url: str, sid: str, plan: list[dict[str, Any]], t0_fut: asyncio.Future[float],
                   results: dict[str, list[float]], errors: dict[str, int], n_total: int,
                   connected: list[int], version: str = "2.0.1") -> None:
    from websockets.asyncio.client import connect

    token = base64.b64encode(f"{sid}:{PASSWORD}".encode()).decode()
    ws = await connect(url + sid, subprotocols=["ocpp1.6" if version == "1.6" else "ocpp2.0.1"],  # type: ignore[list-item]
                       additional_headers={"Authorization": f"Basic {token}"}, open_timeout=120,
                       max_queue=None, ping_interval=None, compression=None)
    counter = 0

    answer: dict[str, Any] = {}

    async def call(action: str, payload: dict[str, Any]) -> float:
        nonlocal counter, answer
        counter += 1
        uid = f"{sid}-{counter}"
        start = time.perf_counter()
        await ws.send(json.dumps([2, uid, action, payload]))
        while True:
            msg = json.loads(await ws.recv())
            if msg[1] == uid:
                break
        if msg[0] != 3:
            raise RuntimeError(f"{action}: {msg}")
        answer = msg[2]
        return time.perf_counter() - start

    if version == "1.6":
        await call("BootNotification", {"chargePointVendor": "B", "chargePointModel": "B"})
    else:
        await call("BootNotification", {"reason": "PowerUp",
                                        "chargingStation": {"model": "B", "vendorName": "B"}})
    txid: int | None = None
    connected[0] += 1
    t0 = await t0_fut
    seq = 0
    for phase in plan:
        start, end, action = t0 + phase["start"], t0 + phase["end"], phase["action"]
        interval = n_total / phase["rate"] if phase["rate"] else 0.0
        # spread stations over the interval so load is smooth
        next_at = start + (hash(sid) % 1000) / 1000.0 * interval
        while time.time() < start:
            await asyncio.sleep(start - time.time())
        lat = results.setdefault(f"{phase['name']}|{version}", [])
        while True:
            now = time.time()
            if interval:
                if next_at > now:
                    await asyncio.sleep(next_at - now)
                next_at += interval
            if time.time() >= end:
                break
            try:
                if version == "1.6":
                    name16, payload16 = _payload16(action, seq, txid)
                    lat.append(await call(name16, payload16))
                    if name16 == "StartTransaction":
                        txid = int(answer["transactionId"])
                else:
                    lat.append(await call(action, _payload(action, sid, seq)))
            except Exception:
                key = f"{phase['name']}|{version}"
                errors[key] = errors.get(key, 0) + 1
                if ws.close_code is not None:  # closed by the csms: this station is done (no spinning)
                    errors["closed_stations"] = errors.get("closed_stations", 0) + 1
                    return
            if action == "TransactionEvent":
                seq += 1
    await ws.close()


async def _client_main(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    sids = [f"B{i:05d}" for i in range(args.first, args.first + args.count)]
    cfg = json.loads(await loop.run_in_executor(None, sys.stdin.readline))
    results: dict[str, list[float]] = {}
    errors: dict[str, int] = {}
    connected = [0]
    t0_fut: asyncio.Future[float] = loop.create_future()
    tasks = []
    for i, sid in zip(range(args.first, args.first + args.count), sids, strict=True):
        # connection ramp: about 500 handshakes per second per client
        tasks.append(asyncio.create_task(_station(cfg["url"], sid, cfg["plan"], t0_fut, results, errors,
                                                  cfg["n_total"], connected, version_of(i, cfg["ocpp"]))))
        await asyncio.sleep(0.002)
    while connected[0] + sum(1 for t in tasks if t.done()) < len(sids):
        await asyncio.sleep(0.1)
    early = [repr(t.exception())[:200] for t in tasks if t.done() and t.exception() is not None]
    print(json.dumps({"ready": connected[0], "connect_failures": early[:5]}), flush=True)
    t0_fut.set_result(float(await loop.run_in_executor(None, sys.stdin.readline)))
    done = await asyncio.gather(*tasks, return_exceptions=True)
    failures = [repr(d) for d in done if isinstance(d, BaseException)]
    print(json.dumps({"results": results, "errors": errors, "failures": failures[:5],
                      "failed_stations": len(failures)}), flush=True)


# --- orchestrator ---------------------------------------------------------------------------
def _provision(redis_url: str, n: int, iterations: int) -> None:
    import redis

    from csms.core.security import hash_password
    from evfleet.keys import Keys
    from evfleet.store.client import hmap

    keys = Keys()
    cred = hmap({**hash_password(PASSWORD, iterations).to_fields(), "security_profile": "1"})
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        sid = f"B{i:05d}"
        pipe.sadd(keys.stations(), sid)
        pipe.hset(keys.station_credentials(sid), mapping=cred)  # same salt for all: bench shortcut
        pipe.hset(keys.station(sid), mapping={"site_id": "bench", "compat": "0", "online": "0"})
        pipe.sadd(keys.site_stations("bench"), sid)  # the site index, as provisioning writes it
    pipe.execute()
    r.close()


def main() -> None:
    """Run the benchmark (see module docstring)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stations", type=int, default=1000)
    p.add_argument("--clients", type=int, default=2, help="client processes")
    p.add_argument("--duration", type=float, default=15.0, help="seconds per phase")
    p.add_argument("--rate", type=float, default=1000.0, help="paced phases: total offered msg/s")
    p.add_argument("--iterations", type=int, default=10_000,
                   help="PBKDF2 iterations of the benchmark stations (production default 100000)")
    p.add_argument("--no-saturation", action="store_true", help="skip the saturation phases")
    p.add_argument("--output", type=Path, default=Path("benchmarks/results/csms_throughput.json"))
    p.add_argument("--profile", type=Path, default=None, help="write a cProfile of the csms process here")
    p.add_argument("--only", choices=MESSAGES, default=None, help="run the phases of one message type")
    p.add_argument("--ocpp", choices=OCPP_CHOICES, default="2.0.1",
                   help="OCPP version of the stations (mixed: every second station 1.6J)")
    p.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.client:
        asyncio.run(_client_main(args))
        return

    from csms.store.embedded import EmbeddedRedis

    redis_srv = EmbeddedRedis().start()
    csms_proc = None
    try:
        t = time.perf_counter()
        _provision(redis_srv.url, args.stations, args.iterations)
        print(f"provisioned {args.stations} stations in {time.perf_counter() - t:.1f}s", flush=True)
        env = {**os.environ, "PYTHONPATH": str(REPO), "EVFLEET_REDIS_URL": redis_srv.url,
               "EVFLEET_NODE_ID": "bench", "EVFLEET_RUN_SERVICES": "false", "EVFLEET_LOG_LEVEL": "WARNING",
               "EVFLEET_RATE_LIMIT_PER_S": "1000", "EVFLEET_RATE_LIMIT_BURST": "1000"}
        profile = ["-m", "cProfile", "-o", str(args.profile)] if args.profile else []
        csms_proc = subprocess.Popen([sys.executable, *profile, "-m", "csms", "--host", "127.0.0.1",
                                      "--port", "0"], env=env, cwd=str(REPO))
        import redis

        r = redis.Redis.from_url(redis_srv.url, decode_responses=True)
        deadline = time.time() + 30
        while not r.exists("evfleet:node:bench"):
            if time.time() > deadline or csms_proc.poll() is not None:
                raise SystemExit("csms did not start")
            time.sleep(0.1)
        port = json.loads(str(r.get("evfleet:node:bench")))["ocpp_port"]
        url = f"ws://127.0.0.1:{port}/ocpp/"
        per = [args.stations // args.clients + (1 if i < args.stations % args.clients else 0)
               for i in range(args.clients)]
        clients = []
        first = 0
        for count in per:
            clients.append(subprocess.Popen(
                [sys.executable, __file__, "--client", "--first", str(first), "--count", str(count)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=str(REPO)))
            first += count
        plan = []
        start = 0.0
        modes = [("paced", args.rate)] + ([] if args.no_saturation else [("saturation", 0.0)])
        for action in ([args.only] if args.only else MESSAGES):
            for mode, rate in modes:
                plan.append({"name": f"{action}/{mode}", "action": action, "rate": rate,
                             "start": start, "end": start + args.duration})
                start += args.duration + 1.0
        cfg = {"url": url, "plan": plan, "n_total": args.stations, "ocpp": args.ocpp}
        connect_started = time.time()
        for c in clients:
            assert c.stdin is not None
            c.stdin.write(json.dumps(cfg) + "\n")
            c.stdin.flush()
        ready = 0
        for c in clients:
            assert c.stdout is not None
            status = json.loads(c.stdout.readline())
            ready += status["ready"]
            if status["connect_failures"]:
                print("connect failures (first 5):", status["connect_failures"], flush=True)
        connect_s = time.time() - connect_started
        online = sum(1 for i in range(args.stations) if r.hget(f"evfleet:station:B{i:05d}", "online") == "1")
        print(f"{ready}/{args.stations} stations connected and booted in {connect_s:.1f}s "
              f"({online} online in Redis)", flush=True)
        t0 = time.time() + 1.0
        for c in clients:
            assert c.stdin is not None
            c.stdin.write(f"{t0}\n")
            c.stdin.flush()
        # CPU seconds the csms and redis-server processes spend in each phase: a figure that
        # depends less on what else runs on the machine than msg/s does
        redis_pid = redis_srv._proc.pid if redis_srv._proc else 0
        cpu: dict[str, tuple[float, float]] = {}
        for phase in plan:
            time.sleep(max(0.0, t0 + phase["start"] - time.time()))
            a_csms, a_redis = proc_cpu_s(csms_proc.pid), proc_cpu_s(redis_pid)
            time.sleep(max(0.0, t0 + phase["end"] - time.time()))
            cpu[phase["name"]] = (proc_cpu_s(csms_proc.pid) - a_csms, proc_cpu_s(redis_pid) - a_redis)
        outputs = [json.loads(c.communicate(timeout=len(plan) * (args.duration + 1) + 120)[0])
                   for c in clients]
        merged: dict[str, list[float]] = {}
        errors: dict[str, int] = {}
        failed = sum(o["failed_stations"] for o in outputs)
        for o in outputs:
            for k, v in o["results"].items():
                merged.setdefault(k, []).extend(v)
            for k, v in o["errors"].items():
                errors[k] = errors.get(k, 0) + v
            if o["failures"]:
                print("client failures:", o["failures"])
        rows = []
        versions = sorted({version_of(i, args.ocpp) for i in range(args.stations)}, reverse=True)
        for phase in plan:
            total = sum(len(merged.get(f"{phase['name']}|{v}", [])) for v in versions)
            for v in versions:
                lat = merged.get(f"{phase['name']}|{v}", [])
                rows.append({
                    "phase": phase["name"] + (f" {v}" if len(versions) > 1 else ""), "ocpp": v,
                    "messages": len(lat), "errors": errors.get(f"{phase['name']}|{v}", 0),
                    "msg_per_s": len(lat) / args.duration,
                    "p50_ms": pct(lat, 0.50) * 1000, "p95_ms": pct(lat, 0.95) * 1000,
                    "p99_ms": pct(lat, 0.99) * 1000, "max_ms": max(lat) * 1000 if lat else float("nan"),
                    "mean_ms": statistics.fmean(lat) * 1000 if lat else float("nan"),
                    "csms_cpu_us_per_msg": cpu[phase["name"]][0] / total * 1e6 if total else float("nan"),
                    "redis_cpu_us_per_msg": cpu[phase["name"]][1] / total * 1e6 if total else float("nan"),
                })
        print()
        print(f"{args.stations} stations (OCPP {args.ocpp}), {args.clients} client processes, "
              f"{args.duration:g}s per phase, "
              f"paced offered load {args.rate:g} msg/s, cpus={os.cpu_count()}")
        print(f"{'phase':<36}{'msgs':>8}{'err':>5}{'msg/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
              f"{'max ms':>9}{'csms us':>9}{'redis us':>9}")
        for row in rows:
            print(f"{row['phase']:<36}{row['messages']:>8}{row['errors']:>5}{row['msg_per_s']:>9.0f}"
                  f"{row['p50_ms']:>9.1f}{row['p95_ms']:>9.1f}{row['p99_ms']:>9.1f}{row['max_ms']:>9.1f}"
                  f"{row['csms_cpu_us_per_msg']:>9.0f}{row['redis_cpu_us_per_msg']:>9.0f}")
        print("(csms us / redis us: CPU microseconds per answered message in the csms and redis-server "
              "processes)")
        load = os.getloadavg()
        if errors.get("closed_stations"):
            print(f"{errors['closed_stations']} station connections closed by the csms during the phases")
        print(f"load average during the run: {load[0]:.1f} (1 min), {load[1]:.1f} (5 min) "
              f"on {os.cpu_count()} cpus")
        result = {"load_average_1m_5m": [load[0], load[1]], "ocpp": args.ocpp,
                  "stations": args.stations, "clients": args.clients, "duration_s": args.duration,
                  "paced_rate_msg_per_s": args.rate, "pbkdf2_iterations": args.iterations,
                  "stations_online": online, "connect_s": connect_s, "failed_stations": failed,
                  "stations_closed_by_csms": errors.get("closed_stations", 0),
                  "cpus": os.cpu_count(), "phases": rows,
                  "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2))
        print(f"\nwrote {args.output}")
    finally:
        if csms_proc is not None:
            csms_proc.terminate()
            csms_proc.wait(30)
        redis_srv.stop()


if __name__ == "__main__":
    main()
