"""Benchmark: what the reservation policy costs the first minute of a session (issue 11).

    .venv/bin/python benchmarks/reservation_cost.py [--stations 10] [--limit-kw 40] [--reserve-kw 0,6]

For each reservation (`reserve_kw_per_evse`: 0 = zero until admitted) it runs the fault-load rig
of tests/loop/test_fault_load.py without faults: a private Redis, `evfleet csms` and `evfleet
optimizer` as processes, `--stations` evse_sim stations (11 kW AC, modelled ISO 15118 EVs) on one
site. One EV plugs in every `--interval-s` seconds; sampled every 50 ms from the stations' side:

- admission latency: plug-in -> first power drawn;
- energy of each session in its first minute, against what it drew on average over its next
  minute (its share once admitted) -> energy lost to the policy in the first minute;
- energy of the whole site over the window (a positive reserve holds headroom back from running
  sessions for the idle EVSEs);
- seconds over the site limit (sampled every second; must be 0).

Prints one JSON line per policy and writes `benchmarks/results/reservation_cost.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import MqttBroker  # noqa: E402
from tests.loop.test_fault_load import _ev, _until, rig  # noqa: E402


async def one(reserve_kw: float, args: argparse.Namespace, broker: MqttBroker) -> dict[str, Any]:
    ids = [f"RC-{i:02d}" for i in range(1, args.stations + 1)]
    env = {"EVFLEET_RESERVE_KW_PER_EVSE": str(reserve_kw), "EVFLEET_LOG_LEVEL": "WARNING"}
    async with rig(broker, args.limit_kw, ids, extra_env=env) as r:
        sts = {sid: r.add_station(sid) for sid in ids}
        await _until(lambda: all(s.online for s in sts.values()), 60, "stations online")
        await asyncio.sleep(3.0)  # defaults installed
        site_wh, last = 0.0, time.monotonic()
        power: dict[str, list[tuple[float, float]]] = {sid: [] for sid in ids}
        t_start = time.monotonic()
        plug_at: dict[str, float] = {}
        nxt = 0
        while time.monotonic() - t_start < args.stations * args.interval_s + 120:
            now = time.monotonic()
            if nxt < len(ids) and now - t_start >= nxt * args.interval_s:
                r.plug(ids[nxt], _ev(nxt + 1, kwh=60.0))
                plug_at[ids[nxt]] = now
                nxt += 1
            total = 0.0
            for sid, st in sts.items():
                w = st.evses[1].power_w
                total += w
                if sid in plug_at:
                    power[sid].append((now - plug_at[sid], w))
            site_wh += total * (now - last) / 3600.0
            last = now
            await asyncio.sleep(0.05)
        lat = [t for t, _ in r.admitted_s.values()]
        lost, first = [], []
        for series in power.values():
            m1 = _energy_wh(series, 0.0, 60.0)
            m2 = _energy_wh(series, 60.0, 120.0)
            if m2 > 0:
                first.append(m1)
                lost.append(max(0.0, m2 - m1))
        return {
            "reserve_kw_per_evse": reserve_kw, "stations": args.stations, "limit_kw": args.limit_kw,
            "sessions": len(plug_at), "admitted": len(lat),
            "admission_s_median": round(statistics.median(lat), 3) if lat else None,
            "admission_s_max": round(max(lat), 3) if lat else None,
            "first_minute_wh_mean": round(statistics.fmean(first), 1) if first else None,
            "first_minute_wh_lost_vs_second_minute_mean": round(statistics.fmean(lost), 1) if lost else None,
            "site_kwh_over_window": round(site_wh / 1000.0, 3),
            "window_s": round(time.monotonic() - t_start, 1),
            "seconds_over_limit": {p: len(v) for p, v in r.over.items()}, "samples": r.samples,
        }


def _energy_wh(series: list[tuple[float, float]], a: float, b: float) -> float:
    out = 0.0
    for (t0, w), (t1, _) in zip(series, series[1:], strict=False):
        if a <= t0 < b:
            out += w * (t1 - t0) / 3600.0
    return out


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stations", type=int, default=10)
    ap.add_argument("--limit-kw", type=float, default=40.0)
    ap.add_argument("--reserve-kw", default="0,6", help="comma-separated reserve_kw_per_evse values")
    ap.add_argument("--interval-s", type=float, default=4.0)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/reservation_cost.json")
    args = ap.parse_args()
    broker = MqttBroker().start()
    results = []
    try:
        for value in (float(v) for v in args.reserve_kw.split(",")):
            res = await one(value, args, broker)
            print(json.dumps(res))
            results.append(res)
    finally:
        broker.stop()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
