"""CPU of the optimizer worker per site: `read_site` alone, and a whole plan (`solve_site`: read, solve,
write), on the production topology's data (N stations in sites of S, half of them in a session) on a
private redis-server (not a test).

    .venv/bin/python benchmarks/worker_read.py [--stations 5000] [--site-size 50] [--repo PATH]

Every station is online with one EVSE (connector, EVSE hash); every other one has a running
transaction with its loop hash, an accepted applied-profile record (with its TxProfile, as the csms
stores it) and, one in three, the EV's charging needs; each driver has 10 past sessions. Every site
is read once (a warm-up), then read and planned `--rounds` times; printed: this process's CPU per
read and per plan (median over sites and rounds; Redis's CPU is not counted) and `uptime`'s load.
`--repo` runs another checkout's code on the same data (an A/B: run it once per checkout).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from datetime import UTC, datetime, timedelta

from benchlib import use_checkout


def populate(url: str, n: int, site_size: int, now: datetime) -> list[str]:
    """N stations in sites of `site_size` (as `csms.store.provisioning` does it); returns the sites."""
    import redis

    from evfleet.keys import Keys, tx_ref

    k, r = Keys("evfleet"), redis.Redis.from_url(url, decode_responses=True)
    sites: list[str] = []
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        sid, site = f"L{i:05d}", f"S{i // site_size:04d}"
        if not sites or sites[-1] != site:
            sites.append(site)
            pipe.sadd(k.sites(), site)
            pipe.hset(k.site(site), mapping={"name": site, "limit_kw": str(3.0 * site_size)})
        pipe.sadd(k.stations(), sid)
        pipe.sadd(k.site_stations(site), sid)
        pipe.hset(k.station(sid), mapping={"site_id": site, "online": "1", "node": "csms-1",
                                           "last_boot": "2026-01-01T00:00:00+00:00"})
        pipe.hset(k.station_connectors(sid), "1/1", '{"status": "Occupied"}')
        evse = {"max_power_w": "11040", "phases": "3", "voltage_v": "230", "default_limit_w": "0.0"}
        if i % 2 == 0:
            tx, ref, token = f"tx-{i}", tx_ref(sid, f"tx-{i}"), f"T{i:05d}"
            started = now - timedelta(minutes=i % 300)
            evse |= {"tx_ref": ref, "transaction_id": tx, "applied_limit_w": "4140.0",
                     "metered_max_w": "4100.0"}
            pipe.sadd(k.active_for(sid), ref)
            pipe.sadd(k.station_active(sid), ref)
            pipe.hset(k.transaction(ref), mapping={
                "station_id": sid, "transaction_id": tx, "evse_id": "1", "state": "Updated",
                "id_token": token, "started_at": started.isoformat(), "updated_at": now.isoformat(),
                "energy_wh": str(500 * (i % 40)), "power_w": "4100", "charging_state": "Charging"})
            pipe.hset(k.session_loop(ref), mapping={"energy_at_needs_wh": "0", "profiles_sent": "3"})
            payload = {"evseId": 1, "chargingProfile": {
                "id": 1000 + i, "stackLevel": 1, "chargingProfilePurpose": "TxProfile",
                "chargingProfileKind": "Absolute", "transactionId": tx, "chargingSchedule": [{
                    "id": 1, "startSchedule": now.isoformat(), "chargingRateUnit": "A",
                    "chargingSchedulePeriod": [{"startPeriod": 900 * j, "limit": 6.0 + j % 10,
                                                "numberPhases": 3} for j in range(24)]}]}}
            t0 = now.timestamp()
            pipe.set(k.applied_profile(sid, 1), json.dumps({
                "tx_ref": ref, "kind": "plan", "plan_id": "p-1", "status": "Accepted",
                "sent_at": now.isoformat(), "answered_at": now.isoformat(), "limits_since": now.isoformat(),
                "limit_w": 4140.0, "applied_series_w": [[t0 + 900 * j, 4140.0 + j] for j in range(24)],
                "accepted_profile": payload}))
            if i % 3 == 0:
                pipe.set(k.charging_needs(sid, 1), json.dumps({
                    "tx_ref": ref, "departure_time": (now + timedelta(hours=4 + i % 8)).isoformat(),
                    "energy_amount_wh": 8_000 + 500 * (i % 40), "ev_max_current_a": 16}))
            for j in range(10):
                pipe.lpush(k.energy_history(token), json.dumps({
                    "ended_at": (now - timedelta(days=j + 1)).isoformat(), "weekday": j % 7,
                    "energy_kwh": 10.0 + j}))
        pipe.hset(k.station_evse(sid, 1), mapping=evse)
        if len(pipe) > 5000:
            pipe.execute()
            pipe = r.pipeline(transaction=False)
    pipe.execute()
    r.close()
    return sites


async def measure(url: str, sites: list[str], rounds: int) -> None:
    """Read and plan every site `rounds` times; print the medians."""
    from evfleet.clock import RealClock
    from evfleet.keys import Keys
    from evfleet.store.client import connect_redis
    from optimizer.site_reader import read_site
    from optimizer.worker import OptimizerWorker, WorkerConfig

    redis, keys = connect_redis(url), Keys("evfleet")
    worker = OptimizerWorker(redis, keys, WorkerConfig(), clock=RealClock())
    for site in sites:  # warm-up: first plans (no previous plan), first reads
        await worker.solve_site(site)
    reads, plans, evs = [], [], []
    for _ in range(rounds):
        for site in sites:
            t = time.process_time()
            state = await read_site(redis, keys, site, datetime.now(UTC))
            reads.append(time.process_time() - t)
            evs.append(len(state.sessions))
            t = time.process_time()
            plan = await worker.solve_site(site)
            plans.append(time.process_time() - t)
            assert plan is not None and len(plan["evses"]) == len(state.sessions), plan and plan["status"]
    await redis.aclose()
    print(f"{len(sites)} sites, {statistics.fmean(evs):.1f} sessions each: CPU per read_site "
          f"{statistics.median(reads) * 1000:.2f} ms, per plan (solve_site: read, solve, write) "
          f"{statistics.median(plans) * 1000:.2f} ms (medians of {len(reads)}); "
          f"load {os.getloadavg()[0]:.2f}")


def main() -> None:
    """Parse the arguments, start Redis, populate and measure."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stations", type=int, default=5000)
    p.add_argument("--site-size", type=int, default=50)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--repo", default=None, help="checkout whose code is measured (default: this one)")
    args = p.parse_args()
    use_checkout(args.repo)
    from csms.store.embedded import EmbeddedRedis

    with EmbeddedRedis() as server:
        sites = populate(server.url, args.stations, args.site_size, datetime.now(UTC))
        asyncio.run(measure(server.url, sites, args.rounds))


if __name__ == "__main__":
    main()
