"""Subprotocol negotiation (1.6 beside 2.0.1, pins), security profiles 1 and 2, 1.6J CALLERRORs."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from csms.app import CsmsNode, running_csms
from csms.store.v16 import set_ocpp_version
from evfleet.keys import Keys
from tests.csms.conftest import PASSWORD, make_settings
from tests.csms.helpers import RawStation
from tests.csms.test_connections import auth, refused

Provision = Callable[..., Awaitable[None]]
BOOT16 = {"chargePointVendor": "V", "chargePointModel": "M"}


def now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


async def connect16(node: CsmsNode, sid: str, password: str = PASSWORD, **kw: Any) -> RawStation:
    return await RawStation.connect(node.url, sid, password, subprotocols=["ocpp1.6"], **kw)


async def test_both_offered_prefers_201_and_a_pin_holds_a_station_to_its_version(
        node: CsmsNode, provision: Provision, redis: Redis, keys: Keys) -> None:
    await provision("CP-A")
    st = await RawStation.connect(node.url, "CP-A", PASSWORD, subprotocols=["ocpp1.6", "ocpp2.0.1"])
    assert st.ws.subprotocol == "ocpp2.0.1"
    await st.close()
    st = await connect16(node, "CP-A")
    assert st.ws.subprotocol == "ocpp1.6"
    assert (await st.ok("BootNotification", BOOT16))["status"] == "Accepted"
    assert await redis.hget(keys.station("CP-A"), "ocpp_version") == "1.6"
    await st.close()
    await set_ocpp_version(redis, keys, "CP-A", "1.6")
    st = await RawStation.connect(node.url, "CP-A", PASSWORD, subprotocols=["ocpp2.0.1", "ocpp1.6"])
    assert st.ws.subprotocol == "ocpp1.6"  # pinned: 1.6 although 2.0.1 was offered
    await st.close()
    status, body, _ = await refused(node.station_url("CP-A"), additional_headers=auth("CP-A", PASSWORD),
                                    subprotocols=["ocpp2.0.1"])
    assert status == 400 and "pinned to OCPP 1.6" in body
    # basic auth as for 2.0.1: wrong password or none -> 401
    status, _, _ = await refused(node.station_url("CP-A"), additional_headers=auth("CP-A", "wrong-password1"),
                                 subprotocols=["ocpp1.6"])
    assert status == 401
    status, _, headers = await refused(node.station_url("CP-A"), subprotocols=["ocpp1.6"])
    assert status == 401 and headers["WWW-Authenticate"].startswith("Basic")


async def test_v16_security_profile_2_over_tls(redis_url: str, provision: Provision,
                                               tls_files: tuple[Path, Path]) -> None:
    cert, key = tls_files
    async with running_csms(make_settings(redis_url, tls_cert=cert, tls_key=key), services=[]) as node:
        await provision("CP-TLS16", security_profile=2)
        st = await connect16(node, "CP-TLS16", ssl_ctx=ssl.create_default_context(cafile=str(cert)))
        assert st.ws.subprotocol == "ocpp1.6"
        assert (await st.ok("Heartbeat", {}))["currentTime"]
        await st.close()
    async with running_csms(make_settings(redis_url), services=[]) as plain:
        status, body, _ = await refused(plain.station_url("CP-TLS16"), subprotocols=["ocpp1.6"],
                                        additional_headers=auth("CP-TLS16", PASSWORD))
        assert status == 401 and "TLS" in body


async def test_v16_bad_input_gets_the_16_callerror_codes(node: CsmsNode, provision: Provision,
                                                         redis: Redis, keys: Keys) -> None:
    await provision("CP-BAD")
    st = await connect16(node, "CP-BAD")
    await st.ok("BootNotification", BOOT16)

    async def code(action: str, payload: Any) -> str:
        frame = await st.call(action, payload)
        assert frame[0] == 4, frame
        return str(frame[2])

    assert await code("StartTransaction", {"connectorId": 1, "idTag": "T", "timestamp": now()}) \
        == "OccurenceConstraintViolation"  # meterStart missing (1.6 spelling)
    assert await code("StartTransaction", {"connectorId": "one", "idTag": "T", "meterStart": 0,
                                           "timestamp": now()}) == "TypeConstraintViolation"
    assert await code("StatusNotification", {"connectorId": 1, "errorCode": "NoError",
                                             "status": "Dancing"}) == "PropertyConstraintViolation"
    assert await code("StartTransaction", {"connectorId": 1, "idTag": "T", "meterStart": 2**40,
                                           "timestamp": now()}) == "PropertyConstraintViolation"  # int32
    assert await code("StartTransaction", {"connectorId": 1, "idTag": "T", "meterStart": 0,
                                           "timestamp": "yesterday"}) == "PropertyConstraintViolation"
    frame = await st.send_raw('[2, "nan-1", "Heartbeat", {"x": NaN}]', expect_id="nan-1")
    assert frame[2] == "FormationViolation"
    assert await code("Heartbeat", {"extra": 1}) == "FormationViolation"  # unknown property
    assert await code("Heartbeat", []) == "FormationViolation"  # payload not an object
    assert await code("TransactionEvent", {}) == "NotImplemented"  # a 2.0.1 action: unknown in 1.6
    assert await code("GetConfiguration", {}) == "NotSupported"  # 1.6, but not sent by charge points
    frame = await st.send_raw("not json", expect_id="-1")
    assert frame[0] == 4 and frame[2] == "FormationViolation"
    # nothing was stored by the refused StartTransactions
    assert await redis.get(keys.station_tx_counter("CP-BAD")) is None
    events = [f for _, f in await redis.xrange(keys.events()) if f.get("type") == "protocol.error"]
    assert any(json.loads(f["data"])["code"] == "OccurenceConstraintViolation" for f in events)
    # the connection still works
    assert (await st.ok("Heartbeat", {}))["currentTime"]
    await st.close()


async def test_v16_start_replay_same_id_and_commands_checked_against_16(
        node: CsmsNode, provision: Provision, redis: Redis, keys: Keys) -> None:
    await provision("CP-R")
    st = await connect16(node, "CP-R")
    await st.ok("BootNotification", BOOT16)
    start = {"connectorId": 1, "idTag": "TAG", "meterStart": 100, "timestamp": now()}
    first = await st.ok("StartTransaction", start)
    again = await st.ok("StartTransaction", start)  # the answer was lost: the station resends
    assert first["transactionId"] == again["transactionId"] >= 1
    other = await st.ok("StartTransaction", {**start, "connectorId": 2, "timestamp": now()})
    assert other["transactionId"] == first["transactionId"] + 1
    active = {str(t) for t in await redis.smembers(keys.transactions_active())}
    assert {f'CP-R:{first["transactionId"]}', f'CP-R:{other["transactionId"]}'} <= active
    # a 1.6 command passes; a 2.0.1-only action and a broken 1.6 payload are refused before sending
    st.auto_answer["ChangeConfiguration"] = {"status": "Accepted"}
    reply = await node.commands.call("CP-R", "ChangeConfiguration",
                                     {"key": "HeartbeatInterval", "value": "60"})
    assert reply.ok and reply.payload == {"status": "Accepted"}
    reply = await node.commands.call("CP-R", "GetBaseReport", {"requestId": 1, "reportBase": "FullInventory"})
    assert reply.outcome.value == "invalid" and reply.error is not None
    assert reply.error["code"] == "NotImplemented"
    reply = await node.commands.call("CP-R", "ChangeConfiguration", {"key": "HeartbeatInterval"})
    assert reply.outcome.value == "invalid" and reply.error is not None
    assert reply.error["code"] == "OccurenceConstraintViolation"
    # a 2.0.1 RequestStopTransaction is translated into RemoteStopTransaction with the integer id
    st.auto_answer["RemoteStopTransaction"] = lambda msg: [3, msg[1], {"status": "Accepted"}] \
        if msg[3] == {"transactionId": first["transactionId"]} else [3, msg[1], {"status": "Rejected"}]
    reply = await node.commands.call("CP-R", "RequestStopTransaction",
                                     {"transactionId": str(first["transactionId"])})
    assert reply.ok and reply.payload == {"status": "Accepted"}
    # a 2.0.1 request with no 1.6 meaning is refused before sending (not a station CALLERROR)
    reply = await node.commands.call("CP-R", "RequestStopTransaction", {"transactionId": "tx-abc"})
    assert reply.outcome.value == "invalid" and reply.error is not None
    assert reply.error["code"] == "NotSupported" and "no OCPP 1.6 equivalent" in reply.error["description"]
    await st.close()


async def test_v16_profile_answer_not_supported_is_a_not_supported_callerror(
        node: CsmsNode, provision: Provision) -> None:
    """A 1.6 SetChargingProfile answered `NotSupported` reaches the caller as CALLERROR NotSupported,
    which the smart-charging service treats as 'cannot be steered' (budget at the maximum)."""
    await provision("CP-NS")
    st = await connect16(node, "CP-NS")
    await st.ok("BootNotification", BOOT16)
    got: list[Any] = []

    def answer(msg: list[Any]) -> list[Any]:
        got.append(msg[3])
        return [3, msg[1], {"status": "NotSupported"}]

    st.auto_answer["SetChargingProfile"] = answer
    profile = {"id": 1, "stackLevel": 0, "chargingProfilePurpose": "TxDefaultProfile",
               "chargingProfileKind": "Absolute", "chargingSchedule": [{
                   "id": 1, "startSchedule": now(), "chargingRateUnit": "W",
                   "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 7400.0}]}]}
    reply = await node.commands.call("CP-NS", "SetChargingProfile", {"evseId": 1, "chargingProfile": profile})
    assert reply.outcome.value == "call_error" and reply.error is not None
    assert reply.error["code"] == "NotSupported"
    [sent] = got  # the station got the 1.6 shape (no period cap or unit restriction known: as planned)
    assert sent["connectorId"] == 1
    assert sent["csChargingProfiles"]["chargingProfilePurpose"] == "TxDefaultProfile"
    assert sent["csChargingProfiles"]["chargingSchedule"]["chargingSchedulePeriod"] == [
        {"startPeriod": 0, "limit": 7400.0}]
    await st.close()


async def test_a_first_time_16_station_that_boots_is_not_closed_by_the_boot_timeout(
        redis_url: str, provision: Provision) -> None:
    async with running_csms(make_settings(redis_url, boot_timeout_s=1.0), services=[]) as node:
        await provision("CP-NEW16")
        st = await connect16(node, "CP-NEW16")
        assert (await st.ok("BootNotification", BOOT16))["status"] == "Accepted"
        await asyncio.sleep(1.6)
        assert (await st.ok("Heartbeat", {}))["currentTime"] and st.ws.close_code is None
        await st.close()
        await provision("CP-SILENT16")
        quiet = await connect16(node, "CP-SILENT16")
        await asyncio.sleep(2.0)  # never boots: closed like a 2.0.1 station
        assert quiet.ws.close_code == 1008
