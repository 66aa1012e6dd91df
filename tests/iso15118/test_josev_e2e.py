"""Done-when e2e (issue 7): csms + optimizer + one simulated station whose EVCC and SECC are real Josev.

The EV's departure time and energy reach the csms as NotifyEVChargingNeeds; the optimizer's
schedule reaches the EV as an SAScheduleList it follows; a re-plan (site limit drop) triggers
a renegotiation the EV completes; each EV plan comes back as NotifyEVChargingSchedule.
On a starved machine the EV can time out during the renegotiation; its next session then gets the
new schedule, which counts only after an EV timeout (`_renegotiation_outcome`).
Skipped (with the reason) only where namespaces/veth, Java or the Josev venv are impossible.
"""

from __future__ import annotations

import asyncio
import random
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from evse_sim.ev import Ev, EvSpec
from evse_sim.evse import EvseSpec
from evse_sim.iso15118.link import JosevHlcLink
from evse_sim.iso15118.netns import check
from evse_sim.station import ConnectionConfig, SimStation, StationConfig
from tests.iso15118.conftest import KEYS, PASSWORD, csms_loop, print_bridge_events, stop_station
from tests.waiting import until

CAP = check()
pytestmark = [pytest.mark.iso15118, pytest.mark.timeout(120),
              pytest.mark.skipif(not CAP.ok, reason=CAP.explain())]


def _pmax_at(tuples: list[dict[str, Any]], t_s: float) -> float:
    value = 0.0
    for start, w, _ in tuples[0]["pmax"]:
        if start <= t_s:
            value = float(w)
    return value


def _renegotiation_outcome(hlc: Any, renegotiations_before: int, plans_before: int,
                           events_before: int) -> str | None:
    """"renegotiated" when the EV completed the SECC's renegotiation; "recovered after an EV timeout"
    when, after the renegotiation was requested, the EV's session stopped on its own timeout (Josev's
    "TimeoutError occurred ...") and its next session reached PowerDelivery (the new offer, checked
    by the caller); else None (still waiting). Any other drop never counts."""
    if hlc.state != "charging" or len(hlc.plans) <= plans_before:
        return None
    if hlc.renegotiations > renegotiations_before:
        return "renegotiated"
    kinds = [(k, d) for _, k, d in hlc.events[events_before:]]
    requested = next((i for i, (k, _) in enumerate(kinds) if k == "renegotiation_requested"), None)
    if requested is None:
        return None
    stops = [(i, str(d.get("reason", ""))) for i, (k, d) in enumerate(kinds) if k == "ev_session_stopped"]
    timeouts = [i for i, reason in stops if i > requested and reason.startswith("TimeoutError")]
    if len(stops) != 1 or not timeouts:
        return None
    recovered = any(k == "hlc_recovered" for k, _ in kinds[timeouts[0]:])
    return "recovered after an EV timeout" if recovered else None


async def test_real_iso15118_schedule_loop_end_to_end(redis_url: str, artifacts_dir: Path) -> None:
    workdir = artifacts_dir / "iso15118-e2e"
    workdir.mkdir(parents=True, exist_ok=True)
    async with csms_loop(redis_url, limit_kw=11.0) as lp:
        await lp.provision(["ISO-1"])
        cfg = StationConfig("ISO-1", (EvseSpec.ac(11.0),), tx_updated_interval_s=10, aligned_interval_s=0)
        conn = ConnectionConfig(lp.node.url, password=PASSWORD, backoff_base_s=0.05, backoff_max_s=0.3,
                                response_timeout_s=10)
        link = JosevHlcLink(workdir=workdir)
        station = SimStation(cfg, conn, lp.clock, hlc=link, rng=random.Random(3))
        runner = asyncio.create_task(station.run(tick_s=1.0))
        try:
            await link.open(station)  # namespace + veth pair + Josev SECC (JVM warmed up)
            await until(lambda: station.online, 20, "station online")
            hlc = link.sessions[1]
            now = lp.clock.now()
            departure = now + timedelta(hours=5)
            ev = Ev(EvSpec("EV-1", "ID.4", 77.0, 0.3, 0.8, 11.0, 100.0, now, departure, hlc=True))
            tx_id = station.plug_in(1, ev)

            # 1. the EV's departure time and energy reach the csms (NotifyEVChargingNeeds)
            needs = await until(lambda: lp.json(KEYS.charging_needs("ISO-1", 1)), 40, "needs stored")
            assert needs["transaction_id"] == tx_id
            stored_departure = datetime.fromisoformat(needs["departure_time"].replace("Z", "+00:00"))
            assert abs((stored_departure - departure).total_seconds()) < 30
            assert needs["energy_amount_wh"] == round(ev.remaining_need_wh / ev.spec.efficiency, -1) or \
                abs(needs["energy_amount_wh"] - ev.remaining_need_wh / ev.spec.efficiency) < 100
            assert needs["ev_max_current_a"] == 15  # 11 kW / (3 x 230 V), as the EVCC sent it

            # 2. the optimizer's schedule reaches the EV as an SAScheduleList it follows
            await until(lambda: hlc.offered_version > 0 and hlc.state == "charging", 30,
                        "an SAScheduleList built from the TxProfile, accepted by the EV")
            profile_record = await lp.json(KEYS.applied_profile("ISO-1", 1))
            assert profile_record.get("status") == "Accepted"
            offered = [d for _, k, d in hlc.events if k == "offered" and not d["default"]]
            assert offered, hlc.events
            plan = hlc.plan
            assert plan is not None
            first_offer = offered[0]["tuples"]
            assert plan.sa_schedule_tuple_id == first_offer[0]["id"]
            assert all(e.max_power_w <= _pmax_at(first_offer, e.start_s) + 1 for e in plan.profile)
            await until(lambda: station.evses[1].ev_limit_w is not None, 5, "EV follows its plan")
            ev_sched = await until(lambda: lp.json(KEYS.ev_schedule("ISO-1", 1)), 15, "EV schedule stored")
            assert ev_sched["transaction_id"] == tx_id

            # 3. a later re-plan (site limit 11 -> 4 kW) triggers a renegotiation the EV completes
            #    On a starved machine the EV may time out (its 2 s per response) during the renegotiation
            #    and start a new session, which offers the new schedule: accepted only for an EV timeout.
            renegotiations_before = hlc.renegotiations
            plans_before, events_before = len(hlc.plans), len(hlc.events)
            await lp.set_limit(4.0)
            outcome = await until(
                lambda: _renegotiation_outcome(hlc, renegotiations_before, plans_before, events_before),
                40, "renegotiation completed")
            print(f"renegotiation outcome: {outcome}")
            last_offer = [d for _, k, d in hlc.events if k == "offered"][-1]["tuples"]
            assert _pmax_at(last_offer, 0) <= 4_000 + 1
            assert hlc.plan is not None and hlc.plan.profile[0].max_power_w <= 4_000 + 1

            # 4. the EV's new plan comes back as NotifyEVChargingSchedule
            async def new_ev_schedule() -> dict[str, object]:
                doc = await lp.json(KEYS.ev_schedule("ISO-1", 1))
                schedule: Any = doc.get("schedule") or {}
                periods = schedule.get("chargingSchedulePeriod", [])
                return doc if periods and periods[0]["limit"] <= 4_000 + 1 else {}

            doc = await until(new_ev_schedule, 15, "the renegotiated EV plan at the csms")
            assert doc["transaction_id"] == tx_id
            if outcome == "renegotiated":
                assert hlc.errors == [], hlc.errors
            else:  # the SECC's side of the same drop, nothing else
                assert len(hlc.errors) == 1 and hlc.errors[0].startswith("session ended: "), hlc.errors
            station.unplug(1)
            await until(lambda: hlc.ended is not None, 15, "SessionStop")
        except BaseException:
            print_bridge_events(link.sessions.values())
            raise
        finally:
            await stop_station(station, runner, link)
