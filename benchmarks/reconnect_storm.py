"""Benchmark: N provisioned stations reconnect at once to one node (a restart storm). Not a test.

    .venv/bin/python benchmarks/reconnect_storm.py --stations 1000
    .venv/bin/python benchmarks/reconnect_storm.py --stations 5000 --clients 4

Starts a private Redis and provisions N stations (HTTP Basic, 24-character passwords, stored
with the default scheme; `--pbkdf2 ITER` stores legacy PBKDF2 hashes instead, which the node
migrates on the first login). Then, one after the other in the same run, two servers:

- `evfleet`: `python -m csms` (API, telemetry and smart charging on unless `--ocpp-only`);
- `bare`: the `ocpp` library's ChargePoint behind `websockets.serve` with the same listen
  backlog, answering BootNotification Accepted, with no authentication and no storage.

Against each, `--clients` client processes open all their connections at the same moment.
Each station connects (`--open-timeout`, like a charger's connection timeout), sends
BootNotification and waits for the answer; a failed attempt is retried after 1-3 s, or after
the server's Retry-After (x 1-1.5) when it sent one (at most `--tries` attempts). Reported
per server: time until all are booted, first-try successes, handshake timeouts (the client
gave up waiting for the handshake), other refusals (HTTP status) and the CPU seconds of the
server (and of redis-server for evfleet) from the start of the storm until the last station
booted. Writes JSON to `--output`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchlib import proc_cpu_s  # noqa: E402

PASSWORD = "storm-password-0123456789"  # 25 characters: a machine-generated station secret


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _sid(i: int) -> str:
    return f"S{i:05d}"


# --- client process -----------------------------------------------------------------------
async def _station(url: str, sid: str, args: argparse.Namespace, start: float,
                   stats: dict[str, Any], hold: asyncio.Event) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    from csms.core.security import basic_auth_header

    headers = {"Authorization": basic_auth_header(sid, PASSWORD)}
    for attempt in range(1, args.tries + 1):
        retry_after = 0.0
        try:
            ws = await connect(url + sid, subprotocols=["ocpp2.0.1"],  # type: ignore[list-item]
                               additional_headers=headers, open_timeout=args.open_timeout,
                               ping_interval=None, compression=None, max_queue=None)
        except TimeoutError:
            stats["handshake_timeouts"] += 1
        except InvalidStatus as err:
            code = str(err.response.status_code)
            stats["refusals"][code] = stats["refusals"].get(code, 0) + 1
            retry_after = float(err.response.headers.get("Retry-After") or 0)
        except OSError as err:
            stats["refusals"][type(err).__name__] = stats["refusals"].get(type(err).__name__, 0) + 1
        else:
            try:
                await ws.send(json.dumps([2, "boot", "BootNotification", {
                    "reason": "PowerUp", "chargingStation": {"model": "Storm", "vendorName": "Bench"}}]))
                while True:
                    msg = json.loads(await ws.recv())
                    if msg[0] == 2:  # a CALL from the csms (e.g. GetBaseReport): accept it
                        await ws.send(json.dumps([3, msg[1], {"status": "Accepted"}]))
                    elif msg[1] == "boot":
                        break
            except Exception as err:  # closed during boot: count and retry
                name = f"boot:{type(err).__name__}"
                stats["refusals"][name] = stats["refusals"].get(name, 0) + 1
                continue
            stats["booted_at"].append(time.time() - start)
            if attempt == 1:
                stats["first_try"] += 1
            try:
                await hold.wait()
            finally:
                await ws.close()
            return
        # like a charger's reconnect backoff; a Retry-After from the server is honoured (plus jitter)
        await asyncio.sleep(max(random.uniform(1.0, 3.0), random.uniform(retry_after, 1.5 * retry_after)))
    stats["gave_up"] += 1


async def _client_main(args: argparse.Namespace) -> None:
    _raise_nofile()
    loop = asyncio.get_running_loop()
    cfg = json.loads(await loop.run_in_executor(None, sys.stdin.readline))
    stats: dict[str, Any] = {"handshake_timeouts": 0, "refusals": {}, "first_try": 0, "gave_up": 0,
                             "booted_at": []}
    hold = asyncio.Event()
    await asyncio.sleep(max(0.0, cfg["start"] - time.time()))
    tasks = [asyncio.create_task(_station(cfg["url"], _sid(i), args, cfg["start"], stats, hold))
             for i in range(args.first, args.first + args.count)]
    while len(stats["booted_at"]) + stats["gave_up"] < args.count:
        await asyncio.sleep(0.05)
    print(json.dumps(stats), flush=True)
    await loop.run_in_executor(None, sys.stdin.readline)  # release
    hold.set()
    await asyncio.gather(*tasks, return_exceptions=True)


# --- bare ocpp-library server --------------------------------------------------------------
async def _bare_main(port_file: Path) -> None:
    from ocpp.routing import on
    from ocpp.v201 import ChargePoint, call_result
    from websockets.asyncio.server import serve
    from websockets.exceptions import ConnectionClosed

    class Station(ChargePoint):
        @on("BootNotification")
        async def on_boot(self, **_: Any) -> call_result.BootNotification:
            return call_result.BootNotification(current_time=time.strftime("%Y-%m-%dT%H:%M:%SZ"),
                                                interval=300, status="Accepted")

    async def handler(conn: Any) -> None:
        with contextlib.suppress(ConnectionClosed):
            await Station(conn.request.path.rsplit("/", 1)[-1], conn).start()

    _raise_nofile()
    async with serve(handler, "127.0.0.1", 0, subprotocols=["ocpp2.0.1"],  # type: ignore[list-item]
                     backlog=2048, compression=None) as server:
        port_file.write_text(str(next(iter(server.sockets)).getsockname()[1]))
        await asyncio.Future()


# --- orchestrator -------------------------------------------------------------------------
def _provision(redis_url: str, n: int, pbkdf2: int | None) -> None:
    import redis

    from csms.core.security import SCHEME, hash_password
    from evfleet.keys import Keys
    from evfleet.store.client import hmap

    keys = Keys()
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    pipe = r.pipeline(transaction=False)
    legacy = hash_password(PASSWORD, pbkdf2, scheme=SCHEME) if pbkdf2 else None  # one salt: shortcut
    for i in range(n):
        sid = _sid(i)
        cred = legacy or hash_password(PASSWORD)
        pipe.sadd(keys.stations(), sid)
        pipe.hset(keys.station_credentials(sid), mapping=hmap({**cred.to_fields(), "security_profile": "1"}))
        pipe.hset(keys.station(sid), mapping={"site_id": "storm", "compat": "0", "online": "0",
                                              "last_boot": "2026-01-01T00:00:00+00:00"})
        pipe.sadd(keys.site_stations("storm"), sid)
        if i % 1000 == 999:
            pipe.execute()
    pipe.sadd(keys.sites(), "storm")
    pipe.hset(keys.site("storm"), mapping={"name": "storm", "limit_kw": "100000"})
    pipe.execute()
    r.close()


def _start_evfleet(redis_url: str, args: argparse.Namespace) -> tuple[subprocess.Popen[bytes], str]:
    import redis

    env = {**os.environ, "PYTHONPATH": str(REPO), "EVFLEET_REDIS_URL": redis_url, "EVFLEET_NODE_ID": "storm",
           "EVFLEET_LOG_LEVEL": "ERROR", "EVFLEET_API_PORT": "0",
           "EVFLEET_RUN_SERVICES": "false" if args.ocpp_only else "true"}
    profile = ["-m", "cProfile", "-o", str(args.profile)] if args.profile else []
    proc = subprocess.Popen([sys.executable, *profile, "-m", "csms", "--host", "127.0.0.1", "--port", "0"],
                            env=env, cwd=str(REPO), preexec_fn=_raise_nofile)
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    deadline = time.time() + 60
    while not r.exists("evfleet:node:storm"):
        if time.time() > deadline or proc.poll() is not None:
            raise SystemExit("csms did not start")
        time.sleep(0.1)
    port = json.loads(str(r.get("evfleet:node:storm")))["ocpp_port"]
    r.close()
    return proc, f"ws://127.0.0.1:{port}/ocpp/"


def _start_bare(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    port_file = tmp / "bare.port"
    port_file.unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, __file__, "--bare-server", str(port_file)], cwd=str(REPO))
    deadline = time.time() + 30
    while not port_file.exists() or not port_file.read_text():
        if time.time() > deadline or proc.poll() is not None:
            raise SystemExit("bare server did not start")
        time.sleep(0.05)
    return proc, f"ws://127.0.0.1:{port_file.read_text()}/ocpp/"


def _storm(url: str, server_pids: list[int], args: argparse.Namespace) -> dict[str, Any]:
    per = [args.stations // args.clients + (1 if i < args.stations % args.clients else 0)
           for i in range(args.clients)]
    clients, first = [], 0
    base = [sys.executable, __file__, "--client", "--tries", str(args.tries), "--open-timeout",
            str(args.open_timeout)]
    for count in per:
        clients.append(subprocess.Popen(base + ["--first", str(first), "--count", str(count)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                        cwd=str(REPO), preexec_fn=_raise_nofile))
        first += count
    time.sleep(1.5)  # let the client processes import
    start = time.time() + 1.0
    for c in clients:
        assert c.stdin is not None
        c.stdin.write(json.dumps({"url": url, "start": start}) + "\n")
        c.stdin.flush()
    time.sleep(max(0.0, start - time.time()))
    cpu0 = [proc_cpu_s(pid) for pid in server_pids]
    outs = []
    for c in clients:
        assert c.stdout is not None
        outs.append(json.loads(c.stdout.readline()))
    cpu = [proc_cpu_s(pid) - c0 for pid, c0 in zip(server_pids, cpu0, strict=True)]
    for c in clients:
        assert c.stdin is not None
        c.stdin.write("go\n")
        c.stdin.flush()
    for c in clients:
        c.wait(60)
    booted = sorted(t for o in outs for t in o["booted_at"])
    refusals: dict[str, int] = {}
    for o in outs:
        for k, v in o["refusals"].items():
            refusals[k] = refusals.get(k, 0) + v
    return {"booted": len(booted), "first_try": sum(o["first_try"] for o in outs),
            "handshake_timeouts": sum(o["handshake_timeouts"] for o in outs), "refusals": refusals,
            "gave_up": sum(o["gave_up"] for o in outs),
            "all_booted_s": booted[-1] if len(booted) == args.stations else None,
            "p50_booted_s": booted[len(booted) // 2] if booted else None,
            "last_booted_s": booted[-1] if booted else None,
            "server_cpu_s": cpu[0], "redis_cpu_s": cpu[1] if len(cpu) > 1 else None}


def main() -> None:
    """Run the benchmark (see module docstring)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stations", type=int, default=1000)
    p.add_argument("--clients", type=int, default=2, help="client processes")
    p.add_argument("--tries", type=int, default=10, help="connection attempts per station")
    p.add_argument("--open-timeout", type=float, default=10.0, help="client handshake timeout (s)")
    p.add_argument("--pbkdf2", type=int, default=None,
                   help="store legacy PBKDF2 hashes with this many iterations (default: current scheme)")
    p.add_argument("--ocpp-only", action="store_true",
                   help="run the csms without API/telemetry/smart charging")
    p.add_argument("--servers", default="evfleet,bare", help="which servers, in this order")
    p.add_argument("--output", type=Path, default=Path("benchmarks/results/reconnect_storm.json"))
    p.add_argument("--profile", type=Path, default=None, help="write a cProfile of the csms process here")
    p.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--count", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--bare-server", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.client:
        asyncio.run(_client_main(args))
        return
    if args.bare_server is not None:
        asyncio.run(_bare_main(args.bare_server))
        return

    import tempfile

    from csms.store.embedded import EmbeddedRedis

    _raise_nofile()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.servers.split(","):
            redis_srv = EmbeddedRedis().start() if name == "evfleet" else None
            proc = None
            try:
                if redis_srv is not None:
                    _provision(redis_srv.url, args.stations, args.pbkdf2)
                    proc, url = _start_evfleet(redis_srv.url, args)
                    pids = [proc.pid, redis_srv._proc.pid if redis_srv._proc else 0]
                else:
                    proc, url = _start_bare(Path(tmp))
                    pids = [proc.pid]
                time.sleep(1.0)
                results[name] = _storm(url, pids, args)
                print(f"{name}: {json.dumps(results[name])}", flush=True)
            finally:
                if proc is not None:
                    proc.terminate()
                    proc.wait(30)
                if redis_srv is not None:
                    redis_srv.stop()
    load = os.getloadavg()
    print()
    print(f"{args.stations} stations, {args.clients} client processes, open timeout {args.open_timeout:g} s, "
          f"{'PBKDF2 ' + str(args.pbkdf2) if args.pbkdf2 else 'current password scheme'}, "
          f"{'OCPP only' if args.ocpp_only else 'all services'}")
    print(f"{'server':<9}{'booted':>8}{'1st try':>9}{'hs t/o':>8}{'all s':>8}{'p50 s':>8}{'cpu s':>8}"
          f"{'redis s':>9}  refusals")
    for name, r in results.items():
        all_s = f"{r['all_booted_s']:.1f}" if r["all_booted_s"] is not None else "-"
        p50 = f"{r['p50_booted_s']:.1f}" if r["p50_booted_s"] is not None else "-"
        redis_s = f"{r['redis_cpu_s']:.1f}" if r["redis_cpu_s"] is not None else "-"
        print(f"{name:<9}{r['booted']:>8}{r['first_try']:>9}{r['handshake_timeouts']:>8}{all_s:>8}{p50:>8}"
              f"{r['server_cpu_s']:>8.1f}{redis_s:>9}  {r['refusals'] or ''}")
    print(f"load average at the end: {load[0]:.1f} (1 min), {load[1]:.1f} (5 min) on {os.cpu_count()} cpus")
    out = {"stations": args.stations, "clients": args.clients, "open_timeout_s": args.open_timeout,
           "pbkdf2_iterations": args.pbkdf2, "ocpp_only": args.ocpp_only, "results": results,
           "load_average_1m_5m": [load[0], load[1]], "cpus": os.cpu_count(),
           "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(out, indent=2))
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
