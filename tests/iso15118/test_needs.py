"""Needs semantics: a repeated ChargeParameterDiscoveryReq (departure drift, energy that is what is
left) is not a new request, in the station's SECC (modelled and real share `is_new_request`) and in
the csms (`is_repeated_request`); an unchanged TxProfile triggers no renegotiation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from csms.core.charging_needs import is_repeated_request
from evse_sim.iso15118.messages import (
    AcEvChargeParameter,
    ChargeParameterDiscoveryReq,
    EnergyTransferMode,
    EvNeeds,
    EvseNotification,
)
from evse_sim.iso15118.needs import NeedsReference, is_new_request
from evse_sim.iso15118.session import CsmsProfile, EvRenegotiate, Plugged
from tests.iso15118.test_model import NEEDS, T0, Link, tx_profile


def _req(departure_s: int | None, energy_wh: float, max_a: float = 16) -> ChargeParameterDiscoveryReq:
    return ChargeParameterDiscoveryReq(EnergyTransferMode.AC_THREE_PHASE,
                                       AcEvChargeParameter(departure_s, energy_wh, 400, max_a, 6), 24)


def test_drift_and_remainder_are_not_new_requests() -> None:
    ref = NeedsReference(_req(4 * 3600, 20_000), T0, meter_wh=1_000)
    # 10 min later: departure moved only by elapsed time, energy = what is left (3 kWh metered)
    assert not is_new_request(ref, _req(4 * 3600 - 600, 17_000), T0 + 600, meter_wh=4_000)
    # integer truncation and a lagging meter reading are tolerated
    assert not is_new_request(ref, _req(4 * 3600 - 601, 17_300), T0 + 600, meter_wh=4_000)
    # the plug-in amount again although 3 kWh were delivered: not what is left -> new request
    assert is_new_request(ref, _req(4 * 3600 - 600, 20_000), T0 + 600, meter_wh=4_000)
    # departure moved by 30 min, or the EV's limits changed: new request
    assert is_new_request(ref, _req(4 * 3600 + 1200, 17_000), T0 + 600, meter_wh=4_000)
    assert is_new_request(ref, _req(4 * 3600 - 600, 17_000, max_a=10), T0 + 600, meter_wh=4_000)
    # without a meter only an increase counts as new
    assert not is_new_request(NeedsReference(_req(None, 20_000), T0), _req(None, 15_000), T0 + 60)
    assert is_new_request(NeedsReference(_req(None, 20_000), T0), _req(None, 25_000), T0 + 60)
    assert is_new_request(None, _req(None, 1), T0)


def _record(departure: datetime, energy_wh: float, meter_wh: float | None, txid: str = "tx-1") -> dict:
    return {"transaction_id": txid, "departure_time": departure.isoformat(),
            "energy_amount_wh": energy_wh,
            "ev_min_current_a": 6.0, "ev_max_current_a": 16.0, "ev_max_power_w": None,
            "ev_max_voltage_v": 400.0, "max_schedule_tuples": 24,
            "requested_energy_transfer": "AC_three_phase",
            "meter_wh": meter_wh}


def test_csms_tells_a_repeated_request_from_a_new_one() -> None:
    dep = datetime(2026, 1, 5, 18, 0, tzinfo=UTC)
    stored = _record(dep, 20_000, 2_000)
    assert is_repeated_request(stored, _record(dep + timedelta(seconds=30), 20_000, 2_000), 2_000)
    assert is_repeated_request(stored, _record(dep, 15_000, 7_000), 7_000)  # what is left after 5 kWh
    assert not is_repeated_request(stored, _record(dep, 20_000, 7_000), 7_000)  # full amount again
    assert not is_repeated_request(stored, _record(dep + timedelta(hours=1), 15_000, 7_000), 7_000)
    assert not is_repeated_request(stored, _record(dep, 20_000, 2_000, txid="tx-2"), 2_000)
    assert not is_repeated_request(None, _record(dep, 20_000, 2_000), 2_000)


def test_modelled_secc_ignores_drift_on_renegotiation_and_reoffers_the_profile() -> None:
    link = Link()
    link.ev(Plugged(NEEDS))
    link.se(CsmsProfile(tx_profile(link.now, [11000] * 4)))
    link.advance(600)
    # the EV renegotiates with its needs as they are now: 10 min less, 0 kWh delivered (no meter here)
    link.ev(EvRenegotiate(EvNeeds(departure_time_s=4 * 3600 - 600, energy_wh=19_000, ev_max_current_a=16)))
    assert [k for k, _ in link.csms].count("needs") == 1  # no second NotifyEVChargingNeeds
    assert link.secc.needs_repeated == 1
    # answered at once with the current profile, not the default after a 1.5 s wait
    assert link.secc.offered_version == link.secc.profile_version
    assert link.evcc.state.value == "Charging"


def test_unchanged_profile_triggers_no_renegotiation_a_changed_one_does() -> None:
    link = Link()
    link.ev(Plugged(NEEDS))
    start = link.now
    link.se(CsmsProfile(tx_profile(start, [4000, 11000, 7000, 2000])))
    link.advance(30)
    link.se(CsmsProfile(tx_profile(start, [4000, 11000, 7000, 2000])))  # a re-send of the same limits
    link.advance(3)
    assert link.secc.renegotiations_requested == 0 and link.secc.renegotiations == 0
    link.se(CsmsProfile(tx_profile(start, [3000, 11000, 7000, 2000])))
    link.advance(3)
    statuses = [m for m in link.sent if type(m).__name__ == "ChargingStatusRes"]
    assert sum(s.evse_notification == EvseNotification.RE_NEGOTIATION for s in statuses) == 1
    assert link.secc.renegotiations_requested == 1 and link.secc.renegotiations == 1
