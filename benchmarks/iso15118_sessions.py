"""Benchmark: cost of the two ISO 15118 fidelity levels of the simulator.

    .venv/bin/python benchmarks/iso15118_sessions.py [--model-sessions 2000] [--josev-sessions 2]

1. Modelled HLC (pure `SeccSession` + `EvccSession`): complete sessions per CPU second
   (SessionSetup .. default schedule .. TxProfile renegotiation .. 60 charge loops .. SessionStop),
   with the schedule conversions and the EV's planning included.
2. Real ISO 15118-2 with Josev (needs `evfleet iso15118 check` to pass): for one EVSE,
   seconds to open (namespace + veth + SECC JVM + codec warm-up), and per plug-in the seconds
   until NotifyEVChargingNeeds, until the EV charges (default schedule), and until a TxProfile
   handed to the SECC is renegotiated and the EV's new plan is out.

Prints a table and writes JSON (``--out``, default benchmarks/results/iso15118_sessions.json).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def model_sessions(n: int) -> dict[str, float]:
    """Run n full modelled sessions back to back; return the rate."""
    from evse_sim.iso15118.messages import EvNeeds
    from evse_sim.iso15118.session import (
        CsmsProfile,
        EvccSession,
        EvStop,
        LoopTick,
        Plugged,
        ScheduleTimeout,
        SeccConfig,
        SeccSession,
        Send,
    )

    t0 = datetime(2026, 1, 5, 8, tzinfo=UTC).timestamp()
    profile = {"id": 1, "chargingSchedule": [{
        "id": 2, "startSchedule": "2026-01-05T08:00:00Z", "chargingRateUnit": "A",
        "chargingSchedulePeriod": [{"startPeriod": i * 900, "limit": 6 + i % 10} for i in range(24)]}]}
    messages = 0
    started = time.process_time()
    for _ in range(n):
        secc, ev = SeccSession(SeccConfig()), EvccSession()

        def pump(cmds: list[Any], to_secc: bool, secc: SeccSession = secc, ev: EvccSession = ev) -> None:
            nonlocal messages
            for c in cmds:
                if isinstance(c, Send):
                    messages += 1
                    if to_secc:
                        pump(secc.handle(c.message, t0), False)
                    else:
                        pump(ev.handle(c.message, t0), True)

        pump(ev.handle(Plugged(EvNeeds(14_400, 20_000, 16)), t0), True)
        pump(secc.handle(ScheduleTimeout(), t0 + 1.5), False)
        for i in range(30):
            pump(ev.handle(LoopTick(), t0 + 2 + i), True)
        pump(secc.handle(CsmsProfile(profile), t0 + 40), False)
        for i in range(30):
            pump(ev.handle(LoopTick(), t0 + 41 + i), True)
        pump(ev.handle(EvStop(), t0 + 80), True)
        assert secc.renegotiations == 1
    cpu_s = time.process_time() - started
    return {"sessions": n, "cpu_s": round(cpu_s, 3), "sessions_per_cpu_s": round(n / cpu_s, 1),
            "messages_per_cpu_s": round(messages / cpu_s, 1)}


async def josev_sessions(n: int) -> dict[str, Any]:
    """Open one real EVSE, run n plug-ins with a renegotiation each; return timings."""
    from evfleet.clock import RealClock
    from evse_sim.iso15118.bridge import JosevHlc
    from evse_sim.iso15118.messages import EvNeeds
    from evse_sim.iso15118.netns import check
    from evse_sim.iso15118.session import SeccConfig

    cap = check()
    if not cap.ok:
        return {"skipped": cap.explain()}

    class Port:
        def __init__(self) -> None:
            self.needs_at: list[float] = []
            self.plans_at: list[float] = []

        async def notify_ev_charging_needs(self, evse_id: int, payload: dict[str, Any]) -> None:
            self.needs_at.append(time.monotonic())

        async def notify_ev_charging_schedule(self, evse_id: int, payload: dict[str, Any]) -> None:
            self.plans_at.append(time.monotonic())

    port = Port()
    hlc = JosevHlc(port, RealClock(), SeccConfig(), capability=cap)
    t = time.monotonic()
    await hlc.open()
    runs: list[dict[str, float]] = []
    result: dict[str, Any] = {"open_s": round(time.monotonic() - t, 2)}
    try:
        for _ in range(n):
            plans_before = len(hlc.plans)
            start = time.monotonic()
            hlc.start(EvNeeds(14_400, 20_000, 16))
            while hlc.state != "charging" or len(hlc.plans) <= plans_before:
                await asyncio.sleep(0.02)
            charging = time.monotonic()
            needs = port.needs_at[-1]
            profile = {"id": 1, "chargingProfilePurpose": "TxProfile", "chargingSchedule": [{
                "id": 3, "startSchedule": datetime.now(UTC).isoformat(), "chargingRateUnit": "W",
                "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 5_000}]}]}
            sent_plans = len(port.plans_at)
            t_profile = time.monotonic()
            hlc.on_tx_profile(profile)
            while len(port.plans_at) <= sent_plans:
                await asyncio.sleep(0.02)
            renegotiated = port.plans_at[-1]
            hlc.stop()
            while hlc.ended is None:
                await asyncio.sleep(0.05)
            hlc.ended = None
            runs.append({"plug_to_needs_s": round(needs - start, 2),
                         "plug_to_charging_s": round(charging - start, 2),
                         "profile_to_new_plan_s": round(renegotiated - t_profile, 2)})
            await asyncio.sleep(1.0)
    finally:
        await hlc.close()
    result["runs"] = runs
    return result


def main() -> None:
    """Run both parts and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-sessions", type=int, default=2000)
    parser.add_argument("--josev-sessions", type=int, default=2)
    parser.add_argument("--out", type=Path,
                        default=ROOT / "benchmarks" / "results" / "iso15118_sessions.json")
    args = parser.parse_args()
    model = model_sessions(args.model_sessions)
    print(f"modelled HLC: {model['sessions']} sessions in {model['cpu_s']} CPU s = "
          f"{model['sessions_per_cpu_s']} sessions/CPU s ({model['messages_per_cpu_s']} ISO messages/CPU s)")
    real = asyncio.run(josev_sessions(args.josev_sessions))
    if "skipped" in real:
        print(f"Josev: skipped ({real['skipped']})")
    else:
        print(f"Josev: open (namespace, veth, SECC JVM, warm-up) {real['open_s']} s")
        for run in real["runs"]:
            print(f"  plug-in -> NotifyEVChargingNeeds {run['plug_to_needs_s']} s, -> charging "
                  f"{run['plug_to_charging_s']} s; TxProfile -> renegotiated plan "
                  f"{run['profile_to_new_plan_s']} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"modelled": model, "josev": real,
                                    "measured_at": datetime.now(UTC).isoformat()}, indent=2))


if __name__ == "__main__":
    main()
