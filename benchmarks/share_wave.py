"""The load harness's start-up wave of fallback re-shares on one big site, at unit level (not a test).

    .venv/bin/python benchmarks/share_wave.py [--stations 20000] [--waves 10] [--repo PATH]

The harness's worst case (issue 14): every station on the default site (100 kW), no optimizer, no
charging needs (no EV minimum): the stations start their sessions over a minute, the site goes into
fallback mode and every re-share hands the headroom out among every session. Here, on a private
redis-server, N stations with one EVSE each (its 0 W TxDefaultProfile accepted, W rate unit, 22 kW)
start their sessions in `--waves` equal waves; after each wave one re-share runs
(`safety.share_fairly` in fallback mode), then one more with nothing changed. The stations are a
stand-in that accepts every profile after `--answer-ms`. Per pass: profiles sent, this process's
CPU, the longest the event loop was held in one stretch (a ticker task measures the gaps between
its turns), young garbage collections (the node's thresholds (50000, 20, 100), `gc.freeze` after
set-up; `benchlib.GcCount`). At the end, the sum of the limits the stations were last sent (and
the budget): the site limit from the stations' side. `--repo` runs another checkout's code on the
same data (A/B).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import pstats
import time
from typing import Any

from benchlib import GcCount, use_checkout

SITE = "big"


class Stations:
    """`CommandClient` stand-in: every SetChargingProfile is Accepted after `delay_s`; the limit each
    station was sent last (W, its first period) is kept, so the site's sum is read from their side."""

    def __init__(self, delay_s: float) -> None:
        self.calls = 0
        self.defaults = 0
        self.delay_s = delay_s
        self.limit_w: dict[str, float] = {}
        self.peak_sum_w = 0.0
        self._sum_w = 0.0

    async def call(self, station_id: str, action: str, payload: dict[str, Any],
                   timeout_s: float | None = None) -> Any:
        from csms.commands import CommandReply, Outcome
        self.calls += 1
        if payload["chargingProfile"]["chargingProfilePurpose"] == "TxDefaultProfile":
            self.defaults += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        periods = payload["chargingProfile"]["chargingSchedule"][0]["chargingSchedulePeriod"]
        new = max(float(p["limit"]) for p in periods)  # W profiles (the EVSEs' rate unit here)
        self._sum_w += new - self.limit_w.get(station_id, 0.0)
        self.limit_w[station_id] = new
        self.peak_sum_w = max(self.peak_sum_w, self._sum_w)
        return CommandReply(request_id="r", station_id=station_id, action=action, outcome=Outcome.RESULT,
                            payload={"status": "Accepted"})


def populate(url: str, n: int) -> None:
    """N online stations of `SITE`, one idle EVSE each holding an accepted 0 W default."""
    import redis

    from evfleet.keys import Keys

    k, r = Keys("evfleet"), redis.Redis.from_url(url, decode_responses=True)
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        sid = f"L{i:05d}"
        pipe.sadd(k.stations(), sid)
        pipe.sadd(k.site_stations(SITE), sid)
        pipe.hset(k.station(sid), mapping={"site_id": SITE, "online": "1", "node": "csms-1"})
        pipe.hset(k.station_connectors(sid), "1/1", '{"status": "Available"}')
        pipe.hset(k.station_evse(sid, 1), mapping={"default_limit_w": "0.0", "default_at": "1.0"})
        if len(pipe) > 5000:
            pipe.execute()
            pipe = r.pipeline(transaction=False)
    pipe.execute()
    r.close()


def start_sessions(url: str, first: int, count: int, unknown: bool = False) -> None:
    """Stations `first`.. start a session (EVSE hash names it; no profile for it yet). `unknown`: as
    in the harness, whose stations send no StatusNotification, the EVSE is first seen with the
    session: no TxDefaultProfile confirmed yet, it counts at its maximum until one is."""
    import redis

    from evfleet.keys import Keys

    k, r = Keys("evfleet"), redis.Redis.from_url(url, decode_responses=True)
    pipe = r.pipeline(transaction=False)
    for i in range(first, first + count):
        sid, ref = f"L{i:05d}", f"L{i:05d}:L{i:05d}-0"
        pipe.hset(k.station_evse(sid, 1), mapping={"tx_ref": ref, "transaction_id": f"L{i:05d}-0"})
        if unknown:
            pipe.hdel(k.station_evse(sid, 1), "default_limit_w", "default_at")
        pipe.hset(k.transaction(ref), mapping={"station_id": sid, "evse_id": "1", "energy_wh": "0"})
        pipe.sadd(k.active_for(sid), ref)
        pipe.sadd(k.station_active(sid), ref)
    pipe.execute()
    r.close()


class Ticker:
    """The longest stretch the event loop did not come back to this task: the CPU this thread
    spent in it (robust to a loaded machine; what a station's message waits at least) and wall."""

    def __init__(self) -> None:
        self.worst_s = 0.0
        self.worst_wall_s = 0.0
        self.over_20ms = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        last, last_cpu = time.perf_counter(), time.thread_time()
        while True:
            await asyncio.sleep(0)
            now, cpu = time.perf_counter(), time.thread_time()
            self.worst_wall_s = max(self.worst_wall_s, now - last)
            self.worst_s = max(self.worst_s, cpu - last_cpu)
            self.over_20ms += cpu - last_cpu > 0.020
            last, last_cpu = now, cpu

    def __enter__(self) -> Ticker:
        self._task = asyncio.ensure_future(self._run())
        return self

    def __exit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def measure(url: str, n: int, waves: int, limit_kw: float, answer_s: float, unknown: bool,
                  profile: bool, singles: int = 0) -> None:
    """Run the waves (module doc) and print one line per pass."""
    from csms.settings import CsmsSettings
    from csms.smart_charging import safety
    from csms.smart_charging.service import SmartChargingService
    from csms.store.port_redis import RedisStateStore
    from evfleet.clock import RealClock
    from evfleet.keys import Keys
    from evfleet.store.client import connect_redis

    redis = connect_redis(url)
    settings = CsmsSettings(default_site=SITE, default_site_limit_kw=limit_kw)
    stations = Stations(answer_s)
    svc = SmartChargingService(RedisStateStore(redis, Keys("evfleet")), RealClock(), settings, "bench",
                               stations)  # type: ignore[arg-type]
    svc._fallback.add(SITE)  # no optimizer: a session's plan is late, the site shares
    svc._late_since[SITE] = time.monotonic() - 3600  # ... and the optimizer is silent
    await svc.site_evses(SITE)  # decode memo warm, as on a node that has run a while
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    per = n // waves
    tot_cpu = tot_sent = 0.0
    worst = 0.0
    print(f"{'pass':>10}{'sessions':>10}{'sent':>6}{'dflt':>6}{'CPU ms':>8}{'stall CPU ms':>14}{'>20ms':>7}"
          f"{'wall ms':>9}"
          f"{'young GC':>9}", flush=True)
    for w in range(waves + 1):
        if w < waves:
            start_sessions(url, w * per, per, unknown)
            if unknown:  # the service's defaults pass goes before queued work (answers come later)
                await svc.ensure_defaults(SITE)
        sent0, defaults0 = stations.calls, stations.defaults
        cpu = time.process_time()
        prof = cProfile.Profile() if profile and w >= waves - 1 else None
        with GcCount() as watch, Ticker() as tick:
            if prof is not None:
                prof.enable()
            await safety.share_fairly(svc, SITE)
            if prof is not None:
                prof.disable()
                pstats.Stats(prof).sort_stats("cumulative").print_stats(45)
        cpu = time.process_time() - cpu
        defaults = stations.defaults - defaults0
        sent = stations.calls - sent0 - defaults
        tot_cpu += cpu
        tot_sent += sent
        worst = max(worst, tick.worst_s)
        label = f"wave {w + 1}" if w < waves else "again"
        print(f"{label:>10}{min(n, (w + 1) * per):>10}{sent:>6}{defaults:>6}{cpu * 1000:>8.0f}"
              f"{tick.worst_s * 1000:>14.1f}"
              f"{tick.over_20ms:>7}{tick.worst_wall_s * 1000:>9.1f}{watch.young:>9}", flush=True)
    for j in range(singles):  # one session starts: the service's path (event, then its re-share)
        await _single(svc, url, n + j, stations)
    budget_w = await svc.site_budget_w(SITE)
    print(f"total: {tot_sent:.0f} TxProfiles ({stations.defaults} defaults), {tot_cpu:.2f} CPU s, "
          f"worst stall {worst * 1000:.1f} ms CPU; "
          f"stations' side: sum of limits last sent {sum(stations.limit_w.values()):.0f} W, peak "
          f"{stations.peak_sum_w:.0f} W, budget {budget_w:.0f} W", flush=True)
    await redis.aclose()


async def _single(svc: Any, url: str, i: int, stations: Stations) -> None:
    """Station i starts a session: its TransactionEvent's event through the site's handler, then the
    re-share it asks for (`Work.RESHARE`, as the site's task runs it), timed as one line."""
    from datetime import UTC, datetime

    from csms.smart_charging.work import Work
    from evfleet.events import Event, EventType

    start_sessions(url, i, 1)
    sid = f"L{i:05d}"
    event = Event(type=EventType.TX_STARTED, station_id=sid, evse_id=1, transaction_id=f"{sid}-0",
                  tx_ref=f"{sid}:{sid}-0", site_id=SITE, ts=datetime.now(UTC))
    svc.pacing.reshare_queued.add(SITE)  # queued here below, not by the service's timer
    sent0, cpu = stations.calls, time.process_time()
    with Ticker() as tick:
        await svc._handle(SITE, EventType.TX_STARTED.value, event)
        await svc._handle(SITE, Work.RESHARE, None)
    cpu = time.process_time() - cpu
    print(f"{'start ' + sid:>10}{'+1':>10}{stations.calls - sent0:>6}{0:>6}{cpu * 1000:>8.0f}"
          f"{tick.worst_s * 1000:>14.1f}{tick.over_20ms:>7}{tick.worst_wall_s * 1000:>9.1f}", flush=True)


def main() -> None:
    """Parse the arguments, start Redis, populate and measure."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stations", type=int, default=20_000)
    p.add_argument("--waves", type=int, default=10)
    p.add_argument("--limit-kw", type=float, default=100.0)
    p.add_argument("--answer-ms", type=float, default=2.0, help="stations' answer delay")
    p.add_argument("--unknown", action="store_true", help="EVSEs first seen with their session (module doc)")
    p.add_argument("--singles", type=int, default=0,
                   help="then N more stations start one session each, one re-share after each (the service's "
                        "path: Work.RESHARE after the TX_STARTED event)")
    p.add_argument("--profile", action="store_true", help="cProfile of the last two passes")
    p.add_argument("--repo", default=None, help="checkout whose code is measured (default: this one)")
    args = p.parse_args()
    use_checkout(args.repo)

    from csms.store.embedded import EmbeddedRedis

    with EmbeddedRedis() as server:
        populate(server.url, args.stations + args.singles)
        asyncio.run(measure(server.url, args.stations, args.waves, args.limit_kw, args.answer_ms / 1000,
                            args.unknown, args.profile, args.singles))


if __name__ == "__main__":
    main()
