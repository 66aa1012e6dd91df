"""Property: a station's EVSEs never draw above their composite limit (nor the station max), no sockets."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from evse_sim.ev import Ev, EvSpec
from evse_sim.evse import EvseSpec
from evse_sim.smart_charging import ChargingProfile
from evse_sim.station import ConnectionConfig, SimStation, StationConfig
from tests.clocks import ManualClock

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def profile(
    pid: int, purpose: str, level: int, unit: str, periods: list[tuple[int, float]], start_offset_s: int
) -> dict[str, Any]:
    return {
        "id": pid,
        "stackLevel": level,
        "chargingProfilePurpose": purpose,
        "chargingProfileKind": "Absolute",
        "chargingSchedule": [
            {
                "id": pid,
                "chargingRateUnit": unit,
                "startSchedule": (T0 + timedelta(seconds=start_offset_s)).isoformat(),
                "chargingSchedulePeriod": [{"startPeriod": s, "limit": lim} for s, lim in periods],
            }
        ],
    }


@st.composite
def profile_sets(draw: st.DrawFn) -> list[tuple[int, dict[str, Any]]]:
    out = []
    for pid in range(1, draw(st.integers(1, 5)) + 1):
        purpose = draw(st.sampled_from(["TxDefaultProfile", "TxProfile", "ChargingStationMaxProfile"]))
        unit = draw(st.sampled_from(["A", "W"]))
        n = draw(st.integers(1, 4))
        starts = sorted(draw(st.sets(st.integers(60, 7200), min_size=n - 1, max_size=n - 1)))
        limits = draw(st.lists(st.floats(0, 32.0 if unit == "A" else 30_000.0), min_size=n, max_size=n))
        evse = 0 if purpose == "ChargingStationMaxProfile" else draw(st.sampled_from([1, 2]))
        if purpose == "TxDefaultProfile" and draw(st.booleans()):
            evse = 0
        out.append(
            (
                evse,
                profile(
                    pid,
                    purpose,
                    draw(st.integers(0, 2)),
                    unit,
                    list(zip([0, *starts], limits, strict=True)),
                    draw(st.integers(-3600, 3600)),
                ),
            )
        )
    return out


@settings(max_examples=60, deadline=None)
@given(profile_sets(), st.lists(st.integers(5, 900), min_size=1, max_size=12))
def test_drawn_power_never_exceeds_composite_or_station_max(
    profiles: list[tuple[int, dict[str, Any]]], steps_s: list[int]
) -> None:
    clock = ManualClock(T0)
    cfg = StationConfig("P-1", (EvseSpec.ac(22.0), EvseSpec.ac(11.0)))
    station = SimStation(cfg, ConnectionConfig("ws://127.0.0.1:9/ocpp"), clock, rng=random.Random(1))
    for evse_id in (1, 2):
        station.plug_in(
            evse_id, Ev(EvSpec(f"ev{evse_id}", "m", 60.0, 0.2, 1.0, 22.0, 50.0, T0, T0 + timedelta(days=1)))
        )
    for evse_id, data in profiles:
        station.profiles.set_profile(evse_id, ChargingProfile.from_ocpp(data), station.active_transactions())
    station.tick(clock.t)
    for dt in steps_s:
        offered = {i: e.offered_w for i, e in station.evses.items()}
        energy_before = {i: e.energy_wh for i, e in station.evses.items()}
        now = clock.t
        limits = {}
        for i, e in station.evses.items():
            assert e.tx is not None
            limits[i] = station.profiles.limit_w_at(
                i, now, e.spec.electrical, e.spec.max_power_w, e.tx.transaction_id, e.tx.started_at
            )[0]
            assert e.power_w <= limits[i] + 1e-6
            assert offered[i] <= limits[i] + 1e-6
        cap = station.profiles.station_cap_w_at(now, cfg.evses[0].electrical, cfg.hw_max_w)
        assert sum(offered.values()) <= cap + 1e-6
        clock.t += timedelta(seconds=dt)
        station.tick(clock.t)
        for i, e in station.evses.items():
            # energy over the step at most what the offered (<= composite) power allows
            assert e.energy_wh - energy_before[i] <= offered[i] * dt / 3600 + 1e-6
