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
  unchanged re-plan: 0 TxProfiles, 0 renegotiations). After both arrived, the material changes are
  counted from the plans the worker wrote: a changed limit or set of EVs, or an EV that drew at
  least `MATERIAL_WH` more or less than the plan in force gave it (it fell behind its plan, e.g.
  while its EVCC restarted on a loaded machine). On a quiet machine that is none, as before; a
  renegotiation without one fails the test (a re-plan that took a stale meter reading for such a
  shortfall did, until the optimizer counted what the EV drew since its last reading).
"""

from __future__ import annotations

import asyncio
import random
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import optimizer.worker
from evfleet.isotime import parse_iso
from evse_sim.ev import Ev, EvSpec
from evse_sim.evse import EvseSpec
from evse_sim.iso15118.bridge import JosevHlc
from evse_sim.iso15118.link import JosevHlcLink
from evse_sim.iso15118.netns import check
from evse_sim.station import ConnectionConfig, SimStation, StationConfig
from optimizer.standing import planned_kwh
from tests.iso15118.conftest import (
    KEYS,
    PASSWORD,
    SITE,
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
SESSION_DROPS = ("session ended: ", "EV gave up: ", "EVCC process ended")
"""`JosevHlc.errors` of an HLC session that ended while the EV was plugged in (the EVCC or the station
starts a new one: `restarts`, `ev_restarts`)."""
MATERIAL_WH = 40.0
"""An EV that drew this much more or less than the plan in force gave it until a re-plan needs
another plan: K16 (0.5 kW) lets the change through once it is left fewer than 5 minutes to make up.
Below it: the sampler's resolution (0.2 s real, 12 s at 60x: a few Wh, interpolated) and the A
profile's rounding (0.1 A: ~25 Wh per 15 min at 8 kW)."""


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


def _delivered_wh(samples: list[tuple[float, float]], at_s: float) -> float:
    """What the EV had drawn at clock time `at_s`, interpolated between the sampler's readings."""
    before = [(t, wh) for t, wh in samples if t <= at_s]
    after = [(t, wh) for t, wh in samples if t > at_s]
    if not before:
        return 0.0
    (t0, wh0), (t1, wh1) = before[-1], (after[0] if after else before[-1])
    return wh0 if t1 <= t0 else wh0 + (wh1 - wh0) * (at_s - t0) / (t1 - t0)


def _material_changes(plans: list[dict[str, Any]], key: str, samples: list[tuple[float, float]],
                      after_s: float) -> list[tuple[float, str]]:
    """The re-plans after clock time `after_s` made on a material change for EVSE `key`'s session:
    another site limit or set of EVs than the plan solved before, or the EV drew at least
    MATERIAL_WH more or less than that plan gave it in between (what the EV really drew, from
    `samples`). Kept plans (`optimizer.standing`) re-publish the one before: not compared."""
    changes = []
    solved = [p for p in plans if p.get("inputs") and not p.get("kept")]  # a kept plan re-publishes one
    for prev, plan in zip(solved, solved[1:], strict=False):
        before, now = prev["inputs"], plan["inputs"]
        at, prev_at = parse_iso(now["at"]), parse_iso(before["at"])
        if at.timestamp() < after_s:
            continue
        if before["limit_kw"] != now["limit_kw"] or before["evs"].keys() != now["evs"].keys():
            changes.append((at.timestamp(), f"{plan['plan_id']}: limit or EVs"))
            continue
        drew_wh = _delivered_wh(samples, at.timestamp()) - _delivered_wh(samples, prev_at.timestamp())
        planned_wh = 1000.0 * planned_kwh(prev, key, prev_at, at)
        if abs(drew_wh - planned_wh) >= MATERIAL_WH:
            changes.append((at.timestamp(), f"{plan['plan_id']}: drew {drew_wh:.0f} of {planned_wh:.0f} Wh"))
    return changes


def _unexplained(renegotiated_s: list[float], material: list[tuple[float, str]]) -> list[float]:
    """The renegotiations (clock times) with no material change of their own before them: each
    change explains at most one renegotiation after it (earliest first)."""
    unused = sorted(t for t, _ in material)
    left = []
    for t in sorted(renegotiated_s):
        if unused and unused[0] <= t:
            unused.pop(0)
        else:
            left.append(t)
    return left


async def test_real_josev_evs_charge_in_the_cheap_window_fully_without_churn(
        redis_url: str, artifacts_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plans: list[dict[str, Any]] = []  # every plan the worker writes for the site, in order
    write_plan = optimizer.worker.write_plan

    async def recording_write_plan(*args: Any) -> None:
        if args[3] == SITE:
            plans.append(args[5])
        await write_plan(*args)

    monkeypatch.setattr(optimizer.worker, "write_plan", recording_write_plan)
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

        asked_at: dict[int, list[float]] = {1: [], 2: []}  # clock time of each renegotiation asked (sampled)

        async def sample() -> None:
            while True:
                for eid, ev in evs.items():
                    samples[eid].append((clock.timestamp(), ev.delivered_wh))
                    while len(asked_at[eid]) < link.sessions[eid].renegotiations_requested:
                        asked_at[eid].append(clock.timestamp())
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
            setup_s = clock.timestamp()
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
                # after both arrived: at most once per material change; rolling re-plans, the EV
                # filling up as planned and an unchanged limit are none (so, on a quiet machine, no
                # further renegotiation)
                material = _material_changes(plans, f"ISO-P/{eid}", samples[eid], setup_s)
                assert hlc.renegotiations_requested - setup[eid] <= len(material), (
                    eid, hlc.renegotiations_requested, setup, material)
                asked_s = asked_at[eid][setup[eid]:]  # sampled: at or after the request, so after its cause
                assert _unexplained(asked_s, material) == [], (eid, asked_s, material)
                # a dropped session (on a loaded machine: Josev's 2 s timeouts) is no error if a new one
                # took over and charged to departure; anything else the bridge saw is
                assert not hlc.failed, hlc.errors
                assert [e for e in hlc.errors if not e.startswith(SESSION_DROPS)] == [], hlc.errors
            print("figures:", {eid: {"delivered_pct": round(100 * evs[eid].delivered_wh / needs_wh[eid], 1),
                                     "in_cheap_window_pct": round(100 * _energy_between(
                                         samples[eid], cheap_from.timestamp(), cheap_to.timestamp())
                                         / max(1.0, evs[eid].delivered_wh), 1),
                                     "renegotiations": link.sessions[eid].renegotiations_requested,
                                     "default_offers": link.sessions[eid].default_offers,
                                     "session_drops": len(link.sessions[eid].errors),
                                     "ev_restarts": link.sessions[eid].ev_restarts,
                                     "needs_sent": link.sessions[eid].needs_sent,
                                     "needs_repeated": link.sessions[eid].needs_repeated,
                                     "material_changes": _material_changes(
                                         plans, f"ISO-P/{eid}", samples[eid], setup_s)}
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
