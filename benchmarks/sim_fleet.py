"""Benchmark: one simulator process runs N (default 2,000) stations against one csms process.

    .venv/bin/python benchmarks/sim_fleet.py [--stations 2000] [--speed 10] [--steady 60] [--ramp-per-s 100]

This process is the simulator (a `FleetRunner` of a random fleet whose EVs all plug in right
after the ramp-up). It starts a private redis-server and `evfleet csms` as a separate process
(API and smart charging off, so the csms only does OCPP + Redis), provisions the stations,
then measures:

- ramp-up: real seconds from the first connection attempt until every station is connected
  and booted (BootNotification accepted, StatusNotification sent);
- message rate: OCPP CALLs per real second sent by the stations (and frames received: their
  CALLRESULTs plus CSMS-initiated CALLs) during a steady phase of `--steady` real seconds with
  every EV charging; the station queues' depth at the end shows whether the csms kept up;
- memory: RSS of the simulator process (and of the csms) before and after, per station;
- CPU seconds of both processes.

Prints a table and writes JSON (``--out``, default benchmarks/results/sim_fleet.json).
Station passwords are hashed with 1,000 PBKDF2 iterations (``--iterations``) so the csms's
handshake check does not dominate the ramp-up (the production default is 100,000).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import ocpp.messages  # noqa: E402
from benchlib import proc_cpu_s, proc_rss_mb  # noqa: E402

from csms.store.embedded import EmbeddedRedis, free_port  # noqa: E402
from csms.store.provisioning import provision_station  # noqa: E402
from evfleet.clock import ScaledClock  # noqa: E402
from evfleet.keys import Keys  # noqa: E402
from evfleet.store.client import connect_redis  # noqa: E402
from evse_sim.fleet import FleetConfig, FleetRunner  # noqa: E402
from evse_sim.scenarios import Scenario, random_fleet  # noqa: E402

PASSWORD = "bench-password-1"


def bench_scenario(n: int, ramp_s: float, seed: int) -> Scenario:
    """A random fleet whose EVs arrive within 2 simulated minutes after the ramp-up and stay 6 hours."""
    base = random_fleet(n, seed=seed, start=datetime(2025, 6, 2, 8, 0, tzinfo=UTC))
    rng = random.Random(seed)
    evs = []
    for ev in base.evs:
        arrival = ramp_s + rng.uniform(0, 120)
        evs.append(
            ev.model_copy(
                update={
                    "arrival_min": arrival / 60,
                    "departure_min": arrival / 60 + 360,
                    "initial_soc": 0.2,
                    "target_soc": 0.9,
                }
            )
        )
    return base.model_copy(update={"evs": evs})


async def provision(redis_url: str, scenario: Scenario, iterations: int) -> None:
    redis = connect_redis(redis_url)
    try:
        for st in scenario.stations:
            await provision_station(
                redis, Keys(), st.id, PASSWORD, site_id=scenario.site.id, iterations=iterations
            )
    finally:
        await redis.aclose()


async def wait_port(port: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            _r, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            await asyncio.sleep(0.2)
    raise RuntimeError(f"csms did not listen on {port} within {timeout_s}s")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    ocpp.messages.ASYNC_VALIDATION = False  # as `evfleet sim` does
    n = args.stations
    ramp_estimate_s = n / args.ramp_per_s if args.ramp_per_s > 0 else 0
    # simulated seconds the ramp will take, plus margin, before the EVs arrive
    scenario = bench_scenario(n, (ramp_estimate_s + 10) * args.speed, args.seed)
    redis = EmbeddedRedis().start()
    csms_proc: subprocess.Popen[bytes] | None = None
    try:
        t0 = time.monotonic()
        await provision(redis.url, scenario, args.iterations)
        provision_s = time.monotonic() - t0
        port = free_port()
        env = dict(
            os.environ,
            EVFLEET_API_ENABLED="false",
            EVFLEET_SMART_CHARGING="false",
            EVFLEET_HEARTBEAT_INTERVAL_S="300",
            EVFLEET_LOG_LEVEL="WARNING",
        )
        csms_log = open(Path(tempfile.gettempdir()) / "sim_fleet.csms.log", "wb")  # noqa: SIM115
        csms_proc = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("evfleet")),
                "csms",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--redis-url",
                redis.url,
                "--node-id",
                "bench-node",
            ],
            env=env,
            stdout=csms_log,
            stderr=subprocess.STDOUT,
        )
        await wait_port(port)
        clock = ScaledClock(scenario.start, speed=args.speed)
        runner = FleetRunner(
            scenario,
            clock,
            FleetConfig(
                f"ws://127.0.0.1:{port}/ocpp",
                password=PASSWORD,
                seed=0,  # reproducible runs (each run has its own embedded Redis)
                ramp_per_s=args.ramp_per_s,
                tick_real_s=args.tick,
                response_timeout_s=60,
                backoff_base_s=1.0,
                backoff_max_s=10.0,
            ),
        )
        rss_before = proc_rss_mb()
        run_task = asyncio.create_task(runner.run(timedelta(days=1)))
        loop = asyncio.get_running_loop()
        t_start = loop.time()
        while runner.all_connected_after_s is None:
            await asyncio.sleep(0.2)
            if loop.time() - t_start > args.ramp_timeout:
                break
        ramp_s = runner.all_connected_after_s
        stats_ramp = runner.stats()
        # wait until (nearly) every EV is plugged in, then measure a steady window
        deadline = t_start + args.ramp_timeout * 2
        while runner.stats().plugged < len(scenario.evs) * 0.98 and loop.time() < deadline:
            await asyncio.sleep(0.5)
        await asyncio.sleep(2.0)
        s0, c0, cc0, w0 = runner.stats(), proc_cpu_s(), proc_cpu_s(csms_proc.pid), loop.time()
        samples = []
        while loop.time() - w0 < args.steady:
            await asyncio.sleep(5.0)
            s = runner.stats()
            samples.append(
                {
                    "t_s": round(loop.time() - w0, 1),
                    "sent": s.sent,
                    "queued": s.queued,
                    "charging": s.charging,
                    "rss_mb": round(proc_rss_mb(), 1),
                }
            )
        s1, c1, cc1, w1 = runner.stats(), proc_cpu_s(), proc_cpu_s(csms_proc.pid), loop.time()
        window = w1 - w0
        result = {
            "stations": n,
            "evses": scenario.evse_count,
            "evs": len(scenario.evs),
            "speed": args.speed,
            "tick_real_s": args.tick,
            "ramp_per_s": args.ramp_per_s,
            "pbkdf2_iterations": args.iterations,
            "provision_s": round(provision_s, 1),
            "ramp_up_s": None if ramp_s is None else round(ramp_s, 2),
            "connected_at_ramp_end": stats_ramp.connected,
            "steady_window_s": round(window, 1),
            "messages_sent_per_s": round((s1.sent - s0.sent) / window, 1),
            "peak_sent_per_s_5s": round(
                max(
                    (b["sent"] - a["sent"]) / (b["t_s"] - a["t_s"])
                    for a, b in zip([{"t_s": 0.0, "sent": s0.sent}, *samples], samples, strict=False)
                ),
                1,
            )
            if samples
            else None,
            "frames_received_per_s": round((s1.received - s0.received) / window, 1),
            "errors_in_window": s1.errors - s0.errors,
            "queued_at_end": s1.queued,
            "queued_max": max((x["queued"] for x in samples), default=0),
            "charging": s1.charging,
            "plugged": s1.plugged,
            "power_kw": round(s1.power_kw, 1),
            "errors": s1.errors,
            "sim_rss_mb_before": round(rss_before, 1),
            "sim_rss_mb": round(proc_rss_mb(), 1),
            "sim_rss_kb_per_station": round((proc_rss_mb() - rss_before) * 1024 / n, 1),
            "sim_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "csms_rss_mb": round(proc_rss_mb(csms_proc.pid), 1),
            "sim_cpu_share": round((c1 - c0) / window, 2),
            "csms_cpu_share": round((cc1 - cc0) / window, 2),
            "load_avg_1m": os.getloadavg()[0],
            "samples": samples,
            "stats": asdict(s1) | {"sim_time": str(s1.sim_time)},
        }
        kinds: dict[str, int] = {}
        for station in runner.stations.values():
            if station.stats.errors:
                kind = station.stats.last_error.split(":")[0][:60]
                kinds[kind] = kinds.get(kind, 0) + station.stats.errors
        result["error_kinds"] = kinds
        runner.stop()
        await asyncio.wait_for(run_task, 60)
        return result
    finally:
        if csms_proc is not None:
            csms_proc.terminate()
            try:
                csms_proc.wait(20)
            except subprocess.TimeoutExpired:
                csms_proc.kill()
        redis.stop()


def main() -> None:
    """Parse arguments, run, print and save."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stations", type=int, default=2000)
    parser.add_argument("--speed", type=float, default=5.0, help="simulated seconds per real second")
    parser.add_argument("--steady", type=float, default=60.0, help="real seconds of steady-state measurement")
    parser.add_argument("--ramp-per-s", type=float, default=100.0)
    parser.add_argument("--tick", type=float, default=0.5, help="real seconds between simulation steps")
    parser.add_argument("--iterations", type=int, default=1000, help="PBKDF2 iterations of station passwords")
    parser.add_argument("--ramp-timeout", type=float, default=300.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "sim_fleet.json")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    import logging

    logging.basicConfig(level=logging.ERROR)
    result = asyncio.run(run(args))
    args.out.write_text(json.dumps(result, indent=1))
    width = max(len(k) for k in result)
    for key, value in result.items():
        if key not in ("samples", "stats", "error_kinds") or (key == "error_kinds" and value):
            print(f"{key:<{width}}  {value}")
    print(f"(JSON: {args.out})")


if __name__ == "__main__":
    main()
