"""Benchmark: the closed loop at fleet scale: N ISO 15118 (modelled HLC) stations, one csms, one worker.

    .venv/bin/python benchmarks/loop_fleet.py [--stations 500] [--limit-share 0.4] [--window 60]

Starts a private redis-server, `evfleet csms` (smart charging on, API off) and `evfleet optimizer`
as separate processes, provisions N random stations (evse_sim `random_fleet`, every EV speaks
modelled ISO 15118) on one site whose limit is `--limit-share` of the installed EVSE power, then
runs the fleet in real time (speed 1, so the csms, the worker and the stations share one clock),
split over `--sim-procs` processes (default 2: one process saturates at about 1,000 stations on
this machine, and then the stations' own lag, not the csms, sets the latencies). Every EV
plugs in within a minute after the ramp-up. It measures, from the event stream and Redis:

- latency from each `tx.started` to the first accepted plan-based TxProfile of the session
  (p50 / p95 / max), and to any accepted profile (interim or plan);
- latency from each session's NotifyEVChargingNeeds (stored) to the next TxProfile its station
  accepted (p50 / p95; repeated needs are not counted), and to the next one above 0 W;
- the default-profile wave at fleet start: defaults answered, and how many after the first needs;
- worker: plans written, solve seconds (last, max), status;
- csms: SetChargingProfile calls, answers, interim profiles, K16 skips;
- the highest sum over EVSEs of the limits the csms had applied (sampled every 0.5 s) against the
  site limit;
- CPU seconds of the csms and worker processes over the window, and of the fleet processes.

Prints a table and writes JSON (``--out``, default benchmarks/results/loop_fleet.json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import ocpp.messages  # noqa: E402
from benchlib import pct as nearest_rank  # noqa: E402
from benchlib import proc_cpu_s  # noqa: E402

from csms.store.embedded import EmbeddedRedis, free_port  # noqa: E402
from csms.store.provisioning import provision_station  # noqa: E402
from evfleet.clock import ClockSpec, ScaledClock  # noqa: E402
from evfleet.keys import Keys  # noqa: E402
from evfleet.store.client import connect_redis  # noqa: E402
from evse_sim.fleet import FleetConfig, FleetRunner  # noqa: E402
from evse_sim.scenarios import Scenario, random_fleet  # noqa: E402

PASSWORD = "bench-password-1"
K = Keys()


def scenario(n: int, arrive_after_s: float, seed: int) -> Scenario:
    """Random stations; every EV speaks ISO 15118, arrives within a minute after the ramp, stays 6 h."""
    base = random_fleet(n, seed=seed, hlc_share=1.0, start=datetime.now(UTC))
    rng = random.Random(seed)
    evs = []
    for ev in base.evs:
        arrival = arrive_after_s + rng.uniform(0, 60)
        evs.append(ev.model_copy(update={"arrival_min": arrival / 60, "departure_min": arrival / 60 + 360,
                                         "hlc": True}))
    return base.model_copy(update={"evs": evs})


def _fleet_part(scenario_json: str, url: str, ramp_per_s: float, spec: dict[str, str],
                stop: Any, cpu: Any) -> None:
    """One fleet process: its share of the stations, on the shared clock, until `stop` is set."""
    ocpp.messages.ASYNC_VALIDATION = False
    import logging

    logging.basicConfig(level=logging.ERROR)
    scen = Scenario.model_validate_json(scenario_json)
    clock = ScaledClock.from_spec(ClockSpec.from_dict(spec))

    async def main() -> None:
        runner = FleetRunner(scen, clock, FleetConfig(
            url, password=PASSWORD, ramp_per_s=ramp_per_s, tick_real_s=1.0,
            response_timeout_s=60, backoff_base_s=1.0, backoff_max_s=10.0, seed=0))
        task = asyncio.create_task(runner.run(timedelta(days=1)))
        while not stop.is_set() and not task.done():
            await asyncio.sleep(0.5)
        runner.stop()
        await asyncio.wait_for(task, 60)

    asyncio.run(main())
    cpu.value = time.process_time()


class Fleet:
    """The simulated stations, split over `procs` processes (1,000 devices are not one CPU: a
    fleet in one process saturates it at 1,000 stations and its answers, not the csms's, set
    the latency). The stations are dealt round robin, each process ramps at its share of the rate."""

    def __init__(self, scen: Scenario, clock: ScaledClock, url: str, ramp_per_s: float, procs: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.stop_event = ctx.Event()
        self.procs = []
        self.cpus = []
        for k in range(procs):
            stations = scen.stations[k::procs]
            ids = {st.id for st in stations}
            part = scen.model_copy(update={"stations": stations,
                                           "evs": [ev for ev in scen.evs if ev.station in ids]})
            cpu = ctx.Value("d", 0.0)
            proc = ctx.Process(target=_fleet_part, args=(part.model_dump_json(), url, ramp_per_s / procs,
                                                         clock.spec().to_dict(), self.stop_event, cpu))
            proc.start()
            self.procs.append(proc)
            self.cpus.append(cpu)

    def stop(self) -> float:
        """Stop every part; their CPU seconds in all."""
        self.stop_event.set()
        for proc in self.procs:
            proc.join(90)
            if proc.is_alive():
                proc.kill()
        return round(sum(c.value for c in self.cpus), 1)


def start_fleet(scen: Scenario, clock: ScaledClock, url: str, ramp_per_s: float, procs: int) -> Fleet:
    """Start the simulated fleet (see `Fleet`)."""
    return Fleet(scen, clock, url, ramp_per_s, max(1, procs))


def pct(values: list[float], q: float) -> float | None:
    """q-quantile (0..1) rounded to ms, or None."""
    return round(nearest_rank(values, q), 3) if values else None


async def applied_sum_w(redis: Any, pairs: list[tuple[str, int]], now_s: float) -> float:
    """Sum of the limits in force now of every applied profile record."""
    pipe = redis.pipeline(transaction=False)
    for sid, eid in pairs:
        pipe.get(K.applied_profile(sid, eid))
    total = 0.0
    for raw in await pipe.execute():
        if not raw:
            continue
        series = json.loads(raw).get("applied_series_w") or []
        if not series:
            continue
        current = series[0][1]
        for t, w in series:
            if t > now_s:
                break
            current = w
        total += current
    return total


def first_after(since: dict[str, datetime], at: dict[str, list[datetime]]) -> list[float]:
    """Per session: seconds from `since` to its first time in `at` at or after it (answered ones)."""
    return [min((a - s).total_seconds() for a in at[t] if a >= s)
            for t, s in since.items() if any(a >= s for a in at.get(t, []))]


def boot_wave(events: list[Any], needs_at: dict[str, datetime]) -> dict[str, Any]:
    """When the default-profile wave (TxDefaultProfiles at fleet start) ended, against the first
    charging needs: seconds from the first needs to the last default answered (negative: done
    before), and how many defaults were still answered after the first needs."""
    defaults = [datetime.fromisoformat(f["ts"]) for _id, f in events if f["type"] == "profile.answered"
                and json.loads(f.get("data") or "{}").get("kind") == "default"]
    if not defaults or not needs_at:
        return {"defaults_answered": len(defaults)}
    first_needs = min(needs_at.values())
    return {"defaults_answered": len(defaults),
            "defaults_after_first_needs": sum(1 for t in defaults if t > first_needs),
            "last_default_after_first_needs_s": round((max(defaults) - first_needs).total_seconds(), 2)}


def needs_tail(events: list[Any], needs_at: dict[str, datetime]) -> dict[str, Any]:
    """Where the needs -> accepted latency goes: per session, the first profile sent at or after
    its needs (csms side: queueing before the send) and the answer to that profile (station side),
    and, for the slowest 5 %, the kinds of those first profiles."""
    sent: dict[str, list[tuple[datetime, str, str]]] = {}
    answered: dict[tuple[str, str], datetime] = {}
    for _id, f in events:
        if f["type"] not in ("profile.sent", "profile.answered") or not f.get("tx_ref"):
            continue
        d = json.loads(f.get("data") or "{}")
        ts = datetime.fromisoformat(f["ts"])
        if f["type"] == "profile.sent":
            sent.setdefault(f["tx_ref"], []).append((ts, str(d.get("kind", "")), str(d.get("plan_id", ""))))
        elif d.get("status") == "Accepted":
            answered.setdefault((f["tx_ref"], str(d.get("plan_id", ""))), ts)
    to_sent, to_answer, rows = [], [], []
    for ref, t0 in needs_at.items():
        after = [x for x in sent.get(ref, []) if x[0] >= t0]
        if not after:
            continue
        ts, kind, plan_id = after[0]
        to_sent.append((ts - t0).total_seconds())
        ans = answered.get((ref, plan_id))
        if ans is not None:
            to_answer.append((ans - ts).total_seconds())
        rows.append(((ts - t0).total_seconds(), kind))
    rows.sort()
    slow = rows[int(0.95 * len(rows)):] if rows else []
    kinds: dict[str, int] = {}
    for _lat, kind in slow:
        kinds[kind] = kinds.get(kind, 0) + 1
    return {"needs_to_first_sent_s_p50": pct(to_sent, 0.5), "needs_to_first_sent_s_p95": pct(to_sent, 0.95),
            "first_sent_to_accepted_s_p50": pct(to_answer, 0.5),
            "first_sent_to_accepted_s_p95": pct(to_answer, 0.95),
            "slowest_5pct_first_kind": kinds}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    ocpp.messages.ASYNC_VALIDATION = False
    n = args.stations
    ramp_s = n / args.ramp_per_s + 5
    scen = scenario(n, ramp_s, args.seed)
    site_id = scen.site.id
    evse_kw = sum(e.max_power_kw for s in scen.stations for e in s.evses)
    limit_kw = round(evse_kw * args.limit_share, 1)
    pairs = [(s.id, i + 1) for s in scen.stations for i in range(len(s.evses))]
    redis_server = EmbeddedRedis().start()
    procs: list[subprocess.Popen[bytes]] = []
    redis = connect_redis(redis_server.url)
    try:
        for st in scen.stations:
            await provision_station(redis, K, st.id, PASSWORD, site_id=site_id, iterations=1000)
        for st in scen.stations:  # EVSE facts (what a NotifyReport would give)
            for i, e in enumerate(st.evses, start=1):
                await redis.hset(K.station_evse(st.id, i), mapping={
                    "max_power_w": str(e.max_power_kw * 1000), "phases": str(e.phases),
                    "rate_unit": "A" if e.kind == "AC" else "W"})
        await redis.hset(K.site(site_id), mapping={"limit_kw": str(limit_kw)})
        await redis.sadd(K.sites(), site_id)
        port = free_port()
        env = dict(os.environ, EVFLEET_API_ENABLED="false", EVFLEET_SMART_CHARGING="true",
                   EVFLEET_HEARTBEAT_INTERVAL_S="300", EVFLEET_LOG_LEVEL=args.log_level,
                   EVFLEET_INTERIM_PROFILE_AFTER_S=str(args.interim_s))
        exe = str(Path(sys.executable).with_name("evfleet"))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        log = open(args.out.with_suffix(".log"), "wb")  # noqa: SIM115
        procs.append(subprocess.Popen([exe, "csms", "--host", "127.0.0.1", "--port", str(port),
                                       "--redis-url", redis_server.url, "--node-id", "bench-node"],
                                      env=env, stdout=log, stderr=subprocess.STDOUT))
        procs.append(subprocess.Popen([exe, "optimizer", "--redis-url", redis_server.url,
                                       "--log-level", "WARNING", "--debounce-s", str(args.debounce_s)],
                                      env=env, stdout=log, stderr=subprocess.STDOUT))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                _r, w = await asyncio.open_connection("127.0.0.1", port)
                w.close()
                break
            except OSError:
                await asyncio.sleep(0.2)
        clock = ScaledClock(datetime.now(UTC), speed=1.0)
        await redis.hset(K.clock(), mapping=clock.spec().to_dict())
        fleet = start_fleet(scen, clock, f"ws://127.0.0.1:{port}/ocpp", args.ramp_per_s, args.sim_procs)
        fleet_at = clock.now()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        cpu0 = [proc_cpu_s(p.pid) for p in procs]
        max_sum = 0.0
        samples = 0
        while loop.time() - t0 < ramp_s + 60 + args.window:
            await asyncio.sleep(0.5)
            max_sum = max(max_sum, await applied_sum_w(redis, pairs, clock.timestamp()))
            samples += 1
        cpu1 = [proc_cpu_s(p.pid) for p in procs]
        elapsed = loop.time() - t0
        fleet_cpu_s = fleet.stop()
        events = await redis.xrange(K.events())
        started: dict[str, datetime] = {}
        first_any: dict[str, datetime] = {}
        first_plan: dict[str, datetime] = {}
        needs_at: dict[str, datetime] = {}
        accepted_at: dict[str, list[datetime]] = {}
        powered_at: dict[str, list[datetime]] = {}
        counts: dict[str, int] = {}
        plans: list[dict[str, Any]] = []
        for _id, f in events:
            t, txid, ts = f["type"], f.get("tx_ref", ""), datetime.fromisoformat(f["ts"])
            counts[t] = counts.get(t, 0) + 1
            data = json.loads(f.get("data") or "{}")
            if t == "tx.started":
                started.setdefault(txid, ts)
            elif t == "ev.charging_needs" and data.get("status") not in ("Rejected", "Repeated"):
                needs_at.setdefault(txid, ts)
            elif t == "profile.answered" and data.get("status") == "Accepted":
                accepted_at.setdefault(txid, []).append(ts)
                if float(data.get("limit_w") or 0.0) > 0.0:
                    powered_at.setdefault(txid, []).append(ts)
                first_any.setdefault(txid, ts)
                if str(data.get("kind", "")).startswith("plan"):
                    first_plan.setdefault(txid, ts)
            elif t == "schedule.planned" and f.get("site_id") == site_id:
                plans.append(data)
        lat_plan = [(first_plan[t] - s).total_seconds() for t, s in started.items() if t in first_plan]
        lat_any = [(first_any[t] - s).total_seconds() for t, s in started.items() if t in first_any]
        # NotifyEVChargingNeeds stored -> the next TxProfile the station accepted (issue 12's first answer)
        lat_needs = first_after(needs_at, accepted_at)
        tail = needs_tail(events, needs_at)
        lat_powered = first_after(needs_at, powered_at)  # the first that lets the EV charge now
        kinds: dict[str, int] = {}
        answers: dict[str, int] = {}
        for _id, f in events:
            if f["type"] == "profile.sent":
                k = json.loads(f["data"]).get("kind", "")
                kinds[k] = kinds.get(k, 0) + 1
            elif f["type"] == "profile.answered":
                d = json.loads(f["data"])
                key = f"{d.get('kind', '')}:{d.get('status')}"
                answers[key] = answers.get(key, 0) + 1
        wave = boot_wave(events, needs_at)
        skipped = 0
        for txid in started:
            skipped += int(await redis.hget(K.session_loop(txid), "replans_skipped") or 0)
        solve = [float(p.get("solve_s", 0)) for p in plans]
        return {
            "stations": n, "evses": len(pairs), "sessions_started": len(started),
            "site_limit_kw": limit_kw, "installed_kw": round(evse_kw, 1),
            "max_applied_sum_kw": round(max_sum / 1000, 2), "applied_samples": samples,
            "within_site_limit": max_sum <= limit_kw * 1000 + 1,
            "sessions_with_plan_profile": len(lat_plan),
            "plug_to_plan_profile_s_p50": pct(lat_plan, 0.5),
            "plug_to_plan_profile_s_p95": pct(lat_plan, 0.95),
            "plug_to_plan_profile_s_max": pct(lat_plan, 1.0),
            "plug_to_any_profile_s_p50": pct(lat_any, 0.5), "plug_to_any_profile_s_p95": pct(lat_any, 0.95),
            "needs_to_profile_accepted_s_p50": pct(lat_needs, 0.5),
            "needs_to_profile_accepted_s_p95": pct(lat_needs, 0.95),
            "needs_sessions_answered": len(lat_needs), "needs_sessions": len(needs_at),
            "needs_to_powered_profile_s_p50": pct(lat_powered, 0.5),
            "needs_to_powered_profile_s_p95": pct(lat_powered, 0.95),
            "needs_sessions_powered": len(lat_powered),
            "plans": len(plans), "plan_status": sorted({str(p.get("status")) for p in plans}),
            "solve_s_median": round(statistics.median(solve), 3) if solve else None,
            "solve_s_max": round(max(solve), 3) if solve else None,
            "profiles_sent": counts.get("profile.sent", 0), "profiles_by_kind": kinds,
            "profile_answers": counts.get("profile.answered", 0), "answers_by_kind": answers,
            **tail, **wave, "k16_skipped": skipped,
            "needs_events": counts.get("ev.charging_needs", 0),
            "stream_events": len(events), "stream_first_ts": events[0][1]["ts"] if events else None,
            "fleet_started_at": fleet_at.isoformat(),
            "elapsed_s": round(elapsed, 1),
            "csms_cpu_s": round(cpu1[0] - cpu0[0], 1), "worker_cpu_s": round(cpu1[1] - cpu0[1], 1),
            "fleet_procs": args.sim_procs, "fleet_cpu_s": fleet_cpu_s,
        }
    finally:
        for p in procs:
            p.terminate()
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        await redis.aclose()
        redis_server.stop()


def main() -> None:
    """Parse arguments, run, print and save."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stations", type=int, default=500)
    parser.add_argument("--limit-share", type=float, default=0.4, help="site limit / installed EVSE power")
    parser.add_argument("--window", type=float, default=60.0,
                        help="real seconds after every EV is plugged in")
    parser.add_argument("--ramp-per-s", type=float, default=50.0)
    parser.add_argument("--interim-s", type=float, default=5.0)
    parser.add_argument("--debounce-s", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--log-level", default="WARNING", help="of the csms (its log: --out with .log)")
    parser.add_argument("--sim-procs", type=int, default=2,
                        help="processes the simulated stations are split over (1 = all in this one)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "loop_fleet.json")
    args = parser.parse_args()
    args.sim_procs = max(1, min(args.sim_procs, args.stations))  # no fleet process without a station
    import logging

    logging.basicConfig(level=logging.ERROR)
    result = asyncio.run(run(args))
    args.out.write_text(json.dumps(result, indent=1))
    width = max(len(k) for k in result)
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")
    print(f"(JSON: {args.out})")


if __name__ == "__main__":
    main()
