"""CPU, longest event-loop stretch, Redis commands and net containers of one whole-fleet load read
(`StateReader.site_loads`: the site-power history's sample every 30 s and every /metrics refresh do
it) with N live sessions, on a private redis-server (not a test).

    .venv/bin/python benchmarks/fleet_loads.py [--stations 20000] [--repo PATH]

Every station has one live session with a metered power; the stations are spread over a few sites.
A read is timed 5 times (this process's CPU, median; Redis's CPU and commands counted apart), with
the longest stretch the event loop was held (a task that yields in a loop notes the most CPU used
between two of its turns: preemption by other processes is not counted), Redis's commands by name,
and the young collections during the read under the node's collector settings (threshold 50,000)
with generation 0 half full when it starts (25,000 containers: where a node's count is on average
when a read starts; a read that holds a row per session meanwhile crosses the threshold and starts
a young collection that walks those rows). `--repo` runs another checkout's code (e.g. the commit
before) on the same data, as an A/B in one run.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time

from benchlib import GcCount, redis_cpu_s, use_checkout

SITES = 4


def populate(url: str, n: int) -> None:
    """N stations over `SITES` sites, each with a live session metering 7.2 kW."""
    import redis

    from evfleet.keys import Keys

    k, r = Keys("evfleet"), redis.Redis.from_url(url, decode_responses=True)
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        sid, ref, site = f"CP{i:05d}", f"CP{i:05d}:tx-{i}", f"site-{i % SITES}"
        pipe.sadd(k.sites(), site)
        pipe.sadd(k.stations(), sid)
        pipe.sadd(k.site_stations(site), sid)
        pipe.hset(k.station(sid), mapping={"site_id": site, "online": "1"})
        pipe.hset(k.transaction(ref), mapping={"station_id": sid, "evse_id": "1", "power_w": "7200.0"})
        pipe.sadd(k.active_for(sid), ref)
        pipe.sadd(k.station_active(sid), ref)
        if len(pipe) > 5000:
            pipe.execute()
            pipe = r.pipeline(transaction=False)
    pipe.execute()
    r.close()


async def measure(url: str, n: int) -> None:
    """Time the reads, print the median and the worst stretch."""
    import redis as sync_redis

    from csms.api.reader import StateReader
    from evfleet.clock import RealClock
    from evfleet.keys import Keys
    from evfleet.store.client import connect_redis

    redis, info = connect_redis(url), sync_redis.Redis.from_url(url)
    reader = StateReader(redis, Keys("evfleet"), RealClock())
    site_of = await reader.all_station_sites()
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)  # the node's collector settings after its set-up
    gap = [0.0]

    async def ticker() -> None:
        last = time.thread_time()
        while True:
            await asyncio.sleep(0)
            now = time.thread_time()
            gap[0], last = max(gap[0], now - last), now

    rows = []
    for _ in range(5):
        gap[0] = 0.0
        tick = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        cmds0, rcpu0 = commands(info), redis_cpu_s(info)
        gc.collect(0)
        half_full = [[] for _ in range(25_000 - gc.get_count()[0])]
        with GcCount() as watch:
            t = time.process_time()
            loads = await reader.site_loads(site_of)
            cpu = time.process_time() - t
        cmds1 = commands(info)
        cmds = {c: v - cmds0.get(c, 0) for c, v in cmds1.items() if v - cmds0.get(c, 0) and c != "info"}
        rows.append((cpu, gap[0], cmds, redis_cpu_s(info) - rcpu0, watch.young, watch.allocated))
        del half_full
        tick.cancel()
        assert sum(c for _, c in loads.values()) == n, loads
        del loads
    await redis.aclose()
    rows.sort(key=lambda r: r[0])
    cpu, stretch, cmds, rcpu, young, alloc = rows[2]
    print(f"{n} live sessions: {cpu * 1000:.0f} ms CPU per site_loads (median of 5: "
          f"{', '.join(f'{r[0] * 1000:.0f}' for r in rows)}); longest loop stretch (CPU) "
          f"{max(r[1] for r in rows) * 1000:.1f} ms (median run {stretch * 1000:.1f}); Redis {cmds} "
          f"commands, {rcpu * 1000:.0f} ms CPU; young GCs {', '.join(str(r[4]) for r in rows)}; "
          f"containers allocated net {alloc:,}")


def commands(info: object) -> dict[str, int]:
    """Redis's calls so far by command (`INFO commandstats`; a script's own calls counted too)."""
    stats = info.info("commandstats")  # type: ignore[attr-defined]
    return {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}


def main() -> None:
    """Parse the arguments, start Redis, populate and measure."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stations", type=int, default=20_000)
    p.add_argument("--repo", default=None, help="checkout whose code is measured (default: this one)")
    args = p.parse_args()
    use_checkout(args.repo)
    from csms.store.embedded import EmbeddedRedis

    with EmbeddedRedis() as server:
        populate(server.url, args.stations)
        asyncio.run(measure(server.url, args.stations))


if __name__ == "__main__":
    main()
