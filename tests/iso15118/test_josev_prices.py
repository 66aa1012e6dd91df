"""Done-when (issue 12): real Josev EVs on a site with a price series and a cheap window.

csms + optimizer worker + one simulated station with two AC EVSEs whose SECCs and EVCCs are real
Josev 0.31.2 processes, on a simulated clock (real time while the JVMs start, then 60x; 300x in the
idle stretches before the cheap window and once both EVs are done charging, where no plan step or EV
change is due). Prices: peak for 1.5 h, a cheap hour, peak again; two EVs plug in (the second after
the first has its plan) and leave at departure. Shown:

- the SAScheduleList with the SalesTariff reaches the EV (decoded by its EVCC from EXI);
- the EVs charge in the cheap window;
- every EV gets >= 99 % of its requested energy by departure;
- each session renegotiates at most once per material change (its own first schedule if the SECC
  had to offer its default first, the other EV's arrival), and never when nothing changed (an
  unchanged re-plan: 0 TxProfiles, 0 renegotiations).
"""

from __future__ import annotations

import asyncio
import random
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from evse_sim.ev import Ev, EvSpec
from evse_sim.evse import EvseSpec
from evse_sim.iso15118.bridge import JosevHlc
from evse_sim.iso15118.link import JosevHlcLink
from evse_sim.iso15118.netns import check
from evse_sim.station import ConnectionConfig, SimStation, StationConfig
from tests.iso15118.conftest import (
    KEYS,
    PASSWORD,
    Loop,
    SteppedClock,
    csms_loop,
    print_bridge_events,
    stop_station,
)
from tests.waiting import until

CAP = check()
pytestmark = [pytest.mark.iso15118, pytest.mark.timeout(600),
              pytest.mark.skipif(not CAP.ok, reason=CAP.explain())]
SPEED = 60.0
IDLE_SPEED = 300.0
"""Before the cheap window (the plans say 0 W) and once the EVs are done: nothing is due, so the
clock runs faster there (the rolling re-plans and meter values still come, in simulated time)."""
EDGE = timedelta(minutes=15)
"""IDLE_SPEED again this long after the cheap window ends, or as soon as both EVs are done charging
(>= 99 % of their need delivered and 0 W drawn: the plans end at the window's end, so 15 simulated
minutes at 60x less, ~12 s real)."""
EDGE_BEFORE = timedelta(minutes=15)
"""Back to SPEED this long before the cheap window starts. 5 min (5 s real) was tried: 2 of 6 runs at
load 7-12 went wrong early in the window (an EV ~1 simulated minute behind its tight plan, so a
re-plan changed its profile and it renegotiated; both EVCCs dropping their TCP sessions), probably
while the csms still worked off the 300x stretch; 15 s real to settle, as before."""
PEAK, CHEAP = 0.40, 0.10


def _cheapest_window(received: list[dict[str, object]]) -> list[tuple[int, int]]:
    """(start_s, end_s) of the lowest price level in the first tuple's tariff the EV received."""
    tariff = received[0]["tariff"]
    assert isinstance(tariff, dict)
    entries = tariff["entries"]
    low = min(e[1] for e in entries)
    return [(e[0], e[0] + (e[2] or 0)) for e in entries if e[1] == low]


async def _profiles_sent(lp: Loop) -> int:
    return await _events_of(lp, "profile.sent")


async def _events_of(lp: Loop, kind: str) -> int:
    events = await lp.redis.xrange(KEYS.events(), min="-", max="+")
    return sum(1 for _, f in events if f["type"] == kind)


async def test_real_josev_evs_charge_in_the_cheap_window_fully_without_churn(
        redis_url: str, artifacts_dir: Path) -> None:
    workdir = artifacts_dir / "iso15118-prices"
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = datetime.now(UTC).replace(hour=17, minute=0, second=0, microsecond=0)
    clock = SteppedClock(t0, speed=1.0)
    cheap_from, cheap_to = t0 + timedelta(hours=1.5), t0 + timedelta(hours=2.5)
    prices = [PEAK] * 6 + [CHEAP] * 4 + [PEAK] * 22  # 15-min steps from t0: cheap 18:30-19:30
    async with csms_loop(redis_url, limit_kw=22.0, clock=clock, interim_profile_after_s=30.0) as lp:
        await lp.set_prices(t0, 15, prices)
        await lp.provision(["ISO-P"])
        cfg = StationConfig("ISO-P", (EvseSpec.ac(11.0), EvseSpec.ac(11.0)), tx_updated_interval_s=60,
                            aligned_interval_s=0)
        conn = ConnectionConfig(lp.node.url, password=PASSWORD, backoff_base_s=0.05, backoff_max_s=0.3,
                                response_timeout_s=10)
        link = JosevHlcLink(workdir=workdir)
        station = SimStation(cfg, conn, clock, hlc=link, rng=random.Random(5))
        runner = asyncio.create_task(station.run(tick_s=0.25))
        samples: dict[int, list[tuple[float, float]]] = {1: [], 2: []}
        evs: dict[int, Ev] = {}

        async def sample() -> None:
            while True:
                for eid, ev in evs.items():
                    samples[eid].append((clock.timestamp(), ev.delivered_wh))
                await asyncio.sleep(0.2)

        sampler = asyncio.create_task(sample())
        real_s: dict[str, float] = {"start": time.monotonic()}
        try:
            await link.open(station)
            await until(lambda: station.online, 30, "station online")
            departure = t0 + timedelta(hours=3.5)
            needs_wh: dict[int, float] = {}
            for eid, (cap, ev_id) in {1: (50.0, "EV-A"), 2: (40.0, "EV-B")}.items():
                spec = EvSpec(ev_id, "car", cap, 0.5, 0.65, 11.0, 50.0, clock.now(), departure, hlc=True)
                ev = Ev(spec)
                needs_wh[eid] = ev.remaining_need_wh / spec.efficiency
                evs[eid] = ev
                station.plug_in(eid, ev)
                hlc: JosevHlc = link.sessions[eid]
                # the schedule from the csms's TxProfile (with the tariff) reaches the EV and it plans
                await until(lambda hlc=hlc: hlc.offered_version > 0 and hlc.state == "charging"
                            and hlc.plan is not None, 120, f"EVSE {eid}: EV charging on the csms's schedule")
            assert clock.now() < cheap_from - timedelta(minutes=30), "Josev start-up took too long"
            real_s["both charging"] = time.monotonic()
            _set_speed(clock, link, SPEED)

            # the EV's EVCC decoded the SalesTariff: its cheapest level is the cheap window
            for eid in (1, 2):
                hlc = link.sessions[eid]
                received = [d["received"] for _, k, d in hlc.events if k == "ev_plan"][-1]
                windows = _cheapest_window(received)
                base = [t for t, k, _ in hlc.events if k == "ev_plan"][-1]
                starts = [base + s for s, _ in windows]
                assert any(abs(s - cheap_from.timestamp()) <= 120 for s in starts), (windows, base)

            # while both EVs arrived: at most once per material change. EVSE 1: its own needs (the
            # first profile came from a plan made at tx start, before the needs), EVSE 2's start and
            # EVSE 2's needs; EVSE 2: its own needs or the SECC's default schedule
            await asyncio.sleep(3)
            setup = {eid: link.sessions[eid].renegotiations_requested for eid in (1, 2)}
            assert setup[1] <= 3 and setup[2] <= 2, setup
            # nothing changed: an unchanged re-plan sends no TxProfile and triggers no renegotiation
            sent_before = await _profiles_sent(lp)
            asked = {eid: link.sessions[eid].renegotiations_requested for eid in (1, 2)}
            await lp.set_limit(22.0)
            await asyncio.sleep(5)
            assert await _profiles_sent(lp) == sent_before
            assert {eid: link.sessions[eid].renegotiations_requested for eid in (1, 2)} == asked

            # idle until shortly before the cheap window, charge in it at SPEED, idle until departure;
            # then the EVs leave
            _set_speed(clock, link, IDLE_SPEED)
            await until(lambda: clock.now() >= cheap_from - EDGE_BEFORE, 400,
                        "shortly before the cheap window")
            _set_speed(clock, link, SPEED)
            await until(lambda: clock.now() >= cheap_to + EDGE or _done_charging(station, evs, needs_wh), 400,
                        "both EVs done charging, or shortly after the cheap window")
            full_at = clock.now()
            real_s["idle again"] = time.monotonic()
            _set_speed(clock, link, IDLE_SPEED)
            await until(lambda: clock.now() >= departure, 400, "departure")
            real_s["departure"] = time.monotonic()
            for eid in (1, 2):
                station.unplug(eid)
            for eid, ev in evs.items():
                delivered = ev.delivered_wh
                assert delivered >= 0.99 * needs_wh[eid], (eid, delivered, needs_wh[eid])
                in_window = _energy_between(samples[eid], cheap_from.timestamp(), cheap_to.timestamp())
                assert in_window >= 0.9 * delivered, (eid, in_window, delivered)
                hlc = link.sessions[eid]
                # nothing material changed after both arrived (rolling re-plans, the EV filling up,
                # an unchanged limit): no further renegotiation
                assert hlc.renegotiations_requested == setup[eid], (eid, hlc.renegotiations_requested, setup)
                assert hlc.errors == [], hlc.errors
            print("figures:", {eid: {"delivered_pct": round(100 * evs[eid].delivered_wh / needs_wh[eid], 1),
                                     "in_cheap_window_pct": round(100 * _energy_between(
                                         samples[eid], cheap_from.timestamp(), cheap_to.timestamp())
                                         / max(1.0, evs[eid].delivered_wh), 1),
                                     "renegotiations": link.sessions[eid].renegotiations_requested,
                                     "default_offers": link.sessions[eid].default_offers,
                                     "needs_sent": link.sessions[eid].needs_sent,
                                     "needs_repeated": link.sessions[eid].needs_repeated}
                               for eid in (1, 2)}, "re-plans:", await _events_of(lp, "schedule.planned"),
                  "idle speed again at", full_at.isoformat(), "real s from start:",
                  {k: round(v - real_s["start"], 1) for k, v in real_s.items()})
        except BaseException:
            for eid in (1, 2):
                print(f"EVSE {eid} ev-schedule:", await lp.json(KEYS.ev_schedule("ISO-P", eid)))
                rec = await lp.json(KEYS.applied_profile("ISO-P", eid))
                print(f"EVSE {eid} applied:",
                      {k: rec.get(k) for k in ("kind", "sent_at", "applied_series_w")})
            print_bridge_events(link.sessions.values(), t0.timestamp(), 160)
            raise
        finally:
            sampler.cancel()
            await stop_station(station, runner, link)


def _set_speed(clock: SteppedClock, link: JosevHlcLink, speed: float) -> None:
    """Run the clock at `speed` from now, and re-time the EVs' plan followers to it."""
    clock.set_speed(speed)
    for follower in link._followers.values():
        follower.poke()


def _done_charging(station: SimStation, evs: dict[int, Ev], needs_wh: dict[int, float]) -> bool:
    """Both EVs got >= 99 % of their need and draw nothing: no plan step or EV change is due any more."""
    return all(ev.delivered_wh >= 0.99 * needs_wh[eid] and station.evses[eid].power_w == 0
               for eid, ev in evs.items())


def _energy_between(samples: list[tuple[float, float]], start_s: float, end_s: float) -> float:
    """Energy (Wh) delivered between two clock times, from (time, delivered) samples."""
    def at(t: float) -> float:
        value = 0.0
        for ts, wh in samples:
            if ts <= t:
                value = wh
        return value
    return at(end_s + 60) - at(start_s - 60)
