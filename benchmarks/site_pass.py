"""CPU and garbage-collector work of the smart-charging site passes on one big site (not a test).

    .venv/bin/python benchmarks/site_pass.py [--stations 20000] [--repo PATH]

The load harness's worst case (issue 14): every station of a 20,000-station site in a session,
no optimizer, so the site is in fallback mode and every pass re-shares the site's headroom among
all its sessions. The site is populated on a private redis-server as `site_read.py` does (one EVSE
per station, an interim-share profile record, charging needs); the stations are a stand-in that
accepts every profile at once. Timed on one service, this process's CPU (Redis's not counted),
with the node's garbage-collector settings (thresholds (50000, 20, 100), `gc.freeze` after the
set-up), each pass `--runs` times (median):

- `reshare`: a fallback re-share with nothing changed since the last one (`safety.share_fairly`);
- `reshare+arrivals`: the same after `--arrivals` sessions started since the last pass (their
  EVSEs name a new session and hold no profile for it), as after a second of the harness's starts;
- `enforce`: `enforce_limit` with nothing to lower (every watchdog pass that saw a change runs it);
- `tick`: a watchdog pass with 1 in 30 sessions metered since the last pass.

For each: CPU ms, young (generation 0/1) and full collections during the pass and the ms they took
(wall), the longest event-loop turn during the pass (`LoopLag`: CPU ms, and wall ms, between two
turns of a sampler task, the most of the timed runs; what a station message waits at worst behind
the pass, collections included), and the most container objects the pass held alive at once
(`gc.get_count` with the collector off, sampled every event-loop turn, in a separate run): what
young collections walk.
`--repo` runs another checkout's code on the same data, as an A/B in one run.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from benchlib import use_checkout

SITE = "big"


class Accepting:
    """`CommandClient` stand-in: every SetChargingProfile is Accepted at once."""

    def __init__(self) -> None:
        self.calls = 0

    async def call(self, station_id: str, action: str, payload: dict[str, Any],
                   timeout_s: float | None = None) -> Any:
        from csms.commands import CommandReply, Outcome
        self.calls += 1
        return CommandReply(request_id="r", station_id=station_id, action=action, outcome=Outcome.RESULT,
                            payload={"status": "Accepted"})


class GcWatch:
    """Counts collections and their time while installed."""

    def __init__(self) -> None:
        self.young = self.full = 0
        self.young_s = self.full_s = 0.0
        self._t = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._t = time.perf_counter()
            return
        d = time.perf_counter() - self._t
        if info.get("generation", 0) == 2:
            self.full, self.full_s = self.full + 1, self.full_s + d
        else:
            self.young, self.young_s = self.young + 1, self.young_s + d


def start_sessions(url: str, first: int, count: int, tag: str) -> None:
    """`count` stations from `first` start a new session (EVSE hash names it, no profile for it)."""
    import redis

    from evfleet.keys import Keys

    k, r = Keys("evfleet"), redis.Redis.from_url(url, decode_responses=True)
    pipe = r.pipeline(transaction=False)
    for i in range(first, first + count):
        sid, ref = f"CP{i:05d}", f"CP{i:05d}:tx-{i}-{tag}"
        pipe.hset(k.station_evse(sid, 1), mapping={"tx_ref": ref, "transaction_id": f"tx-{i}-{tag}"})
        pipe.hset(k.transaction(ref), mapping={"station_id": sid, "evse_id": "1", "energy_wh": "0"})
        pipe.sadd(k.active_for(sid), ref)
        pipe.sadd(k.station_active(sid), ref)
    pipe.execute()
    r.close()


class LoopLag:
    """Longest stretch between two turns of the event loop while running (a sampler task that
    yields every turn: the gap it sees is one turn's callbacks, a pass's longest synchronous
    stretch included), in wall time and in this thread's CPU time (on a loaded machine the wall
    time of a stretch includes the time the process waited for a core)."""

    def __init__(self) -> None:
        self.most_s = self.most_cpu_s = 0.0
        self._task: asyncio.Future[None] | None = None

    async def _sample(self) -> None:
        last, last_cpu = time.perf_counter(), time.thread_time()
        while True:
            await asyncio.sleep(0)
            now, now_cpu = time.perf_counter(), time.thread_time()
            self.most_s = max(self.most_s, now - last)
            self.most_cpu_s = max(self.most_cpu_s, now_cpu - last_cpu)
            last, last_cpu = now, now_cpu

    def start(self) -> None:
        """Start sampling (from a coroutine)."""
        self._task = asyncio.ensure_future(self._sample())

    def stop(self) -> None:
        """Stop sampling."""
        if self._task is not None:
            self._task.cancel()


async def timed(label: str, run: Callable[[], Awaitable[Any]], before: Callable[[int], None],
                runs: int) -> None:
    """Time `run` `runs` times (each after `before(rep)`); print the medians."""
    cpu, young, young_ms, full, full_ms, lag_ms, lag_cpu_ms = [], [], [], [], [], [], []
    for rep in range(runs):
        before(rep)
        watch = GcWatch()
        gc.callbacks.append(watch)
        lag = LoopLag()
        lag.start()
        await asyncio.sleep(0)  # the sampler's first turn: its gaps are the pass's turns
        t = time.process_time()
        await run()
        cpu.append(time.process_time() - t)
        lag.stop()
        lag_ms.append(lag.most_s * 1000)
        lag_cpu_ms.append(lag.most_cpu_s * 1000)
        gc.callbacks.remove(watch)
        young.append(watch.young)
        young_ms.append(watch.young_s * 1000)
        full.append(watch.full)
        full_ms.append(watch.full_s * 1000)
    before(runs)  # one more, collector off: the most container objects alive at once (a loop turn)
    gc.disable()
    n0, peak = gc.get_count()[0], 0

    async def sample() -> None:
        nonlocal peak
        while True:
            peak = max(peak, gc.get_count()[0] - n0)
            await asyncio.sleep(0)

    sampler = asyncio.ensure_future(sample())
    await run()
    sampler.cancel()
    gc.enable()
    med = statistics.median
    print(f"{label:18s} CPU {med(cpu) * 1000:7.0f} ms  young GCs {med(young):3.0f} "
          f"({med(young_ms):5.0f} ms wall)  "
          f"full {med(full):2.0f} ({med(full_ms):4.0f} ms)  longest loop turn {max(lag_cpu_ms):5.1f} ms CPU "
          f"({max(lag_ms):5.1f} wall)  "
          f"peak containers alive +{peak:,}  "
          f"[CPU all: {', '.join(f'{x * 1000:.0f}' for x in cpu)}]", flush=True)


async def measure(url: str, n: int, arrivals: int, runs: int, limit_kw: float) -> None:
    """Build the service, run every pass once to warm its memos, time them."""
    from csms.settings import CsmsSettings
    from csms.smart_charging import safety, watchdog
    from csms.smart_charging.service import SmartChargingService
    from csms.store.port_redis import RedisStateStore
    from evfleet.clock import RealClock
    from evfleet.keys import Keys
    from evfleet.store.client import connect_redis

    redis = connect_redis(url)
    settings = CsmsSettings(default_site=SITE, default_site_limit_kw=limit_kw)
    stations = Accepting()
    svc = SmartChargingService(RedisStateStore(redis, Keys("evfleet")), RealClock(), settings, "bench",
                               stations)  # type: ignore[arg-type]
    svc._fallback.add(SITE)  # no optimizer: a session's plan is late, the site shares
    svc._late_since[SITE] = time.monotonic()
    await safety.share_fairly(svc, SITE)  # first pass: every session gets its share
    await safety.share_fairly(svc, SITE)
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    started = [0]

    def arrive(rep: int) -> None:
        start_sessions(url, (started[0] * arrivals) % n, arrivals, f"r{started[0]}")
        started[0] += 1

    await timed("reshare", lambda: safety.share_fairly(svc, SITE), lambda rep: None, runs)
    await timed("reshare+arrivals", lambda: safety.share_fairly(svc, SITE), arrive, runs)
    await timed("enforce", lambda: svc.enforce_limit(SITE, "bench"), lambda rep: None, runs)
    infos = await svc.site_evses(SITE)

    def meter(rep: int) -> None:
        for i, info in enumerate(infos.values()):
            if i % 30 == rep % 30:
                svc.metered.note(info.ident, SITE, info.tx_ref, 0.0)

    await timed("tick (1 in 30)", lambda: watchdog.tick(svc, SITE), meter, runs)
    print(f"profiles sent in all (set-up included): {stations.calls}")
    await redis.aclose()


def main() -> None:
    """Parse the arguments, start Redis, populate and measure."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stations", type=int, default=20_000)
    p.add_argument("--arrivals", type=int, default=300, help="sessions started before each timed re-share")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--limit-kw", type=float, default=100.0,
                   help="site limit (the harness's 100 kW: every share but a few is 0 W, and arrivals get "
                        "no profile; 22 x stations: every arrival gets a profile, the cost of sending)")
    p.add_argument("--repo", default=None, help="checkout whose code is measured (default: this one)")
    args = p.parse_args()
    use_checkout(args.repo)
    sys.path.insert(1, str(Path(__file__).resolve().parent))
    from site_read import populate

    from csms.store.embedded import EmbeddedRedis

    with EmbeddedRedis() as server:
        populate(server.url, args.stations)
        asyncio.run(measure(server.url, args.stations, args.arrivals, args.runs, args.limit_kw))


if __name__ == "__main__":
    main()
