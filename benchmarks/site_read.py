"""CPU of one whole-site read (`SmartChargingService.site_evses`: the store's `site_evses`, then
`decode_all`, as every fallback re-share and interim pass does) on a site of N stations with one
EVSE each, in a session, on a private redis-server (not a test).

    .venv/bin/python benchmarks/site_read.py [--stations 10000] [--repo PATH]

Every station is online, has a connector, an active transaction, an EVSE hash, an interim-share
applied-profile record (with its accepted TxProfile, as the csms stores it) and the EV's charging
needs: what each fallback re-share and interim pass of the load harness's one big site reads.
A read is timed 5 times on one service (this process's CPU, median; Redis's CPU is not counted;
the first read of a service decodes every record, the later ones find them unchanged), with the
young collections during each later read (the node's collector settings) and the container
objects it allocated net (`benchlib.GcCount`: what starts young collections). `--repo` runs
another checkout's code (e.g. the commit before) on the same data, as an A/B in one run.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import time

from benchlib import GcCount, use_checkout

SITE = "big"


def populate(url: str, n: int) -> None:
    """N stations of `SITE`, one EVSE each in a session with a profile record and needs."""
    import redis

    from evfleet.keys import Keys

    k, r = Keys("evfleet"), redis.Redis.from_url(url, decode_responses=True)
    t0 = 1_800_000_000.0
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        sid, ref = f"CP{i:05d}", f"CP{i:05d}:tx-{i}"
        pipe.sadd(k.stations(), sid)
        pipe.sadd(k.site_stations(SITE), sid)  # the site index, as provisioning writes it
        pipe.hset(k.station(sid), mapping={"site_id": SITE, "online": "1", "node": "csms-1", "vendor": "Sim",
                                           "model": "EVSE-22", "last_seen": "2027-01-15T08:00:00Z"})
        pipe.hset(k.station_connectors(sid), "1/1",
                  '{"status": "Occupied", "updated_at": "2027-01-15T08:00:00Z"}')
        pipe.hset(k.transaction(ref), mapping={"station_id": sid, "evse_id": "1", "energy_wh": "1200"})
        pipe.sadd(k.active_for(sid), ref)
        pipe.sadd(k.station_active(sid), ref)
        pipe.hset(k.station_evse(sid, 1), mapping={
            "max_power_w": "22000", "phases": "3", "voltage_v": "230", "tx_ref": ref,
            "transaction_id": f"tx-{i}", "default_limit_w": "0.0", "applied_limit_w": "4140.0",
            "metered_max_w": "4100.0"})
        payload = {"evseId": 1, "chargingProfile": {
            "id": 1000 + i, "stackLevel": 1, "chargingProfilePurpose": "TxProfile",
            "chargingProfileKind": "Absolute", "transactionId": f"tx-{i}",
            "chargingSchedule": [{
                "id": 1, "startSchedule": "2027-01-15T08:00:00Z", "chargingRateUnit": "A",
                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 6.0, "numberPhases": 3}]}]}}
        pipe.set(k.applied_profile(sid, 1), json.dumps({
            "tx_ref": ref, "kind": "interim", "plan_id": "interim-1800000000", "status": "Accepted",
            "sent_at": "2027-01-15T08:00:00+00:00", "answered_at": "2027-01-15T08:00:00.2+00:00",
            "limits_since": "2027-01-15T08:00:00+00:00", "limit_w": 4140.0,
            "applied_series_w": [[t0, 4140.0]], "accepted_profile": payload,
            "previous_series_w": [[t0 - 900, 0.0]]}))
        pipe.set(k.charging_needs(sid, 1), json.dumps({
            "tx_ref": ref, "requested_energy_transfer": "AC_three_phase",
            "departure_time": "2027-01-15T16:00:00Z", "energy_amount_wh": 30000, "ev_max_current_a": 32,
            "ev_min_current_a": 6, "ev_max_voltage_v": 400}))
        if len(pipe) > 5000:
            pipe.execute()
            pipe = r.pipeline(transaction=False)
    pipe.execute()
    r.close()


async def measure(url: str, n: int) -> None:
    """Time the whole-site reads, print the median."""
    from csms.settings import CsmsSettings
    from csms.smart_charging.service import SmartChargingService
    from csms.store.port_redis import RedisStateStore
    from evfleet.clock import RealClock
    from evfleet.keys import Keys
    from evfleet.store.client import connect_redis

    redis = connect_redis(url)
    svc = SmartChargingService(RedisStateStore(redis, Keys("evfleet")), RealClock(), CsmsSettings(),
                               "bench", None)  # type: ignore[arg-type]  # reads only, no calls
    times, young, alloc = [], [], []
    for i in range(5):
        if i == 1:  # the node's collector settings after its set-up (the first read decodes all)
            gc.collect()
            gc.freeze()
            gc.set_threshold(50_000, 20, 100)
        infos = None  # the last read's are garbage before the next (as a pass's when it ends)
        with GcCount() as watch:
            t = time.process_time()
            infos = await svc.site_evses(SITE)
            times.append(time.process_time() - t)
        young.append(watch.young)
        alloc.append(watch.allocated)
        assert len(infos) == n and all(i.tx_ref and i.record for i in infos.values())
    await redis.aclose()
    print(f"{n} stations: {sorted(times)[2] * 1000:.0f} ms CPU per whole-site read + decode "
          f"(median of 5; all: {', '.join(f'{x * 1000:.0f}' for x in times)}); later reads: young GCs "
          f"{', '.join(map(str, young[1:]))}, containers allocated net "
          f"{', '.join(f'{a:,}' for a in alloc[1:])}")


def main() -> None:
    """Parse the arguments, start Redis, populate and measure."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stations", type=int, default=10_000)
    p.add_argument("--repo", default=None, help="checkout whose code is measured (default: this one)")
    args = p.parse_args()
    use_checkout(args.repo)
    from csms.store.embedded import EmbeddedRedis

    with EmbeddedRedis() as server:
        populate(server.url, args.stations)
        asyncio.run(measure(server.url, args.stations))


if __name__ == "__main__":
    main()
