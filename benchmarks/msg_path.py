"""Benchmark: the CPU one station message costs a node, in one process, without WebSockets (not a test).

    .venv/bin/python benchmarks/msg_path.py --stations 200 --rounds 30
    .venv/bin/python benchmarks/msg_path.py --profile /tmp/msg.prof   # cProfile, CPU-time clock

Starts a private Redis and feeds the realistic mix of `benchmarks/load_stations.py` (per station:
TransactionEvent, MeterValues, TransactionEvent, Heartbeat, TransactionEvent, MeterValues; a
transaction of `--tx-events` events with meter values) straight into `StationHandler.route_message`
of `--stations` handlers on fake connections, `--concurrency` stations at a time. Prints the CPU
microseconds per message of this process (parse, validation, handler, redis-py, answer
serialisation: the node's per-message path less the WebSocket and socket layers) and of the Redis
server, over the mix. The process's CPU time does not count the time it waits, so
the figures hold on a loaded machine better than latency does (cache contention still shows).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from benchlib import redis_cpu_s  # noqa: E402
from load_stations import DEFAULT_MIX, Charger  # noqa: E402


class FakeConnection:
    """What `StationConnection` uses of a WebSocket connection: `send` (answers counted)."""

    def __init__(self) -> None:
        self.sent = 0

    async def send(self, message: str) -> None:
        """Count an answer (a CALLERROR would be a benchmark bug)."""
        if message.startswith("[4"):
            raise RuntimeError(f"CALLERROR: {message}")
        self.sent += 1


async def _run(args: argparse.Namespace, url: str) -> dict[str, Any]:
    import redis as sync_redis

    from csms.protocol.env import NodeEnv
    from csms.protocol.framing import warm_up
    from csms.protocol.station import StationHandler
    from csms.settings import CsmsSettings
    from csms.store.state import StateStore
    from evfleet.clock import RealClock
    from evfleet.keys import Keys
    from evfleet.store.client import connect_redis

    warm_up()
    redis = connect_redis(url)
    keys, clock = Keys(), RealClock()
    store = StateStore(redis, keys, clock, "bench")
    try:  # as `csms.app` builds it (the lean client exists from this benchmark's commit on)
        from evfleet.store.lean import LeanRedis

        if not args.redis_py:
            store = StateStore(redis, keys, clock, "bench", fast=LeanRedis.from_url(url))
    except ImportError:
        pass
    env = NodeEnv(settings=CsmsSettings(redis_url=url, rate_limit_per_s=1000, rate_limit_burst=1000),
                  clock=clock, keys=keys, store=store, node_id="bench")
    handlers = [StationHandler(f"S{i:05d}", FakeConnection(), env, "default")  # type: ignore[arg-type]
                for i in range(args.stations)]
    chargers = [Charger(h.id, list(DEFAULT_MIX), args.tx_events) for h in handlers]
    for c in chargers:
        c.step = 0
    count: dict[str, int] = {}
    seq = 0

    async def one(h: StationHandler, c: Charger) -> None:
        nonlocal seq
        action, payload = c.next()
        seq += 1
        frame = json.dumps([2, f"m{seq}", action, payload])
        await h.route_message(frame)
        count[action] = count.get(action, 0) + 1

    sync = sync_redis.Redis.from_url(url)
    for _ in range(args.warmup):
        await asyncio.gather(*(one(h, c) for h, c in zip(handlers, chargers, strict=True)))
    count.clear()
    profile = cProfile.Profile(time.process_time) if args.profile else None
    r0, t0 = redis_cpu_s(sync), time.process_time()
    if profile:
        profile.enable()
    sem = asyncio.Semaphore(args.concurrency)

    async def limited(h: StationHandler, c: Charger) -> None:
        async with sem:
            await one(h, c)

    for _ in range(args.rounds):
        await asyncio.gather(*(limited(h, c) for h, c in zip(handlers, chargers, strict=True)))
    if profile:
        profile.disable()
        profile.dump_stats(str(args.profile))
    total_cpu, redis_cpu = time.process_time() - t0, redis_cpu_s(sync) - r0
    n = sum(count.values())
    await redis.aclose()
    return {"messages": n, "node_us_per_msg": 1e6 * total_cpu / n, "redis_us_per_msg": 1e6 * redis_cpu / n,
            "by_action": {a: count[a] for a in sorted(count)}}


def main() -> None:
    """Run the benchmark and print CPU microseconds per message."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stations", type=int, default=200)
    p.add_argument("--rounds", type=int, default=30, help="messages per station in the measured part")
    p.add_argument("--warmup", type=int, default=6, help="messages per station before it")
    p.add_argument("--concurrency", type=int, default=20, help="stations in flight at once")
    p.add_argument("--tx-events", type=int, default=6)
    p.add_argument("--repeat", type=int, default=1, help="runs (fresh Redis each); the median is printed")
    p.add_argument("--profile", type=Path, default=None, help="cProfile (CPU-time clock) of the last run")
    p.add_argument("--redis-py", action="store_true", help="every write through redis-py (no lean client)")
    p.add_argument("--uvloop", action="store_true", help="run on uvloop")
    p.add_argument("--output", type=Path, default=None)
    args = p.parse_args()
    from csms.store.embedded import EmbeddedRedis

    runs = []
    for _ in range(args.repeat):
        with EmbeddedRedis() as srv:
            if args.uvloop:
                import uvloop

                runs.append(uvloop.run(_run(args, srv.url)))
            else:
                runs.append(asyncio.run(_run(args, srv.url)))
        print(f"  {runs[-1]['messages']} msgs: node {runs[-1]['node_us_per_msg']:.0f} us/msg, "
              f"redis {runs[-1]['redis_us_per_msg']:.0f} us/msg", flush=True)
    node = statistics.median(r["node_us_per_msg"] for r in runs)
    redis = statistics.median(r["redis_us_per_msg"] for r in runs)
    print(f"median of {len(runs)}: node {node:.0f} us/msg, redis {redis:.0f} us/msg "
          f"({runs[-1]['by_action']})")
    if args.output:
        args.output.write_text(json.dumps({"runs": runs, "node_us_per_msg": node, "redis_us_per_msg": redis},
                                          indent=1))


if __name__ == "__main__":
    main()
