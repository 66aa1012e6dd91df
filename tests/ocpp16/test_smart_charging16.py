"""1.6 smart-charging rules (pure) and a mixed 1.6J / 2.0.1 site under its limit through re-plans."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from csms.protocol.v16.configuration import facts_from_configuration
from csms.protocol.v16.smart_charging import Facts16, merge_periods, profile_16
from evfleet.txprofile import value_at
from tests.loop.harness import closed_loop
from tests.ocpp16.harness import MAX_W, SiteMonitor, add_station16


def _profile(periods: list[tuple[int, float]], unit: str = "A") -> dict[str, object]:
    return {"evseId": 2, "chargingProfile": {
        "id": 7, "stackLevel": 1, "chargingProfilePurpose": "TxProfile", "chargingProfileKind": "Absolute",
        "transactionId": "42", "chargingSchedule": [{
            "id": 1, "startSchedule": "2026-12-06T00:00:00Z", "chargingRateUnit": unit,
            "chargingSchedulePeriod": [{"startPeriod": s, "limit": lim, "numberPhases": 3}
                                       for s, lim in periods]}]}}


def test_profile_16_shape_units_and_period_cap() -> None:
    out = profile_16(_profile([(0, 16.0), (900, 10.0), (1800, 12.0), (2700, 6.0)]),
                     Facts16(allowed_units=("W",), max_periods=2))
    assert out["connectorId"] == 2
    cp = out["csChargingProfiles"]
    assert cp["transactionId"] == 42 and cp["chargingProfileId"] == 7 and cp["stackLevel"] == 1
    sched = cp["chargingSchedule"]
    assert sched["chargingRateUnit"] == "W" and len(sched["chargingSchedulePeriod"]) == 2
    assert sched["chargingSchedulePeriod"][0] == {"startPeriod": 0, "limit": 6900.0, "numberPhases": 3}
    default = profile_16({**_profile([(0, 8.0)]), "chargingProfile": {
        **_profile([(0, 8.0)])["chargingProfile"], "chargingProfilePurpose": "ChargingStationMaxProfile",
        "transactionId": None}}, Facts16())
    assert default["csChargingProfiles"]["chargingProfilePurpose"] == "ChargePointMaxProfile"
    assert "transactionId" not in default["csChargingProfiles"]


@given(st.lists(st.tuples(st.integers(60, 1800), st.floats(0, 32)), min_size=1, max_size=40),
       st.integers(1, 10))
def test_merged_periods_never_exceed_the_profile(steps: list[tuple[int, float]], cap: int) -> None:
    starts, t = [], 0
    for dur, _ in steps:
        starts.append(t)
        t += dur
    periods = [{"startPeriod": s, "limit": round(lim, 1)} for s, (_, lim) in zip(starts, steps, strict=True)]
    merged = merge_periods(periods, cap)
    assert 1 <= len(merged) <= cap and merged[0]["startPeriod"] == 0
    before = [(int(p["startPeriod"]), float(p["limit"])) for p in periods]
    after = [(int(p["startPeriod"]), float(p["limit"])) for p in merged]
    for probe in range(0, t + 600, 30):
        assert value_at(after, probe) <= value_at(before, probe) + 1e-9


def test_configuration_facts() -> None:
    station, evse, n = facts_from_configuration([
        {"key": "SupportedFeatureProfiles", "value": "Core, RemoteTrigger"},
        {"key": "ChargingScheduleAllowedChargingRateUnit", "value": "Power"},
        {"key": "ChargingScheduleMaxPeriods", "value": "24"}, {"key": "NumberOfConnectors", "value": "2"}])
    assert evse == {"steerable": "0", "rate_unit": "W"} and n == 2
    assert station["ocpp16_max_periods"] == "24" and station["ocpp16_rate_units"] == "W"
    assert Facts16.from_station(station) == Facts16(allowed_units=("W",), max_periods=24)


async def test_mixed_site_of_16_and_201_stays_under_its_limit_through_replans(redis_url: str) -> None:
    async with closed_loop(redis_url, limit_kw=30.0, fallback_limit_kw=4.0) as lp:
        a = await lp.add_station("CP-201-A")
        b = await lp.add_station("CP-201-B")
        c = await add_station16(lp, "CP-16-C", max_periods=4)
        dumb = await add_station16(lp, "CP-16-D", smart_charging=False)
        monitor = SiteMonitor(lp)
        k = lp.keys

        async def unsteerable() -> bool:
            return await lp.redis.hget(k.station_evse("CP-16-D", 1), "steerable") == "0"

        await lp.wait_for(unsteerable, what="the 1.6 station without SmartCharging marked unsteerable")
        # fail-safe TxDefaultProfiles reach the smart stations of both versions before any session
        await lp.wait_for(lambda: a.defaults and b.defaults and c.defaults, what="default profiles")
        assert c.raw_profiles[-1]["csChargingProfiles"]["chargingProfilePurpose"] == "TxDefaultProfile"
        assert not dumb.raw_profiles
        await dumb.start_tx("TAG-D")
        lp.active["CP-16-D"] = True
        await a.start_tx("tx-a", token="TA")
        lp.active["CP-201-A"] = True
        await c.start_tx("TAG-C")
        lp.active["CP-16-C"] = True
        await b.start_tx("tx-b", token="TB")
        lp.active["CP-201-B"] = True
        # each 1.6 station's first transaction is its transactionId 1: two transactions, one id
        assert c.transaction_id == dumb.transaction_id == 1

        async def fixed_load() -> bool:
            plan = json.loads(await lp.redis.get(k.site_plan("depot")) or "{}")
            return bool(plan.get("fixed_load_kw", 0) >= MAX_W / 1000 - 0.01)

        await lp.wait_for(fixed_load, timeout=20, what="the plan budgets CP-16-D at its maximum")

        async def all_planned() -> bool:
            for sid in ("CP-201-A", "CP-201-B", "CP-16-C"):
                rec = json.loads(await lp.redis.get(k.applied_profile(sid, 1)) or "{}")
                if rec.get("kind") != "plan" or rec.get("status") != "Accepted":
                    return False
            return True

        await lp.wait_for(all_planned, timeout=20, what="plan profiles at the three smart stations")
        for limit_kw in (20.0, 26.0, 18.0):  # re-plans: down, up, down
            await lp.set_limit(limit_kw)

            async def replanned(limit_kw: float = limit_kw) -> bool:
                plan = json.loads(await lp.redis.get(k.site_plan("depot")) or "{}")
                return bool(plan.get("limit_kw") == limit_kw)

            await lp.wait_for(replanned, timeout=20, what=f"a plan for {limit_kw} kW")
            await asyncio.sleep(1.5)
            now = datetime.now(UTC)
            total = sum(cp.limit_w_at(now, lp.active[sid]) for sid, cp in lp.stations.items())
            assert total <= limit_kw * 1000 + 1, (limit_kw, total)
        monitor.stop()
        assert monitor.samples > 50 and monitor.violations == [], monitor.violations[:5]
        # the 1.6 station got integer transaction ids and never more periods than it allows
        assert all(len(p["csChargingProfiles"]["chargingSchedule"]["chargingSchedulePeriod"]) <= 4
                   for p in c.raw_profiles)
        assert dumb.limit_w_at(datetime.now(UTC)) == MAX_W  # never steered, counted at its maximum


def test_every_operator_api_call_reaches_a_16_station_as_a_valid_16_request() -> None:
    """The payloads the operator API sends (tests/api/test_actions.py) translate to valid 1.6 requests."""
    import pytest

    from csms.protocol.v16.commands import command_error_16, translate
    from csms.protocol.v16.schemas import check_schema_16
    from csms.protocol.v16.smart_charging import TranslationError
    from tests.api.test_actions import CASES, PROFILE

    station = {"ocpp16_rate_units": "A", "ocpp16_max_periods": "1"}
    seen = set()
    for _method, _path, _body, action, payload in CASES:
        if action == "RequestStopTransaction":  # 1.6 transaction ids are integers
            payload = {**payload, "transactionId": "12"}
        if action == "SetChargingProfile":
            payload = {**payload, "chargingProfile": {**payload["chargingProfile"], "transactionId": "12"}}
        assert command_error_16(action, payload) is None, (action, payload)
        tr = translate(action, payload, station)
        assert check_schema_16(tr.action, tr.payload) is None, (action, tr)
        seen.add(tr.action)
    assert seen == {"RemoteStartTransaction", "RemoteStopTransaction", "Reset", "ChangeAvailability",
                    "TriggerMessage", "SetChargingProfile", "ClearChargingProfile", "UnlockConnector"}
    # 1.6 resets the whole charge point only; a non-integer transaction id has no 1.6 meaning
    with pytest.raises(TranslationError):
        translate("Reset", {"type": "OnIdle", "evseId": 1}, station)
    with pytest.raises(TranslationError):
        translate("RequestStopTransaction", {"transactionId": "TX1"}, station)
    assert command_error_16("GetVariables", {"getVariableData": []}) is not None
    # a remote start with a TxProfile: the profile goes along in 1.6 shape, without a transaction id
    tx_profile = {k: v for k, v in PROFILE.items() if k != "transactionId"}
    start = translate("RequestStartTransaction", {"idToken": {"idToken": "T1", "type": "Central"},
                                                  "remoteStartId": 3, "evseId": 1,
                                                  "chargingProfile": tx_profile}, station)
    assert check_schema_16(start.action, start.payload) is None
    assert start.payload["chargingProfile"]["chargingProfilePurpose"] == "TxProfile"
    assert len(start.payload["chargingProfile"]["chargingSchedule"]["chargingSchedulePeriod"]) == 1
    assert start.payload["chargingProfile"]["chargingSchedule"]["chargingSchedulePeriod"][0]["limit"] == 8.0
