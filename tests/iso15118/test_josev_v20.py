"""Issue 12: a real Josev ISO 15118-20 AC session (scheduled control mode) over the whole loop.

csms + optimizer worker + one simulated station with an 11 kW AC EVSE whose SECC and EVCC are real
Josev 0.31.2 processes speaking ISO 15118-20 AC (real time). Shown:

- the EV's departure and energy (ScheduleExchangeReq) and its power limits
  (AC_ChargeParameterDiscoveryReq) reach the csms as NotifyEVChargingNeeds;
- the csms's TxProfile reaches the EV as the PowerSchedule of its ScheduleExchangeRes, which the EV
  plans under; its plan (the EVPowerProfile of PowerDeliveryReq) reaches the csms as
  NotifyEVChargingSchedule;
- the SECC's session limit is the TxProfile's limit now, sent as EVSETargetActivePower in each
  ACChargeLoopRes and decoded by the EV, which charges within it;
- a site-limit cut reaches the EV the same way in the running charge loop (Josev's -20 EVCC cannot
  renegotiate), and its draw follows;
- the EV stops: PowerDelivery Stop, SessionStop.
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
from evse_sim.iso15118.bridge import JosevHlc
from evse_sim.iso15118.link import JosevHlcLink
from evse_sim.iso15118.netns import check
from evse_sim.station import ConnectionConfig, SimStation, StationConfig
from tests.iso15118.conftest import KEYS, PASSWORD, csms_loop, print_bridge_events, stop_station
from tests.waiting import until

CAP = check()
pytestmark = [pytest.mark.iso15118, pytest.mark.timeout(300),
              pytest.mark.skipif(not CAP.ok, reason=CAP.explain())]
DROPPED = "session ended: TCP peer closed connection"  # Josev's EVCC on its 2 s timeouts, under load


def _limits_agree(hlc: JosevHlc, station: SimStation, cap_w: float) -> bool:
    """SECC session limit = the station's TxProfile limit now = what the EV decoded, within `cap_w`."""
    station_w = station.evses[1].limit_w
    return (hlc.v20_limit_w is not None and hlc.v20_target_w is not None
            and abs(hlc.v20_limit_w - station_w) <= 0.01 * station_w + 1
            and abs(hlc.v20_target_w - hlc.v20_limit_w) <= 1 and hlc.v20_limit_w <= cap_w + 1)


async def test_real_josev_iso15118_20_ac_scheduled_loop(redis_url: str, artifacts_dir: Path) -> None:
    workdir = artifacts_dir / "iso15118-v20"
    workdir.mkdir(parents=True, exist_ok=True)
    async with csms_loop(redis_url, limit_kw=11.0) as lp:
        await lp.provision(["ISO-20"])
        cfg = StationConfig("ISO-20", (EvseSpec.ac(11.0),), tx_updated_interval_s=10, aligned_interval_s=0)
        conn = ConnectionConfig(lp.node.url, password=PASSWORD, backoff_base_s=0.05, backoff_max_s=0.3,
                                response_timeout_s=10)
        link = JosevHlcLink(workdir=workdir, protocol="20")
        station = SimStation(cfg, conn, lp.clock, hlc=link, rng=random.Random(20))
        runner = asyncio.create_task(station.run(tick_s=0.5))
        try:
            await link.open(station)  # a -20 AC SECC (JVM warmed up) on the EVSE's veth pair
            await until(lambda: station.online, 30, "station online")
            h = link.sessions[1]
            assert h.v20 and not h.dc
            now = lp.clock.now()
            departure = now + timedelta(hours=5)
            ev = Ev(EvSpec("EV-20", "ID.4", 77.0, 0.3, 0.8, 11.0, 100.0, now, departure, hlc=True))
            tx_id = station.plug_in(1, ev)

            # 1. the EV's departure and energy (ScheduleExchangeReq) reach the csms
            needs = await until(lambda: lp.json(KEYS.charging_needs("ISO-20", 1)), 90, "needs stored")
            assert needs["transaction_id"] == tx_id
            stored_departure = datetime.fromisoformat(needs["departure_time"].replace("Z", "+00:00"))
            assert abs((stored_departure - departure).total_seconds()) < 30
            assert abs(needs["energy_amount_wh"] - ev.remaining_need_wh / ev.spec.efficiency) < 100
            assert needs["ev_max_current_a"] == 15  # EVMaximumChargePower 11 kW / (3 x 230 V)
            raw = [d for _, k, d in h.events if k == "needs"][0]
            assert raw["protocol"] == "20" and raw["ev_max_power_w"] > 10_000, raw

            # 2. the TxProfile reaches the EV as its -20 PowerSchedule; the EV's plan comes back (K17)
            await until(lambda: h.offered_version > 0 and h.state == "charging", 60,
                        "a ScheduleExchangeRes built from the TxProfile, accepted by the EV")
            record = await lp.json(KEYS.applied_profile("ISO-20", 1))
            assert record.get("status") == "Accepted"
            offered = [d for _, k, d in h.events if k == "offered" and not d["default"]]
            plans = [d for _, k, d in h.events if k == "ev_plan"]
            assert offered and plans, h.events
            received: list[dict[str, Any]] = plans[-1]["received"]  # as the EVCC decoded it from EXI
            sent = offered[-1]["tuples"]
            assert [round(w) for _, w, _ in received[0]["pmax"]] == [round(w) for _, w, _ in sent[0]["pmax"]]
            ev_sched = await until(lambda: lp.json(KEYS.ev_schedule("ISO-20", 1)), 30, "EV schedule stored")
            assert ev_sched["transaction_id"] == tx_id

            # 3. session limit = TxProfile limit now, as EVSETargetActivePower; the EV charges within it
            await until(lambda: _limits_agree(h, station, 11_000.0), 60, "limits agree")
            limit_w = h.v20_limit_w
            assert limit_w is not None and limit_w >= 4_000, limit_w
            await until(lambda: 0.8 * limit_w <= station.evses[1].power_w <= limit_w + 1, 10,
                        "the EV draws at its target")

            # 4. a limit cut reaches the EV in the running charge loop; no renegotiation (6 kW: above
            # the EV's minimum, 6 A x 3 x 230 V; below it the csms rightly sends 0 A)
            await lp.set_limit(6.0)
            await until(lambda: _limits_agree(h, station, 6_000.0), 60, "the cut in ACChargeLoopRes")
            cut_w = h.v20_limit_w
            assert cut_w is not None and cut_w >= 4_140, cut_w
            await until(lambda: 0.8 * cut_w <= station.evses[1].power_w <= cut_w + 1, 10,
                        "the EV draws within the cut")
            assert h.renegotiations == 0 and h.renegotiations_requested == 0

            # 5. the EV stops: PowerDelivery Stop, SessionStop
            ended_before = sum(1 for _, k, _ in h.events if k == "session_ended")
            station.unplug(1)
            await until(lambda: sum(1 for _, k, _ in h.events if k == "session_ended")
                        > ended_before, 40, "SessionStop")
            stops = [d["charge_progress"] for _, k, d in h.events if k == "power_delivery"]
            assert stops[-1] == "Stop" and h.state == "idle" and not h.failed, (stops, h.state)
            assert len(h.errors) == h.restarts and all(e == DROPPED for e in h.errors), \
                (h.errors, h.restarts)
            print("figures:", {"v20_cycles": h.v20_cycles, "restarts": h.restarts, "limit_w": limit_w,
                               "needs_sent": h.needs_sent, "schedules_sent": h.schedules_sent})
        except BaseException:
            print_bridge_events(link.sessions.values())
            raise
        finally:
            await stop_station(station, runner, link)
