"""The ISO 15118 links inside a SimStation (no CSMS), and the bridge's pure conversions."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from evfleet.clock import RealClock
from evfleet.profile import ChargingProfile
from evse_sim.ev import Ev, EvSpec
from evse_sim.evse import EvseSpec
from evse_sim.iso15118.bridge import needs_from_josev, tuples_from_json, tuples_to_json
from evse_sim.iso15118.link import ModelledHlcLink
from evse_sim.iso15118.messages import (
    EnergyTransferMode,
    PMaxScheduleEntry,
    SalesTariff,
    SalesTariffEntry,
    SAScheduleTuple,
)
from evse_sim.iso15118.session import SeccState
from evse_sim.station import ConnectionConfig, SimStation, StationConfig
from tests.waiting import until


def _tariff_profile(now: datetime, tx_id: str) -> ChargingProfile:
    """A 11 kW TxProfile with hourly price levels 3, 1, 2, 3 (snake_case, as the ocpp library delivers)."""
    entries = [{"relative_time_interval": {"start": i * 3600}, "e_price_level": lvl}
               for i, lvl in enumerate([3, 1, 2, 3])]
    return ChargingProfile.from_ocpp({
        "id": 5, "stack_level": 1, "charging_profile_purpose": "TxProfile",
        "charging_profile_kind": "Absolute", "transaction_id": tx_id,
        "charging_schedule": [{"id": 4, "start_schedule": now.isoformat(), "charging_rate_unit": "W",
                               "charging_schedule_period": [{"start_period": 0, "limit": 11_000}],
                               "sales_tariff": {"id": 9, "num_e_price_levels": 3,
                                                "sales_tariff_entry": entries}}]})


async def test_modelled_link_in_station_default_then_tariff_renegotiation_and_ev_follows() -> None:
    clock = RealClock()
    link = ModelledHlcLink(schedule_wait_s=0.2, loop_interval_s=0.2)
    station = SimStation(StationConfig("LINK-1", (EvseSpec.ac(11.0),)),
                         ConnectionConfig("ws://127.0.0.1:9/ocpp"), clock, hlc=link)
    now = clock.now()
    ev = Ev(EvSpec("EV-L", "ID.3", 58.0, 0.6, 0.8, 11.0, 100.0, now, now + timedelta(hours=4), hlc=True))
    tx_id = station.plug_in(1, ev)
    hlc = link.sessions[1]
    await until(lambda: hlc.secc.state == SeccState.CHARGING, 3, "default schedule accepted")
    assert hlc.default_offers == 1
    assert station.evses[1].ev_limit_w is not None and station.evses[1].ev_limit_w > 10_000  # ASAP at max
    station.profile_accepted(1, _tariff_profile(clock.now(), tx_id))
    await until(lambda: hlc.renegotiations == 1 and hlc.secc.state == SeccState.CHARGING, 3, "renegotiated")
    offered = hlc.secc.offered[0]
    assert offered.sa_schedule_tuple_id == 4 and offered.sales_tariff is not None
    assert [e.e_price_level for e in offered.sales_tariff.entries] == [3, 1, 2, 3]
    plan = hlc.evcc.plan
    assert plan is not None
    # ~11.6 kWh still needed: the cheapest hour (level 1) first, the rest in the level-2 hour
    assert plan.profile[0].max_power_w == 0.0 and plan.profile[1].start_s in range(3590, 3601)
    await until(lambda: station.evses[1].ev_limit_w == 0.0, 2, "the EV waits for the cheap hour")
    station.unplug(1)
    await until(lambda: hlc.ended is not None and hlc.ended.ok, 2, "SessionStop")


def test_bridge_tuple_json_roundtrip_and_needs_mapping() -> None:
    tariff = SalesTariff(2, (SalesTariffEntry(0, 1), SalesTariffEntry(3600, 2, 5400, 0.31)), 2)
    pmax = (PMaxScheduleEntry(0, 4000.0), PMaxScheduleEntry(900, 7000.0, 8100))
    tuples = (SAScheduleTuple(3, pmax, tariff),)
    assert tuples_from_json(tuples_to_json(tuples)) == tuples
    req = needs_from_josev({"departure_time_s": 7200, "e_amount_wh": 12_000, "ev_max_current_a": 16,
                            "ev_min_current_a": 6, "ev_max_voltage_v": 400,
                            "energy_mode": "AC_single_phase_core", "max_entries": 12}, phases=3)
    assert req.requested_energy_transfer_mode == EnergyTransferMode.AC_SINGLE_PHASE
    assert req.ev_charge_parameter.departure_time_s == 7200 and req.max_entries_sa_schedule_tuple == 12


async def test_no_hlc_session_for_ev_without_hlc() -> None:
    link = ModelledHlcLink()
    station = SimStation(StationConfig("LINK-2", (EvseSpec.ac(11.0),)),
                         ConnectionConfig("ws://127.0.0.1:9/ocpp"), RealClock(), hlc=link)
    now = datetime.now(UTC)
    station.plug_in(1, Ev(EvSpec("EV-B", "Zoe", 52.0, 0.2, 0.8, 22.0, 0.0, now, now + timedelta(hours=2))))
    await asyncio.sleep(0.05)
    assert link.sessions == {} and station.evses[1].ev_limit_w is None


async def test_josev_link_dc_evse_announces_needs_instead_of_failing() -> None:
    """A DC EVSE behind JosevHlcLink: the bridge drives AC only, so the EV announces its (DC) needs
    like BasicHlc; before, on_plug_in raised KeyError('ac_charging_parameters')."""
    from ocpp.v201 import call

    from evse_sim.iso15118.link import JosevHlcLink

    clock = RealClock()
    cfg = StationConfig("DC-1", (EvseSpec.dc(50.0),), aligned_interval_s=0)
    station = SimStation(cfg, ConnectionConfig("ws://127.0.0.1:1/ocpp", password="x"), clock,
                         hlc=JosevHlcLink())
    now = clock.now()
    station.plug_in(1, Ev(EvSpec("EV-DC", "car", 60.0, 0.2, 0.8, 11.0, 50.0, now, now + timedelta(hours=2),
                                 hlc=True)))
    needs = [m.payload for m in station.core.outbox if type(m.payload) is call.NotifyEVChargingNeeds]
    assert len(needs) == 1 and needs[0].charging_needs["requested_energy_transfer"] == "DC"
    assert "dc_charging_parameters" in needs[0].charging_needs
