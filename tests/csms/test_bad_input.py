"""Bad input from a station: the right CALLERROR, connection kept, nothing stored; compat mode."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from redis.asyncio import Redis

from csms.app import running_csms
from csms.store.provisioning import set_station_compat
from evfleet.keys import Keys
from evfleet.store.client import as_str
from tests.csms.conftest import PASSWORD, make_settings
from tests.csms.helpers import RawStation, stream_events

BOOT_OK = {"reason": "PowerUp", "chargingStation": {"model": "M", "vendorName": "V"}}


async def state_keys(redis: Redis) -> set[str]:
    """Keys other than the ones a connected, booted station already has (the stream and the
    station's quota counter are bookkeeping of refusals, not state from the frame)."""
    return {as_str(k) for k in await redis.keys("evfleet:*")
            if k != "evfleet:events" and ":quota:" not in as_str(k)}


async def assert_still_connected(st: RawStation) -> None:
    assert (await st.ok("Heartbeat", {}))["currentTime"]


@pytest.mark.parametrize("frame,code,uid", [
    ("this is not json", "RpcFrameworkError", "-1"),
    ('{"not": "an array"}', "RpcFrameworkError", "-1"),
    ('[2, "bad-1", "Heartbeat"', "RpcFrameworkError", "-1"),
    ('[9, "bad-2", "Heartbeat", {}]', "MessageTypeNotSupported", "bad-2"),
    ('[2, "bad-3", "Heartbeat"]', "RpcFrameworkError", "bad-3"),
    ('[2, "bad-4", "Heartbeat", "payload"]', "FormatViolation", "bad-4"),
    ('[2, "bad-5", "MakeCoffee", {}]', "NotImplemented", "bad-5"),
    ('[2, "bad-6", "Reset", {"type": "Immediate"}]', "NotSupported", "bad-6"),
    (b"\xff\xfe not utf-8", "RpcFrameworkError", "-1"),
    ('[2, "' + "x" * 40 + '", "Heartbeat", {}]', "RpcFrameworkError", "-1"),
])
async def test_bad_frames_get_callerror_and_connection_is_kept(
        station: RawStation, redis: Redis, frame: str | bytes, code: str, uid: str) -> None:
    before = await state_keys(redis)
    answer = await station.send_raw(frame, expect_id=uid)
    assert answer[0] == 4 and answer[1] == uid and answer[2] == code, answer
    assert isinstance(answer[3], str) and isinstance(answer[4], dict)
    await assert_still_connected(station)
    assert await state_keys(redis) == before
    errors = await stream_events(redis, {"protocol.error"})
    assert errors[-1]["data"]["code"] == code and errors[-1]["station_id"] == "CP-1"


@pytest.mark.parametrize("action,payload,code", [
    ("BootNotification", {"reason": "PowerUp"}, "OccurrenceConstraintViolation"),
    ("BootNotification", {**BOOT_OK, "reason": 5}, "TypeConstraintViolation"),
    ("BootNotification", {**BOOT_OK, "reason": "Bored"}, "PropertyConstraintViolation"),
    ("BootNotification", {**BOOT_OK, "color": "red"}, "FormatViolation"),
    ("TransactionEvent", {"eventType": "Started", "timestamp": "2026-01-01T00:00:00Z",
                          "triggerReason": "Authorized", "seqNo": "zero",
                          "transactionInfo": {"transactionId": "tx-bad"}}, "TypeConstraintViolation"),
    ("StatusNotification", {"timestamp": "2026-01-01T00:00:00Z", "connectorStatus": "Exploded",
                            "evseId": 1, "connectorId": 1}, "PropertyConstraintViolation"),
])
async def test_schema_violations_refused_nothing_stored(station: RawStation, redis: Redis, action: str,
                                                        payload: dict[str, object], code: str) -> None:
    before = await state_keys(redis)
    vendor_before = await redis.hget("evfleet:station:CP-1", "vendor")
    answer = await station.call(action, payload)
    assert answer[0] == 4 and answer[2] == code, answer
    await assert_still_connected(station)
    assert await state_keys(redis) == before
    assert await redis.hget("evfleet:station:CP-1", "vendor") == vendor_before
    assert await redis.exists("evfleet:tx:CP-1:tx-bad") == 0


async def test_callresult_to_nothing_is_ignored_and_logged(station: RawStation, redis: Redis,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    before = await state_keys(redis)
    await station.send_raw(json.dumps([3, "never-asked", {"status": "Accepted"}]))
    await station.send_raw(json.dumps([4, "never-asked-2", "GenericError", "x", {}]))
    await assert_still_connected(station)
    assert station.unsolicited == []  # no reply to a CALLRESULT/CALLERROR
    assert await state_keys(redis) == before
    assert "answers no outstanding CALL" in caplog.text


async def test_compat_mode_accepts_and_counts_violations(station: RawStation, redis: Redis,
                                                         keys: Keys) -> None:
    await set_station_compat(redis, keys, "CP-1", True)
    bad_boot = {**BOOT_OK, "reason": "Bored", "chargingStation": {"model": "M2", "vendorName": "V2",
                                                                  "colour": "red"}}
    reply = await station.ok("BootNotification", bad_boot)
    assert reply["status"] == "Accepted"
    assert await redis.hget("evfleet:station:CP-1", "vendor") == "V2"
    await station.ok("BootNotification", bad_boot)
    assert await redis.hgetall("evfleet:station:CP-1:violations") == {"BootNotification": "2"}
    # a violation the handler cannot work around is still refused with its code
    answer = await station.call("StatusNotification", {"timestamp": "2026-01-01T00:00:00Z"})
    assert answer[0] == 4 and answer[2] == "OccurrenceConstraintViolation"
    await set_station_compat(redis, keys, "CP-1", False)
    assert (await station.call("BootNotification", bad_boot))[2] == "PropertyConstraintViolation"


async def test_impossible_value_refused_connection_kept(station: RawStation, redis: Redis) -> None:
    # schema-valid but semantically impossible: timestamp that is not a date
    answer = await station.call("TransactionEvent", {
        "eventType": "Started", "timestamp": "yesterday-ish", "triggerReason": "Authorized", "seqNo": 0,
        "transactionInfo": {"transactionId": "tx-weird"}})
    assert answer[0] == 4 and answer[2] == "PropertyConstraintViolation"
    await asyncio.sleep(0)
    await assert_still_connected(station)
    assert await redis.exists("evfleet:tx:CP-1:tx-weird") == 0


DEEP = "[" * 990 + "]" * 990
TX_OK = {"eventType": "Started", "timestamp": "2026-01-01T00:00:00Z", "triggerReason": "Authorized",
         "seqNo": 0, "transactionInfo": {"transactionId": "tx-hostile"}, "evse": {"id": 1, "connectorId": 1}}


@pytest.mark.parametrize("frame,code,uid", [
    ('[2, "nan-1", "Heartbeat", {"x": NaN}]', "FormatViolation", "nan-1"),
    ('[2, "inf-1", "TransactionEvent", {"seqNo": Infinity}]', "FormatViolation", "inf-1"),
    ('[2, "inf-2", "MeterValues", {"evseId": 1, "meterValue": [{"timestamp": "2026-01-01T00:00:00Z", '
     '"sampledValue": [{"value": -Infinity}]}]}]', "FormatViolation", "inf-2"),
    ('[2, "ovf-1", "MeterValues", {"evseId": 1, "meterValue": [{"timestamp": "2026-01-01T00:00:00Z", '
     '"sampledValue": [{"value": 1e400}]}]}]', "FormatViolation", "ovf-1"),
    ('[2, "deep-1", "DataTransfer", {"vendorId": "v", "data": ' + DEEP + '}]', "FormatViolation", "deep-1"),
    ('[2, "deep-2", "DataTransfer", {"vendorId": "v", "data": ' + "[" * 40 + "]" * 40 + '}]',
     "FormatViolation", "deep-2"),
    (DEEP, "FormatViolation", "-1"),
    ("[" * 60000, "FormatViolation", "-1"),
])
async def test_non_json_numbers_and_deep_nesting_are_format_violations(
        station: RawStation, redis: Redis, frame: str, code: str, uid: str,
        caplog: pytest.LogCaptureFixture) -> None:
    before = await state_keys(redis)
    events_before = await redis.xlen("evfleet:events")
    answer = await station.send_raw(frame, expect_id=uid)
    assert answer[0] == 4 and answer[1] == uid and answer[2] == code, answer
    await assert_still_connected(station)
    assert await state_keys(redis) == before
    assert await redis.exists("evfleet:tx:CP-1:tx-hostile") == 0
    # only the protocol.error event was added: nothing from the frame itself
    added = await redis.xrevrange("evfleet:events", count=await redis.xlen("evfleet:events") - events_before)
    assert [f["type"] for _, f in added] == ["protocol.error"]
    assert "Traceback" not in caplog.text and "RecursionError" not in caplog.text


@pytest.mark.parametrize("path,value,code", [
    ("seqNo", 1e308, "TypeConstraintViolation"),
    ("seqNo", 10**30, "PropertyConstraintViolation"),
    ("seqNo", 2**31, "PropertyConstraintViolation"),
    ("seqNo", 2.5, "TypeConstraintViolation"),
    ("seqNo", True, "TypeConstraintViolation"),
    ("timestamp", "yesterday-ish", "PropertyConstraintViolation"),
    ("timestamp", "2026-02-30T10:00:00Z", "PropertyConstraintViolation"),
    ("timestamp", "2026-01-01", "PropertyConstraintViolation"),
    ("timestamp", "2026-01-01T00:00:00Z\n", "PropertyConstraintViolation"),
    ("numberOfPhasesUsed", -(2**40), "PropertyConstraintViolation"),
])
async def test_out_of_range_and_non_dates_refused(station: RawStation, redis: Redis, path: str,
                                                  value: object, code: str) -> None:
    before = await state_keys(redis)
    answer = await station.call("TransactionEvent", {**TX_OK, path: value})
    assert answer[0] == 4 and answer[2] == code, answer
    await assert_still_connected(station)
    assert await state_keys(redis) == before
    assert await redis.exists("evfleet:tx:CP-1:tx-hostile") == 0


async def test_non_dates_refused_in_every_message_not_only_transactions(station: RawStation,
                                                                        redis: Redis) -> None:
    before = await state_keys(redis)
    for action, payload in [
        ("StatusNotification", {"timestamp": "soon", "connectorStatus": "Available", "evseId": 1,
                                "connectorId": 1}),
        ("SecurityEventNotification", {"type": "x", "timestamp": "2026-13-01T00:00:00Z"}),
        ("NotifyEvent", {"generatedAt": "now", "seqNo": 0, "eventData": []}),
    ]:
        answer = await station.call(action, payload)
        assert answer[0] == 4 and answer[2] in ("PropertyConstraintViolation",
                                                "OccurrenceConstraintViolation"), (action, answer)
    assert await state_keys(redis) == before
    kinds = [f["type"] for _, f in await redis.xrange("evfleet:events")]
    assert "security.event" not in kinds and "report" not in kinds


async def test_valid_edge_values_still_accepted(station: RawStation, redis: Redis) -> None:
    await station.ok("TransactionEvent", {**TX_OK, "seqNo": 2**31 - 1,
                                          "timestamp": "2026-01-01T01:00:00.123+01:00"})
    assert await redis.exists("evfleet:tx:CP-1:tx-hostile") == 1
    await station.ok("DataTransfer", {"vendorId": "v", "data": {"a": [[[[1.5e3, "x"]]]]}})


async def test_station_storage_quota(redis_url: str, redis: Redis, provision: Any) -> None:
    """DataTransfers, malformed frames and other station-generated events are stored only up to the
    station's hourly quota, big data is stored as a note; transactions are never dropped."""
    settings = make_settings(redis_url, station_event_quota_per_hour=20, station_event_max_bytes=1024)
    async with running_csms(settings, services=[]) as node:
        await provision("CP-Q")
        await provision("CP-OK")
        st = await RawStation.connect(node.url, "CP-Q", PASSWORD)
        other = await RawStation.connect(node.url, "CP-OK", PASSWORD)
        big = "x" * 60_000
        for i in range(30):
            reply = await st.ok("DataTransfer", {"vendorId": "v", "messageId": f"m{i}", "data": big})
            assert reply["status"] == "UnknownVendorId"
        for i in range(10):
            await st.send_raw(f'[2, "bad-{i}", "Heartbeat", {{"x": NaN}}]', expect_id=f"bad-{i}")
        await st.ok("TransactionEvent", {**TX_OK, "transactionInfo": {"transactionId": "tx-quota"}})
        await other.ok("DataTransfer", {"vendorId": "v", "data": "small"})
        entries = [f for _, f in await redis.xrange("evfleet:events")]
        mine = [f for f in entries
                if f["station_id"] == "CP-Q" and f["type"] in ("data_transfer", "protocol.error")]
        assert len(mine) == 20 and all(f["type"] == "data_transfer" for f in mine)
        assert all(len(f["data"]) < 1024 and "omitted" in json.loads(f["data"]) for f in mine)
        assert json.loads(mine[0]["data"])["message_id"] == "m0"
        assert sum(len(f["data"]) for f in entries) < 100_000  # not 30 x 60 KB
        assert await redis.exists("evfleet:tx:CP-Q:tx-quota") == 1  # state is never dropped by the quota
        assert any(f["station_id"] == "CP-OK" and f["type"] == "data_transfer" for f in entries)
        await st.close()
        await other.close()
