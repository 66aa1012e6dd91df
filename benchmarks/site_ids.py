"""CPU of finding a site's stations (`evfleet.store.sites.site_station_ids`, what every site pass of
the csms and every optimizer read of a site starts with), for S sites of N stations on a private
redis-server (not a test).

    .venv/bin/python benchmarks/site_ids.py [--sites 100] [--site-size 50] [--rounds 5] [--repo PATH]

The stations are written as provisioning writes them (station hash with `site_id`, the `stations`
registry, the site's index). One round reads every site once, as 100 sites' passes do in a second;
printed: this process's CPU and redis-server's CPU (INFO cpu) per site read, median of the rounds
after a first (warm-up) round. `--repo` runs another checkout's code on the same data (A/B).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from pathlib import Path

from benchlib import redis_cpu_s, use_checkout


def populate(url: str, sites: int, size: int) -> None:
    """`sites` sites of `size` stations each."""
    import redis

    from evfleet.keys import Keys

    k, r = Keys("evfleet"), redis.Redis.from_url(url, decode_responses=True)
    pipe = r.pipeline(transaction=False)
    for i in range(sites * size):
        sid, site = f"CP{i:05d}", f"site-{i // size:03d}"
        pipe.sadd(k.stations(), sid)
        pipe.sadd(k.site_stations(site), sid)
        pipe.hset(k.station(sid), mapping={"site_id": site, "online": "1", "node": "csms-1", "vendor": "Sim"})
    pipe.execute()
    r.close()


async def measure(url: str, sites: int, rounds: int) -> dict[str, float]:
    """CPU per site read, here and in redis-server (median of the rounds after the first)."""
    import redis

    from evfleet.keys import Keys
    from evfleet.store.client import connect_redis
    from evfleet.store.sites import site_station_ids

    k, client, sync = Keys("evfleet"), connect_redis(url), redis.Redis.from_url(url)
    here, there = [], []
    for _ in range(rounds + 1):
        cpu0, r0 = time.process_time(), redis_cpu_s(sync)
        for s in range(sites):
            ids = await site_station_ids(client, k, f"site-{s:03d}")
            assert ids, "a site without stations"
        here.append((time.process_time() - cpu0) / sites * 1e6)
        there.append((redis_cpu_s(sync) - r0) / sites * 1e6)
    await client.aclose()
    sync.close()
    return {"client_us_per_site": statistics.median(here[1:]),
            "redis_us_per_site": statistics.median(there[1:])}


def main() -> None:
    """Populate, then measure with this checkout's code or `--repo`'s."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sites", type=int, default=100)
    p.add_argument("--site-size", type=int, default=50)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1])
    p.add_argument("--url", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    use_checkout(args.repo)
    if args.url:
        print(json.dumps(asyncio.run(measure(args.url, args.sites, args.rounds))))
        return
    from csms.store.embedded import EmbeddedRedis

    with EmbeddedRedis() as server:
        populate(server.url, args.sites, args.site_size)
        out = asyncio.run(measure(server.url, args.sites, args.rounds))
        print(json.dumps({"repo": str(args.repo), "sites": args.sites, "site_size": args.site_size, **out,
                          "load": os.getloadavg()[0]}))


if __name__ == "__main__":
    main()
