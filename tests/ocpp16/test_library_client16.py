"""A 1.6J charge point written with the `ocpp` library's v16 ChargePoint, against a real csms node,
Redis and optimizer worker: boot, configuration read, authorize, transaction with meter values,
a TxProfile from a plan, composite schedule, remote stop; StartTransaction replay."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from ocpp.v16 import call

from csms.api.views import station_view
from csms.store.provisioning import add_id_token
from tests.loop.harness import closed_loop, iso
from tests.ocpp16.harness import add_station16


async def test_v16_station_boots_transacts_gets_a_plan_profile_and_is_stopped_remotely(
        redis_url: str) -> None:
    async with closed_loop(redis_url, limit_kw=20.0) as lp:
        await add_id_token(lp.redis, lp.keys, "TAG-1")
        cp = await add_station16(lp, "V16-1", max_periods=3)
        k = lp.keys
        station = await lp.redis.hgetall(k.station("V16-1"))
        assert station["ocpp_version"] == "1.6"
        assert station_view("V16-1", station, [], "default")["ocpp_version"] == "1.6"  # what the API serves
        assert station["vendor"] == "Test" and station["model"] == "Loop16"
        # the configuration is read after the boot answer (not inside the handler)
        await lp.wait_for(lambda: cp.config_asked.is_set(), what="GetConfiguration after boot")
        await lp.wait_for(lambda: lp.redis.hget(k.station("V16-1"), "ocpp16_max_periods"),
                          what="configuration stored")
        station = await lp.redis.hgetall(k.station("V16-1"))
        assert station["ocpp16_rate_units"] == "A" and station["ocpp16_max_periods"] == "3"
        assert "SmartCharging" in station["ocpp16_feature_profiles"]
        # the EVSE facts are a second write after the station's (csms.protocol.v16.configuration)
        await lp.wait_for(lambda: lp.redis.hget(k.station_evse("V16-1", 1), "rate_unit"),
                          what="EVSE facts stored")
        assert await lp.redis.hget(k.station_evse("V16-1", 1), "rate_unit") == "A"
        for tag, status in (("TAG-1", "Accepted"), ("NOPE", "Invalid")):
            assert (await cp.call(call.Authorize(id_tag=tag), suppress=False)).id_tag_info["status"] == status
        connectors = await lp.redis.hgetall(k.station_connectors("V16-1"))
        assert json.loads(connectors["1/1"])["status"] == "Available"

        txid = await cp.start_tx("TAG-1", meter_start=1000)
        lp.active["V16-1"] = True
        assert txid >= 1
        tx = await lp.redis.hgetall(k.transaction(f"V16-1:{txid}"))
        assert tx["station_id"] == "V16-1" and tx["evse_id"] == "1" and tx["id_token"] == "TAG-1"
        assert tx["state"] == "Updated" and float(tx["energy_wh"]) == 1000.0
        assert tx["charging_state"] == "Charging"  # from StatusNotification Charging
        assert await lp.redis.hget(k.station_evse("V16-1", 1), "transaction_id") == str(txid)
        connectors = await lp.redis.hgetall(k.station_connectors("V16-1"))
        assert json.loads(connectors["1/1"])["status"] == "Occupied"
        # a resent StartTransaction (answer lost) gets the same id; nothing stored twice
        events_before = await lp.redis.llen(k.transaction_events(f"V16-1:{txid}"))
        again = await cp.call(cp.start_request, suppress=False)
        assert again.transaction_id == txid
        assert await lp.redis.llen(k.transaction_events(f"V16-1:{txid}")) == events_before
        starts = [json.loads(e) for e in await lp.redis.lrange(k.transaction_events(f"V16-1:{txid}"), 0, -1)]
        assert sum(1 for e in starts if "meterStart" in e) == 1
        await cp.call(call.MeterValues(connector_id=1, transaction_id=txid, meter_value=[{
            "timestamp": iso(datetime.now(UTC)), "sampled_value": [
                {"value": "2.5", "measurand": "Energy.Active.Import.Register", "unit": "kWh"},
                {"value": "7000", "measurand": "Power.Active.Import", "unit": "W"}]}]), suppress=False)
        tx = await lp.redis.hgetall(k.transaction(f"V16-1:{txid}"))
        assert float(tx["energy_wh"]) == 2500.0 and float(tx["power_w"]) == 7000.0
        # the car stops drawing (full): the transaction's charging state follows the connector status
        await cp.call(call.StatusNotification(connector_id=1, error_code="NoError", status="SuspendedEV",
                                              timestamp=iso(datetime.now(UTC))), suppress=False)
        assert await lp.redis.hget(k.transaction(f"V16-1:{txid}"), "charging_state") == "SuspendedEV"
        await cp.call(call.StatusNotification(connector_id=1, error_code="NoError", status="Charging",
                                              timestamp=iso(datetime.now(UTC))), suppress=False)
        assert await lp.redis.hget(k.transaction(f"V16-1:{txid}"), "charging_state") == "Charging"
        assert await lp.redis.llen(k.transaction_meter(f"V16-1:{txid}")) >= 1

        # the optimizer plans the session (no needs from a 1.6 car: forecast/defaults) and the csms
        # sends the plan as a 1.6 TxProfile: integer transactionId, A, at most ChargingScheduleMaxPeriods
        async def plan_applied() -> bool:
            rec = json.loads(await lp.redis.get(k.applied_profile("V16-1", 1)) or "{}")
            return rec.get("kind") == "plan" and rec.get("status") == "Accepted"

        await lp.wait_for(plan_applied, timeout=20, what="a plan profile accepted by the 1.6 station")
        sent = cp.raw_profiles[-1]
        prof = sent["csChargingProfiles"]
        assert sent["connectorId"] == 1 and prof["chargingProfilePurpose"] == "TxProfile"
        assert prof["transactionId"] == txid and prof["chargingSchedule"]["chargingRateUnit"] == "A"
        assert 1 <= len(prof["chargingSchedule"]["chargingSchedulePeriod"]) <= 3
        assert lp.violations == [] and lp.max_sum_w <= 20_000 + 1
        # a 1.6 car gives no needs: the plan says how departure and energy were estimated
        sched = json.loads(await lp.redis.get(k.planned_schedule("V16-1", 1)) or "{}")
        assert sched["note"].startswith("departure=") and "needs" not in sched["note"], sched["note"]

        # GetCompositeSchedule through the command protocol, in the 2.0.1 shape the csms uses
        reply = await lp.node.commands.call("V16-1", "GetCompositeSchedule", {"duration": 3600, "evseId": 1})
        assert reply.ok and reply.payload is not None and reply.payload["status"] == "Accepted"
        assert reply.payload["schedule"]["evseId"] == 1
        assert reply.payload["schedule"]["chargingSchedulePeriod"] == [
            {"startPeriod": p["startPeriod"], "limit": float(p["limit"])}
            for p in prof["chargingSchedule"]["chargingSchedulePeriod"]]

        # remote stop (1.6 action by name): the station stops with transactionData
        reply = await lp.node.commands.call("V16-1", "RemoteStopTransaction", {"transactionId": txid})
        assert reply.ok and reply.payload == {"status": "Accepted"}

        async def ended() -> bool:
            return await lp.redis.hget(k.transaction(f"V16-1:{txid}"), "state") == "Ended"

        await lp.wait_for(ended, what="the transaction ended")
        lp.active["V16-1"] = False
        tx = await lp.redis.hgetall(k.transaction(f"V16-1:{txid}"))
        assert tx["stopped_reason"] == "Remote"
        assert float(tx["energy_wh"]) == 5000.0 and float(tx["soc"]) == 55
        assert await lp.redis.hget(k.station_evse("V16-1", 1), "transaction_id") == ""
        assert f"V16-1:{txid}" not in (await lp.redis.smembers(k.transactions_active()))
        # a new transaction gets a new id (never reused)
        assert await cp.start_tx("TAG-1") == txid + 1
