"""NotifyReport EVSE facts: a DC EVSE (OCPP 2.0.1 `EVSE.SupplyPhases` 0) gets its profiles in W."""

from __future__ import annotations

from typing import Any

from csms.protocol.provisioning import evse_facts_from_report
from csms.smart_charging.evse import dc_session
from evfleet.records import EvseRecord


def _item(evse_id: int, name: str, actual: str, **chars: Any) -> dict[str, Any]:
    return {"component": {"name": "EVSE", "evse": {"id": evse_id}}, "variable": {"name": name},
            "variableAttribute": [{"type": "Actual", "value": actual}],
            "variableCharacteristics": {"dataType": "integer", "supportsMonitoring": False, **chars}}


def test_dc_evse_gets_watts_ac_evse_keeps_its_phases_and_amperes() -> None:
    facts = evse_facts_from_report([_item(1, "SupplyPhases", "3"), _item(2, "SupplyPhases", "0"),
                                    _item(2, "Power", "0", maxLimit=50000)])
    assert facts[1] == {"phases": "3"}
    assert facts[2] == {"phases": "1", "rate_unit": "W", "max_power_w": "50000.0"}
    ac, dc = EvseRecord.decode(facts[1]), EvseRecord.decode(facts[2])
    assert (ac.rate_unit, ac.phases) == ("A", 3)
    assert (dc.rate_unit, dc.phases, dc.max_power_w) == ("W", 1, 50000.0)


def test_a_dc_session_gets_watts_even_before_the_device_model_is_known() -> None:
    needs = {"tx_ref": "CP-1:tx-1:1", "requested_energy_transfer": "DC", "ev_max_power_w": 50000}
    assert dc_session(needs, "CP-1:tx-1:1")
    assert not dc_session(needs, "CP-1:tx-2:1")  # an earlier session's needs do not count
    assert not dc_session({**needs, "requested_energy_transfer": "AC_three_phase"}, "CP-1:tx-1:1")
    assert not dc_session(None, "CP-1:tx-1:1") and not dc_session(needs, "")


def test_values_no_evse_can_have_are_passed_over_and_the_rest_of_the_report_counts() -> None:
    """One EVSE's impossible figures never reach the budget (NaN/inf watts, negative or 7 phases)
    nor stop the report: the EVSE keeps the defaults, the others get their facts."""
    facts = evse_facts_from_report([
        _item(1, "SupplyPhases", "inf"), _item(1, "Power", "0", maxLimit=float("nan")),
        _item(2, "SupplyPhases", "-3"), _item(2, "Power", "0", maxLimit=-11000),
        _item(3, "SupplyPhases", "7"), _item(3, "Power", "0", maxLimit=float("inf")),
        _item(4, "SupplyPhases", "abc"), _item(4, "Power", "0", maxLimit=0),
        _item(5, "SupplyPhases", "1"), _item(5, "Power", "0", maxLimit=7400),
    ])
    assert facts == {5: {"phases": "1", "max_power_w": "7400.0"}}
    assert EvseRecord.decode({}).phases == 3  # what 1-4 keep
