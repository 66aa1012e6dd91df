"""Instance validation: clear errors that name the field."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from optimizer.problem import Instance, Schedule
from optimizer.solve import UnknownStrategyError, solve
from tests.optimizer.conftest import charger, ev, make_instance


def _error(**overrides: Any) -> str:
    with pytest.raises(ValidationError) as info:
        make_instance(**overrides)
    return str(info.value)


def test_departure_must_follow_arrival() -> None:
    """arrival >= departure is refused, naming both values."""
    msg = _error(chargers=[charger("c_a")], evs=[ev("a", arrival=2, departure=2)])
    assert "evs.0" in msg and "departure (2) must be after arrival (2)" in msg


def test_departure_beyond_horizon() -> None:
    """departure > steps is refused (departure == steps is fine)."""
    assert "beyond steps=2" in _error(chargers=[charger("c_a")], evs=[ev("a", departure=3)])
    make_instance(chargers=[charger("c_a")], evs=[ev("a", departure=2)])


def test_per_step_list_length() -> None:
    """A per-step list must have exactly `steps` values; the message names the field."""
    assert "tariff.import_price: has 3 values, expected steps=2" in _error(tariff={"import_price": [1, 2, 3]})
    assert "site.pv_kw: has 1 values" in _error(site={"import_limit_kw": 5, "pv_kw": [1]})


def test_unknown_charger_and_duplicates() -> None:
    """EVs must reference existing chargers; ids are unique."""
    assert "unknown charger id 'nope'" in _error(chargers=[charger("c")], evs=[ev("a", charger="nope")])
    assert "duplicate id 'c'" in _error(chargers=[charger("c"), charger("c")])
    assert "duplicate id 'a'" in _error(chargers=[charger("c_a")], evs=[ev("a"), ev("a")])


def test_energy_bounds() -> None:
    """The need must fit in the battery."""
    msg = _error(chargers=[charger("c_a")], evs=[ev("a", initial_kwh=45, energy_kwh=10, capacity_kwh=50)])
    assert "exceeds capacity_kwh" in msg


def test_overlapping_fixed_evs_on_one_charger() -> None:
    """Two EVs fixed to one charger at the same time is an error pointing at charger: null."""
    msg = _error(chargers=[charger("c")], evs=[ev("a", charger="c"), ev("b", charger="c", arrival=1)])
    assert "overlapping" in msg and "null" in msg


def test_unknown_fields_and_negative_limits() -> None:
    """Typos are refused (extra=forbid); negative site values too."""
    assert "extra" in _error(sitee={})
    assert "site.import_limit_kw: values must be >= 0" in _error(site={"import_limit_kw": [-1, 2]})


def test_json_round_trip_and_schedule_parse() -> None:
    """Instance and Schedule survive JSON both ways."""
    inst = make_instance(chargers=[charger("c_a")], evs=[ev("a", energy_kwh=5)])
    assert Instance.model_validate_json(inst.model_dump_json()) == inst
    sched = solve(inst, "cost")
    assert Schedule.model_validate_json(sched.model_dump_json()) == sched


def test_unknown_strategy_is_the_only_error() -> None:
    """solve() raises only for a name it does not know."""
    with pytest.raises(UnknownStrategyError, match="choose one of"):
        solve(make_instance(), "fastest")
