"""Messages from a station, end to end: real WebSocket client -> csms -> real Redis."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis

from csms.app import CsmsNode, running_csms
from csms.store.provisioning import add_id_token
from evfleet.isotime import parse_iso
from evfleet.keys import Keys
from evfleet.store.client import as_str
from tests.csms.conftest import PASSWORD, make_settings
from tests.csms.helpers import RawStation, stream_events, wait_for

NOW = "2026-01-01T08:00:00+00:00"


def tx_event(event_type: str, seq: int, txid: str = "tx-1", ts: str = "2026-01-01T08:00:00Z",
             offline: bool = False, energy_kwh: float | None = None, power_w: float | None = None,
             **extra: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "eventType": event_type, "timestamp": ts, "seqNo": seq,
        "triggerReason": {"Started": "CablePluggedIn", "Updated": "MeterValuePeriodic",
                          "Ended": "EVCommunicationLost"}[event_type],
        "transactionInfo": {"transactionId": txid},
        "evse": {"id": 1, "connectorId": 1},
    }
    if offline:
        payload["offline"] = True
    sampled = []
    if energy_kwh is not None:
        sampled.append({"value": energy_kwh, "measurand": "Energy.Active.Import.Register",
                        "unitOfMeasure": {"unit": "kWh"}})
    if power_w is not None:
        sampled.append({"value": power_w, "measurand": "Power.Active.Import", "unitOfMeasure": {"unit": "W"}})
    if sampled:
        payload["meterValue"] = [{"timestamp": ts, "sampledValue": sampled}]
    payload.update(extra)
    return payload


async def test_boot_stores_facts_and_answers_interval(station: RawStation, redis: Redis) -> None:
    reply = await station.ok("BootNotification", {"reason": "RemoteReset", "chargingStation": {
        "model": "AC22", "vendorName": "Acme", "serialNumber": "SN1", "firmwareVersion": "1.2.3"}})
    assert reply["status"] == "Accepted" and reply["interval"] == 60 and "currentTime" in reply
    info = await redis.hgetall("evfleet:station:CP-1")
    assert (info["vendor"], info["model"], info["serial_number"], info["firmware_version"]) == \
        ("Acme", "AC22", "SN1", "1.2.3")
    assert info["boot_reason"] == "RemoteReset" and info["online"] == "1" and info["node"] == "test-node"
    assert info["heartbeat_interval_s"] == "60" and info["site_id"] == "depot"
    booted = await stream_events(redis, {"station.booted"})
    assert booted[-1]["station_id"] == "CP-1" and booted[-1]["site_id"] == "depot"
    assert booted[-1]["data"]["vendor"] == "Acme"


async def test_heartbeat_updates_last_seen(station: RawStation, redis: Redis) -> None:
    await redis.hset("evfleet:station:CP-1", "last_seen", "old")
    reply = await station.ok("Heartbeat", {})
    assert reply["currentTime"]
    assert (await redis.hget("evfleet:station:CP-1", "last_seen")) != "old"


async def test_status_notification_stored(station: RawStation, redis: Redis) -> None:
    assert await station.ok("StatusNotification", {"timestamp": NOW, "connectorStatus": "Occupied",
                                                   "evseId": 1, "connectorId": 1}) == {}
    stored = json.loads(as_str(await redis.hget("evfleet:station:CP-1:connectors", "1/1")))
    assert stored["status"] == "Occupied" and stored["updated_at"]
    assert await redis.hget("evfleet:station:CP-1:evse:1", "transaction_id") == ""
    ev = (await stream_events(redis, {"connector.status"}))[-1]
    assert ev["evse_id"] == "1" and ev["data"]["status"] == "Occupied"


async def test_authorize_known_unknown_blocked(station: RawStation, redis: Redis, keys: Keys) -> None:
    await add_id_token(redis, keys, "CARD-1")
    await add_id_token(redis, keys, "CARD-2", status="Blocked")
    tok = {"type": "ISO14443"}
    assert (await station.ok("Authorize", {"idToken": {"idToken": "CARD-1", **tok}}))["idTokenInfo"] == \
        {"status": "Accepted"}
    assert (await station.ok("Authorize", {"idToken": {"idToken": "CARD-2", **tok}}))["idTokenInfo"][
        "status"] == "Blocked"
    assert (await station.ok("Authorize", {"idToken": {"idToken": "NOPE", **tok}}))["idTokenInfo"][
        "status"] == "Unknown"
    # a card known under another type is still accepted (real chargers mix types)
    assert (await station.ok("Authorize", {"idToken": {"idToken": "CARD-1", "type": "Local"}}))[
        "idTokenInfo"]["status"] == "Accepted"
    events = await stream_events(redis, {"authorization"})
    assert [e["data"]["status"] for e in events] == ["Accepted", "Blocked", "Unknown", "Accepted"]


async def test_authorize_accept_all(redis_url: str, provision: Callable[..., Awaitable[None]]) -> None:
    async with running_csms(make_settings(redis_url, accept_all_tokens=True), services=[]) as node:
        await provision("CP-2")
        st = await RawStation.connect(node.url, "CP-2", PASSWORD)
        reply = await st.ok("Authorize", {"idToken": {"idToken": "ANY", "type": "ISO14443"}})
        assert reply["idTokenInfo"]["status"] == "Accepted"
        await st.close()


async def test_full_transaction_with_replays_offline_and_double_end(station: RawStation, redis: Redis,
                                                                   keys: Keys) -> None:
    await add_id_token(redis, keys, "CARD-1")
    started = tx_event("Started", 0, energy_kwh=1.0, idToken={"idToken": "CARD-1", "type": "ISO14443"},
                       transactionInfo={"transactionId": "tx-1", "chargingState": "Charging"})
    reply = await station.ok("TransactionEvent", started)
    assert reply["idTokenInfo"]["status"] == "Accepted"
    assert await redis.hget("evfleet:station:CP-1:evse:1", "transaction_id") == "tx-1"
    assert await redis.sismember("evfleet:tx:active", "CP-1:tx-1")
    # replay of the Started: answered, not re-applied
    assert (await station.ok("TransactionEvent", started))["idTokenInfo"]["status"] == "Accepted"
    await station.ok("TransactionEvent", tx_event("Updated", 1, ts="2026-01-01T08:10:00Z",
                                                  energy_kwh=2.5, power_w=7200))
    # an event the station queued while offline, delivered late (older timestamp)
    await station.ok("TransactionEvent", tx_event("Updated", 2, ts="2026-01-01T08:20:00Z", offline=True,
                                                  energy_kwh=4.0, power_w=7000))
    await station.ok("TransactionEvent", tx_event("Updated", 2, ts="2026-01-01T08:20:00Z", offline=True,
                                                  energy_kwh=4.0))  # replay of the offline one
    ended = tx_event("Ended", 3, ts="2026-01-01T08:30:00Z", energy_kwh=5.0,
                     transactionInfo={"transactionId": "tx-1", "stoppedReason": "EVDisconnected"})
    await station.ok("TransactionEvent", ended)
    await station.ok("TransactionEvent", ended)  # replay
    await station.ok("TransactionEvent", {**ended, "seqNo": 4})  # chargers that send Ended twice
    tx = await redis.hgetall("evfleet:tx:CP-1:tx-1")
    assert tx["state"] == "Ended" and tx["stopped_reason"] == "EVDisconnected"
    assert tx["energy_wh"] == "5000.0" and tx["power_w"] == "7000.0" and tx["id_token"] == "CARD-1"
    assert tx["offline_events"] == "1" and tx["last_seq_no"] == "4" and tx["station_id"] == "CP-1"
    assert tx["started_at"] == "2026-01-01T08:00:00+00:00" and tx["ended_at"] == "2026-01-01T08:30:00+00:00"
    assert await redis.smembers("evfleet:tx:CP-1:tx-1:seqnos") == {
        "0:Started", "1:Updated", "2:Updated", "3:Ended", "4:Ended"}
    stored = [json.loads(e) for e in await redis.lrange("evfleet:tx:CP-1:tx-1:events", 0, -1)]
    assert [e["seqNo"] for e in stored] == [0, 1, 2, 3, 4]
    meter = [json.loads(m) for m in await redis.lrange("evfleet:tx:CP-1:tx-1:meter", 0, -1)]
    assert [m["energy_wh"] for m in meter] == [1000.0, 2500.0, 4000.0, 5000.0, 5000.0]
    assert not await redis.sismember("evfleet:tx:active", "CP-1:tx-1")
    assert await redis.zscore("evfleet:tx:by-start", "CP-1:tx-1") is not None
    evse = await redis.hgetall("evfleet:station:CP-1:evse:1")
    assert evse["transaction_id"] == "" and evse["last_transaction_id"] == "tx-1"
    types = [e["type"] for e in await stream_events(redis, {"tx.started", "tx.updated", "tx.ended"})]
    assert types.count("tx.started") == 1 and types.count("tx.ended") == 1
    ended_ev = (await stream_events(redis, {"tx.ended"}))[0]
    assert ended_ev["transaction_id"] == "tx-1" and ended_ev["evse_id"] == "1"
    assert ended_ev["data"]["energy_wh"] == 5000.0


async def test_meter_values_go_to_the_active_transaction(station: RawStation, redis: Redis) -> None:
    await station.ok("TransactionEvent", tx_event("Started", 0, txid="tx-m"))
    await station.ok("MeterValues", {"evseId": 1, "meterValue": [{"timestamp": NOW, "sampledValue": [
        {"value": 3.3, "measurand": "Energy.Active.Import.Register", "unitOfMeasure": {"unit": "kWh"}},
        {"value": 11, "measurand": "Power.Active.Import", "unitOfMeasure": {"unit": "kW"}},
        {"value": 230, "measurand": "Voltage"}]}]})
    tx = await redis.hgetall("evfleet:tx:CP-1:tx-m")
    assert tx["energy_wh"] == "3300.0" and tx["power_w"] == "11000.0"
    assert parse_iso(tx["metered_at"]) == parse_iso(NOW)  # when they were read: the optimizer plans from now
    # a TransactionEvent's meter values carry their own reading time too
    await station.ok("TransactionEvent", tx_event("Updated", 1, txid="tx-m", ts="2026-01-01T08:05:00Z",
                                                  energy_kwh=4.0, power_w=9000.0))
    tx = await redis.hgetall("evfleet:tx:CP-1:tx-m")
    assert tx["energy_wh"] == "4000.0" and parse_iso(tx["metered_at"]) == parse_iso("2026-01-01T08:05:00Z")
    assert await redis.hget("evfleet:station:CP-1:evse:1", "voltage_v") == "230.0"
    ev = (await stream_events(redis, {"meter.values"}))[-1]
    assert ev["transaction_id"] == "tx-m" and ev["data"]["power_w"] == 11000.0


NEEDS = {"evseId": 1, "maxScheduleTuples": 24, "chargingNeeds": {
    "requestedEnergyTransfer": "AC_three_phase", "departureTime": "2026-01-01T17:00:00Z",
    "acChargingParameters": {"energyAmount": 30000, "evMinCurrent": 6, "evMaxCurrent": 32,
                             "evMaxVoltage": 400}}}


async def test_charging_needs_rejected_without_transaction(station: RawStation, redis: Redis) -> None:
    reply = await station.ok("NotifyEVChargingNeeds", NEEDS)
    assert reply["status"] == "Rejected"
    assert await redis.get("evfleet:needs:CP-1:1") is None


async def test_charging_needs_stored_processing_when_smart_charging(station: RawStation,
                                                                    redis: Redis) -> None:
    await station.ok("TransactionEvent", tx_event("Started", 0, txid="tx-n"))
    reply = await station.ok("NotifyEVChargingNeeds", NEEDS)
    assert reply["status"] == "Processing"
    needs = json.loads(as_str(await redis.get("evfleet:needs:CP-1:1")))
    assert needs["transaction_id"] == "tx-n" and needs["energy_amount_wh"] == 30000
    assert needs["ev_min_current_a"] == 6 and needs["ev_max_current_a"] == 32
    assert needs["ev_max_voltage_v"] == 400 and needs["max_schedule_tuples"] == 24
    assert needs["departure_time"] == "2026-01-01T17:00:00Z"
    assert needs["requested_energy_transfer"] == "AC_three_phase" and needs["raw"] == NEEDS
    ev = (await stream_events(redis, {"ev.charging_needs"}))[-1]
    assert ev["transaction_id"] == "tx-n" and ev["data"]["energy_amount_wh"] == 30000


async def test_charging_needs_accepted_without_smart_charging(
        redis_url: str, redis: Redis, provision: Callable[..., Awaitable[None]]) -> None:
    async with running_csms(make_settings(redis_url, smart_charging=False), services=[]) as node:
        await provision("CP-3")
        st = await RawStation.connect(node.url, "CP-3", PASSWORD)
        await st.ok("TransactionEvent", tx_event("Started", 0, txid="tx-a"))
        assert (await st.ok("NotifyEVChargingNeeds", NEEDS))["status"] == "Accepted"
        assert json.loads(as_str(await redis.get("evfleet:needs:CP-3:1")))["transaction_id"] == "tx-a"
        await st.close()


async def test_ev_schedule_stored(station: RawStation, redis: Redis) -> None:
    await station.ok("TransactionEvent", tx_event("Started", 0, txid="tx-s"))
    schedule = {"id": 1, "chargingRateUnit": "W", "chargingSchedulePeriod": [
        {"startPeriod": 0, "limit": 11000}, {"startPeriod": 3600, "limit": 7000}]}
    reply = await station.ok("NotifyEVChargingSchedule", {"timeBase": NOW, "evseId": 1,
                                                          "chargingSchedule": schedule})
    assert reply["status"] == "Accepted"
    stored = json.loads(as_str(await redis.get("evfleet:ev-schedule:CP-1:1")))
    assert stored["schedule"] == schedule and stored["transaction_id"] == "tx-s"
    assert stored["time_base"] == NOW and stored["within_limits"] is None
    assert (await stream_events(redis, {"ev.charging_schedule"}))[-1]["data"]["schedule"] == schedule


async def test_notify_report_records_evse_power_and_phases(station: RawStation, redis: Redis) -> None:
    await station.ok("NotifyReport", {"requestId": 1, "generatedAt": NOW, "seqNo": 0, "reportData": [
        {"component": {"name": "EVSE", "evse": {"id": 1}}, "variable": {"name": "Power"},
         "variableAttribute": [{"type": "Actual", "value": "0"}],
         "variableCharacteristics": {"dataType": "decimal", "maxLimit": 22000, "supportsMonitoring": False}},
        {"component": {"name": "EVSE", "evse": {"id": 1}}, "variable": {"name": "SupplyPhases"},
         "variableAttribute": [{"type": "Actual", "value": "3"}]}]})
    evse = await redis.hgetall("evfleet:station:CP-1:evse:1")
    assert evse["max_power_w"] == "22000.0" and evse["phases"] == "3"
    assert (await stream_events(redis, {"report"}))[-1]["data"]["request_id"] == 1


async def test_other_notifications_become_events(station: RawStation, redis: Redis) -> None:
    await station.ok("SecurityEventNotification", {"type": "FirmwareUpdated", "timestamp": NOW})
    await station.ok("FirmwareStatusNotification", {"status": "Installed", "requestId": 3})
    await station.ok("LogStatusNotification", {"status": "Uploaded", "requestId": 4})
    await station.ok("ReportChargingProfiles", {"requestId": 5, "chargingLimitSource": "CSO", "evseId": 1,
                                                "chargingProfile": [{
                                                    "id": 1, "stackLevel": 0,
                                                    "chargingProfilePurpose": "TxDefaultProfile",
                                                    "chargingProfileKind": "Relative", "chargingSchedule": [{
                                                        "id": 1, "chargingRateUnit": "A",
                                                        "chargingSchedulePeriod": [
                                                            {"startPeriod": 0, "limit": 16}]}]}]})
    dt = await station.ok("DataTransfer", {"vendorId": "com.acme", "messageId": "x", "data": "hello"})
    assert dt["status"] == "UnknownVendorId"
    types = [e["type"] for e in await stream_events(redis)]
    for t in ("security.event", "firmware.status", "log.status", "profile.reported", "data_transfer"):
        assert t in types, t
    assert await redis.hget("evfleet:station:CP-1", "firmware_status") == "Installed"


async def test_connect_and_disconnect_mark_online(node: CsmsNode, redis: Redis,
                                                  provision: Callable[..., Awaitable[None]]) -> None:
    await provision("CP-4")
    st = await RawStation.connect(node.url, "CP-4", PASSWORD)
    await st.ok("Heartbeat", {})
    assert await redis.hget("evfleet:station:CP-4", "online") == "1"
    await st.close()

    async def offline() -> bool:
        return await redis.hget("evfleet:station:CP-4", "online") == "0"

    await wait_for(offline, timeout=10.0)  # the csms handles the close a moment after the station's side
    assert await redis.hget("evfleet:station:CP-4", "online") == "0"
    types = [e["type"] for e in await stream_events(redis) if e["station_id"] == "CP-4"]
    assert types[0] == "station.connected" and types[-1] == "station.disconnected"


async def test_start_on_an_evse_with_a_stale_transaction_ends_the_stale_one(
        station: RawStation, redis: Any) -> None:
    await station.ok("TransactionEvent", tx_event("Started", 0, txid="old", energy_kwh=1.0, idToken={
        "idToken": "CARD-1", "type": "ISO14443"}))
    assert await redis.sismember("evfleet:tx:active", "CP-1:old")
    # the station lost "old"'s Ended (e.g. reboot) and starts a new transaction on the same EVSE
    await station.ok("TransactionEvent", tx_event("Started", 0, txid="new", ts="2026-01-01T09:00:00Z"))
    assert set(await redis.smembers("evfleet:tx:active")) == {"CP-1:new"}
    old = await redis.hgetall("evfleet:tx:CP-1:old")
    assert old["state"] == "Ended" and old["stopped_reason"] == "Other"
    assert old["superseded_by"] == "new" and old["ended_at"].startswith("2026-01-01T09:00:00")
    evse = await redis.hgetall("evfleet:station:CP-1:evse:1")
    assert evse["transaction_id"] == "new" and evse["last_transaction_id"] == "old"
    entries = [f for _, f in await redis.xrange("evfleet:events") if f["type"].startswith("tx.")]
    seq = [(f["type"], f["transaction_id"]) for f in entries]
    assert seq == [("tx.started", "old"), ("tx.ended", "old"), ("tx.started", "new")]
    ended = json.loads(entries[1]["data"])
    assert ended["superseded"] is True and ended["superseded_by"] == "new"
    assert ended["stopped_reason"] == "Other" and ended["state"] == "Ended" and ended["energy_wh"] == 1000.0
    assert entries[1]["evse_id"] == "1" and entries[1]["site_id"] == "depot"
    # a replay of the new Started and the late Ended of the old one change nothing more
    await station.ok("TransactionEvent", tx_event("Started", 0, txid="new", ts="2026-01-01T09:00:00Z"))
    await station.ok("TransactionEvent", tx_event("Ended", 1, txid="old", ts="2026-01-01T08:30:00Z"))
    assert set(await redis.smembers("evfleet:tx:active")) == {"CP-1:new"}
    assert await redis.hget("evfleet:station:CP-1:evse:1", "transaction_id") == "new"
    types = [f["type"] for _, f in await redis.xrange("evfleet:events") if f["type"] == "tx.ended"]
    assert types == ["tx.ended"]


async def test_a_second_event_of_the_same_transaction_supersedes_nothing(
        station: RawStation, redis: Redis) -> None:
    await station.ok("TransactionEvent", tx_event("Started", 0, txid="t1"))
    await station.ok("TransactionEvent", tx_event("Updated", 1, txid="t1", ts="2026-01-01T08:05:00Z"))
    await station.ok("TransactionEvent", tx_event("Ended", 2, txid="t1", ts="2026-01-01T08:10:00Z"))
    await station.ok("TransactionEvent", tx_event("Started", 0, txid="t2", ts="2026-01-01T08:20:00Z"))
    assert (await redis.hgetall("evfleet:tx:CP-1:t1"))["stopped_reason"] != "Other"
    assert "superseded_by" not in await redis.hgetall("evfleet:tx:CP-1:t1")
    assert set(await redis.smembers("evfleet:tx:active")) == {"CP-1:t2"}
