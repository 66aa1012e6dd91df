"""Benchmark: how fast a lowered site limit reaches the answering stations when some never answer.

    PYTHONPATH=. .venv/bin/python benchmarks/limit_cut.py [--stations 40] [--from-kw 60] [--to-kw 30]
        [--silent 2] [--slow 2] [--slow-s 3] [--callerror 2] [--rejected 2] [--drop 2]
        [--call-timeout 10] [--runs 3]

One csms node (smart charging, no optimizer: fair shares) on a private redis-server, N `ocpp` v201
stations over real WebSockets (tests/loop/harness.py), each with a running session, admitted on a
site of `--from-kw`. Then the faults start (stations that, from then on, answer SetChargingProfile
never (`silent`), after `--slow-s` (`slow`), with a CALLERROR (`callerror`), Rejected
(`rejected`), or close their connection when one arrives (`drop`)) and the limit is cut to
`--to-kw` with `set_site_limit` (the README's `evfleet sites set`). With `--busy-before S` an earlier
cut to `--pre-cut-kw` comes S seconds before it (an operator lowering in steps, a grid signal every
few seconds), so the site is still in that cut's passes when the second comes. With
`--plan-before S` a plan lowering every station by 1 kW is published S seconds before the cut (the
benchmark as the optimizer): its pass awaits the faulty stations when the cut comes.
Measured from the cut, sampled every 10 ms at the stations' side:

- `answering_s`: until the sum of the limits in force at the stations that answer normally is
  under the new limit less what the csms must count for the others (the silent and slow ones at
  their last limit, the refusing ones at their maximum);
- `all_s`: until the sum at every station (the silent at what they last accepted) is under the
  new limit (never, if what the silent ones hold is more than the cut leaves);
- the csms's own record: when the sum of the applied-profile records is under the new limit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from csms.store.embedded import EmbeddedRedis  # noqa: E402
from tests.loop.faulty import FAULTS, FaultyStation, publish_plan  # noqa: E402
from tests.loop.harness import Loop, closed_loop  # noqa: E402


def _sum_w(lp: Loop, ids: list[str]) -> float:
    now = datetime.now(UTC)
    return sum(lp.stations[sid].limit_w_at(now, lp.active[sid]) for sid in ids)


async def one_run(redis_url: str, args: argparse.Namespace) -> dict[str, Any]:
    """One cut; the figures of `module doc`."""
    counts = {fault: getattr(args, fault) for fault in FAULTS}
    plan = [fault for fault, n in counts.items() for _ in range(n)]
    plan += [""] * (args.stations - len(plan))
    async with closed_loop(redis_url, limit_kw=args.from_kw, worker=False, interim_profile_after_s=0.3,
                           call_timeout_s=args.call_timeout) as lp:
        cps: list[FaultyStation] = []
        for i in range(args.stations):
            cps.append(await lp.add_station(f"CP-{i + 1:03d}", FaultyStation))  # type: ignore[arg-type]
        await lp.wait_for(lambda: all(cp.defaults for cp in cps), timeout=30, what="defaults")
        for i, cp in enumerate(cps, start=1):
            await cp.start_tx(f"tx-{i}", token=f"T{i}")
        await lp.wait_for(lambda: all(cp.profiles for cp in cps), timeout=30, what="admitted")
        await lp.wait_for(lambda: _sum_w(lp, list(lp.stations)) > 0.9 * args.from_kw * 1000, timeout=30,
                          what="sharing the limit")
        await asyncio.sleep(1.0)  # settled: no pass of the site out
        for cp, fault in zip(cps, plan, strict=True):
            cp.fault, cp.slow_s = fault, args.slow_s
        if args.busy_before:  # an earlier cut: its pass (and the re-share after it) is out at the cut
            await lp.set_limit(args.pre_cut_kw)
            await asyncio.sleep(args.busy_before)
        if args.plan_before:  # a plan 1 kW below the shares: its pass awaits the faulty stations
            now = datetime.now(UTC)
            await publish_plan(lp, {sid: max(0.0, cp.limit_w_at(now) / 1000.0 - 1.0)
                                    for sid, cp in lp.stations.items()}, args.from_kw)
            await asyncio.sleep(args.plan_before)
        answering = [sid for sid, cp in lp.stations.items() if not cp.fault]  # type: ignore[attr-defined]
        others = [cp.id for cp, fault in zip(cps, plan, strict=True) if fault]
        limit_w = args.to_kw * 1000.0
        # what the csms must count for the others: their last limit (silent, slow, dropped: unknown
        # whether a lower one applied), their maximum (refusing)
        held_w = sum(cp.limit_w_at(datetime.now(UTC)) if cp.fault in ("silent", "slow", "drop") else 11_040.0
                     for cp in cps if cp.fault)
        answering_bound_w = max(0.0, limit_w - held_w)
        before_w = _sum_w(lp, list(lp.stations))
        t0 = time.monotonic()
        logging.getLogger("limit_cut").warning("cut %s -> %s kW", args.from_kw, args.to_kw)
        await lp.set_limit(args.to_kw)
        t_answering = t_all = t_record = None
        next_trace = 0.0
        while time.monotonic() - t0 < args.window:
            now_s = time.monotonic() - t0
            if args.trace and now_s >= next_trace:
                next_trace += 0.5
                print(f"  t={now_s:5.2f} s answering {_sum_w(lp, answering):8.0f} W others "
                      f"{_sum_w(lp, others):8.0f} W", flush=True)
            if t_answering is None and _sum_w(lp, answering) <= answering_bound_w + 1.0:
                t_answering = now_s
            if t_all is None and _sum_w(lp, list(lp.stations)) <= limit_w + 1.0:
                t_all = now_s
            if t_record is None:
                records = await lp._live_records()
                at_s = datetime.now(UTC).timestamp()
                total = sum(_record_w(r, at_s) for r in records)
                if total <= limit_w + 1.0:
                    t_record = time.monotonic() - t0
            if t_answering is not None and t_all is not None and t_record is not None and not args.trace:
                break
            await asyncio.sleep(0.01)
        return {"answering_s": t_answering, "all_s": t_all, "record_s": t_record,
                "before_w": round(before_w), "answering_w": round(_sum_w(lp, answering)),
                "answering_bound_w": round(answering_bound_w), "others_w": round(_sum_w(lp, others)),
                "sent_to_silent": sum(cp.ignored for cp in cps)}


def _record_w(record: dict[str, Any], at_s: float) -> float:
    series = record["applied_series_w"]
    value = series[0][1]
    for t, w in series:
        if t <= at_s:
            value = w
    return float(value)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stations", type=int, default=40)
    parser.add_argument("--from-kw", type=float, default=60.0)
    parser.add_argument("--to-kw", type=float, default=30.0)
    for fault in FAULTS:
        parser.add_argument(f"--{fault}", type=int, default=2)
    parser.add_argument("--slow-s", type=float, default=3.0)
    parser.add_argument("--call-timeout", type=float, default=10.0)
    parser.add_argument("--window", type=float, default=20.0, help="seconds watched after the cut")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--busy-before", type=float, default=0.0,
                        help="an earlier cut to --pre-cut-kw this long before the cut")
    parser.add_argument("--pre-cut-kw", type=float, default=50.0)
    parser.add_argument("--plan-before", type=float, default=0.0,
                        help="a plan (every station 1 kW lower) this long before the cut")
    parser.add_argument("--trace", action="store_true", help="the sums every 0.5 s over the window")
    parser.add_argument("--log", action="store_true", help="the csms's WARNINGs with their times")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING if args.log else logging.CRITICAL,
                        format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("ocpp").setLevel(logging.CRITICAL)
    server = EmbeddedRedis().start()
    try:
        for run in range(args.runs):
            import redis

            redis.Redis.from_url(server.url).flushall()
            result = await one_run(server.url, args)
            print(json.dumps({"run": run, **result, "load": os.getloadavg()[0]}), flush=True)
    finally:
        server.stop()


if __name__ == "__main__":
    asyncio.run(main())
