"""The decode memo (`csms.smart_charging.decoding`) carries each EVSE's EV caps (`evse.ev_caps_w`)
from one whole-site read to the next, and never past a change of what they derive from."""

from __future__ import annotations

from csms.smart_charging.decoding import DecodeMemo, decode_all
from csms.smart_charging.evse import ev_caps_w
from evfleet.keys import tx_ref
from evfleet.store.port import StoredEvse

REF = tx_ref("CP-1", "tx-1")


def _record(max_power_w: str = "22000", needs: dict[str, object] | None = None) -> StoredEvse:
    evse = {"max_power_w": max_power_w, "phases": "3", "voltage_v": "230", "tx_ref": REF,
            "transaction_id": "tx-1", "default_limit_w": "0.0"}
    return StoredEvse("CP-1", 1, {"online": "1"}, evse, None, needs)


def _needs(max_a: float, min_a: float = 6.0) -> dict[str, object]:
    return {"tx_ref": REF, "ev_max_current_a": max_a, "ev_min_current_a": min_a}


async def test_an_unchanged_record_carries_its_caps_and_a_changed_one_gets_them_anew() -> None:
    memo: DecodeMemo = {}
    first = (await decode_all([_record(needs=_needs(16.0))], memo))["CP-1/1"]
    assert first.caps_w is not None  # computed when decoded (fails if hits recompute them)
    assert ev_caps_w(first) == (16.0 * 690.0, 6.0 * 690.0)
    again = (await decode_all([_record(needs=_needs(16.0))], memo))["CP-1/1"]
    assert again is not first and again.caps_w == first.caps_w
    # the EV lowers its maximum: the next read sees the new cap, not the memo's
    lower = (await decode_all([_record(needs=_needs(10.0))], memo))["CP-1/1"]
    assert ev_caps_w(lower) == (10.0 * 690.0, 6.0 * 690.0)
    # the EVSE's own maximum (device model) drops below the EV's: the EVSE's counts
    small = (await decode_all([_record("4000", needs=_needs(10.0))], memo))["CP-1/1"]
    assert ev_caps_w(small) == (4000.0, 6.0 * 690.0)
    # needs of another session (the EV left, a new one came without needs): the EVSE's maximum
    other = {"tx_ref": tx_ref("CP-1", "tx-0"), "ev_max_current_a": 8.0}
    assert ev_caps_w((await decode_all([_record(needs=other)], memo))["CP-1/1"]) == (22000.0, 0.0)


async def test_a_caller_that_changes_its_copy_leaves_the_memo_alone() -> None:
    memo: DecodeMemo = {}
    info = (await decode_all([_record(needs=_needs(16.0))], memo))["CP-1/1"]
    info.caps_w, info.steerable = (1.0, 0.0), False
    again = (await decode_all([_record(needs=_needs(16.0))], memo))["CP-1/1"]
    assert again.caps_w == (16.0 * 690.0, 6.0 * 690.0) and again.steerable is True
