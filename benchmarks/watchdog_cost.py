"""CPU of one metered-watchdog pass (`watchdog.tick`) on a site of N sessions (not a test).

    .venv/bin/python benchmarks/watchdog_cost.py [--sessions 20000] [--repo PATH]

In-memory store (no Redis: a Redis read of each record would add to the old figure). Every
session has a reading; a pass is timed (process CPU, median of 3) once with every reading new (what
each pass read and decoded before `csms/smart_charging/metered.py`: every metered EVSE each second)
and once with one in 30 new (one message per 30 s per station, one pass a second). `--repo` runs
another checkout's code (e.g. the commit before), as an A/B in one run.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time


async def measure(n: int) -> None:
    """Build the site, time the passes, print the medians."""
    from csms.smart_charging import watchdog
    from evfleet.events import Event, EventType
    from evfleet.store.memory import InMemoryStateStore
    from tests.loop.test_service_unit import SITE, T0, FixedClock, Stations, _service, _session

    clock, store = FixedClock(), InMemoryStateStore()
    store.sites[SITE] = {"limit_kw": str(n * 100)}
    refs = {f"CP-{i}": _session(store, f"CP-{i}", 10_000.0) for i in range(n)}
    svc = _service(store, Stations(clock, 1e12), clock)
    for label, every in (("every reading new", 1), ("1 in 30 new", 30)):
        times = []
        for rep in range(3):
            for i, (sid, ref) in enumerate(refs.items()):
                if i % every == rep % every:
                    await svc.dispatch(Event(type=EventType.METER_VALUES, station_id=sid, evse_id=1,
                                             tx_ref=ref, site_id=SITE, ts=T0, data={"power_w": 9000.0}))
            t = time.process_time()
            await watchdog.tick(svc, SITE)
            times.append(time.process_time() - t)
        print(f"{n} sessions, {label}: {sorted(times)[1] * 1000:.0f} ms CPU per pass (median of 3)")


def main() -> None:
    """Parse the arguments and measure."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sessions", type=int, default=20_000)
    p.add_argument("--repo", default=None, help="checkout whose code is measured (default: this one)")
    args = p.parse_args()
    if args.repo:
        sys.path.insert(0, args.repo)
    else:
        from pathlib import Path
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    asyncio.run(measure(args.sessions))


if __name__ == "__main__":
    main()
