"""A station reports what the EV actually draws, and the chargingState a real station reports (no sockets)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from ocpp.v201 import call

from evse_sim.ev import Ev, EvSpec
from evse_sim.evse import EvseSpec
from evse_sim.smart_charging import ChargingProfile
from evse_sim.station import ConnectionConfig, SimStation, StationConfig
from tests.clocks import ManualClock

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def _station(*evses: EvseSpec) -> tuple[SimStation, ManualClock]:
    clock = ManualClock(T0)
    cfg = StationConfig("RP-1", tuple(evses), tx_updated_interval_s=60)
    return SimStation(cfg, ConnectionConfig("ws://127.0.0.1:9/ocpp"), clock, rng=random.Random(3)), clock


def _ev(ev_id: str, soc: float, target: float, capacity_kwh: float = 40.0, ac_kw: float = 11.0) -> Ev:
    return Ev(EvSpec(ev_id, "m", capacity_kwh, soc, target, ac_kw, 50.0, T0, T0 + timedelta(hours=10)))


def _tx_events(station: SimStation, evse_id: int) -> list[Any]:
    return [
        m.payload
        for m in station.core.outbox
        if type(m.payload) is call.TransactionEvent and m.payload.evse["id"] == evse_id
    ]


def _sample(payload: Any, measurand: str) -> float:
    for mv in payload.meter_value or []:
        for sv in mv["sampled_value"]:
            if sv["measurand"] == measurand:
                return float(sv["value"])
    raise AssertionError(f"no {measurand} in {payload}")


def _max_profile(limit_w: float) -> ChargingProfile:
    return ChargingProfile.from_ocpp(
        {
            "id": 7,
            "stackLevel": 0,
            "chargingProfilePurpose": "ChargingStationMaxProfile",
            "chargingProfileKind": "Absolute",
            "chargingSchedule": [
                {
                    "id": 7,
                    "chargingRateUnit": "W",
                    "startSchedule": T0.isoformat(),
                    "chargingSchedulePeriod": [{"startPeriod": 0, "limit": limit_w}],
                }
            ],
        }
    )


def test_full_ev_reports_zero_power_and_suspended_ev() -> None:
    station, clock = _station(EvseSpec.ac(11.0))
    # 40 kWh, 0.5 -> 0.55: 2 kWh into the battery, ~2.2 kWh from the grid: full after ~12 min at 11 kW
    station.plug_in(1, _ev("ev1", 0.5, 0.55))
    station.tick(clock.t)
    st = station.evses[1]
    assert st.power_w == 11_000.0
    assert st.tx is not None and st.tx.charging_state == "Charging"
    for _ in range(30):
        clock.t += timedelta(minutes=1)
        station.tick(clock.t)
    assert st.ev is not None and st.ev.full
    assert st.power_w == 0.0
    assert st.tx.charging_state == "SuspendedEV"
    energy = st.energy_wh
    assert 2100 < energy < 2300  # the register holds what the EV drew (2 kWh / 0.92)
    events = _tx_events(station, 1)
    changed = [e for e in events if e.trigger_reason == "ChargingStateChanged"]
    assert [e.transaction_info["charging_state"] for e in changed] == ["Charging", "SuspendedEV"]
    last = events[-1]
    assert _sample(last, "Power.Active.Import") == 0.0
    assert _sample(last, "Current.Import") == 0.0
    assert _sample(last, "Energy.Active.Import.Register") == round(energy, 1)
    clock.t += timedelta(minutes=10)
    station.tick(clock.t)
    assert st.energy_wh == energy  # a full EV draws nothing more
    assert st.tx.charging_state == "SuspendedEV"


def test_taper_reports_what_the_ev_draws() -> None:
    station, clock = _station(EvseSpec.ac(11.0))
    # the battery tapers from its 50 kW (DC) maximum above SoC 0.8: at 0.98 it accepts 50 * 0.02/0.2 = 5 kW
    station.plug_in(1, _ev("ev1", 0.98, 1.0))
    station.tick(clock.t)
    st = station.evses[1]
    assert st.offered_w == 11_000.0
    assert abs(st.power_w - 5_000.0) < 1.0
    assert st.tx is not None and st.tx.charging_state == "Charging"
    started = _tx_events(station, 1)[-1]
    assert abs(_sample(started, "Power.Active.Import") - 5_000.0) < 1.0
    assert abs(_sample(started, "Current.Import") - 5_000.0 / (3 * 230.0)) < 0.01


def test_zero_limit_suspends_evse_but_full_ev_stays_suspended_ev() -> None:
    station, clock = _station(EvseSpec.ac(11.0), EvseSpec.ac(11.0))
    station.plug_in(1, _ev("wants", 0.2, 0.8))
    station.plug_in(2, _ev("full", 0.8, 0.8))
    station.profiles.set_profile(0, _max_profile(0.0), station.active_transactions())
    station.tick(clock.t)
    one, two = station.evses[1], station.evses[2]
    assert one.tx is not None and one.tx.charging_state == "SuspendedEVSE"
    assert two.tx is not None and two.tx.charging_state == "SuspendedEV"
    assert one.power_w == two.power_w == 0.0


def test_station_cap_is_shared_by_what_evs_draw() -> None:
    station, clock = _station(EvseSpec.ac(11.0), EvseSpec.ac(11.0))
    station.plug_in(1, _ev("wants", 0.2, 0.8))
    station.plug_in(2, _ev("full", 0.8, 0.8))
    station.profiles.set_profile(0, _max_profile(11_000.0), station.active_transactions())
    station.tick(clock.t)
    # the full EV keeps no share of the 11 kW station cap: the EV that wants power gets all of it
    assert station.evses[1].power_w == 11_000.0
    assert station.evses[2].power_w == 0.0
    clock.t += timedelta(minutes=6)
    station.tick(clock.t)
    assert abs(station.evses[1].energy_wh - 1_100.0) < 1.0
