"""Calls to stations through Redis (command protocol): every outgoing call, errors, order, and a
real second OS process sending SetChargingProfile."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from csms.app import CsmsNode
from csms.commands import (
    CommandClient,
    CommandReply,
    Outcome,
    StationCallError,
    StationOfflineError,
)
from evfleet.keys import Keys
from evfleet.store.client import connect_redis
from tests.csms.conftest import PASSWORD
from tests.csms.helpers import RawStation, stream_events

REPO = Path(__file__).resolve().parents[2]
NOW = "2026-01-01T08:00:00Z"
COMPONENT = {"component": {"name": "OCPPCommCtrlr"}, "variable": {"name": "HeartbeatInterval"}}
PROFILE = {"id": 7, "stackLevel": 0, "chargingProfilePurpose": "TxDefaultProfile",
           "chargingProfileKind": "Absolute", "chargingSchedule": [{
               "id": 1, "chargingRateUnit": "W", "startSchedule": NOW,
               "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 7400.0}]}]}

# action -> (request payload, the station's answer)
CALLS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "SetChargingProfile": ({"evseId": 1, "chargingProfile": PROFILE}, {"status": "Accepted"}),
    "ClearChargingProfile": ({"chargingProfileId": 7}, {"status": "Accepted"}),
    "GetChargingProfiles": ({"requestId": 1, "chargingProfile": {"chargingProfilePurpose": "TxProfile"}},
                            {"status": "NoProfiles"}),
    "GetCompositeSchedule": ({"duration": 3600, "evseId": 1, "chargingRateUnit": "W"},
                             {"status": "Accepted", "schedule": {
                                 "evseId": 1, "duration": 3600, "scheduleStart": NOW, "chargingRateUnit": "W",
                                 "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 7400.0}]}}),
    "RequestStartTransaction": ({"idToken": {"idToken": "CARD-1", "type": "ISO14443"}, "remoteStartId": 5,
                                 "evseId": 1}, {"status": "Accepted"}),
    "RequestStopTransaction": ({"transactionId": "tx-1"}, {"status": "Rejected"}),
    "Reset": ({"type": "OnIdle"}, {"status": "Scheduled"}),
    "ChangeAvailability": ({"operationalStatus": "Inoperative", "evse": {"id": 1}}, {"status": "Accepted"}),
    "TriggerMessage": ({"requestedMessage": "StatusNotification", "evse": {"id": 1, "connectorId": 1}},
                       {"status": "Accepted"}),
    "GetVariables": ({"getVariableData": [COMPONENT]},
                     {"getVariableResult": [{"attributeStatus": "Accepted", "attributeValue": "60",
                                             **COMPONENT}]}),
    "SetVariables": ({"setVariableData": [{"attributeValue": "30", **COMPONENT}]},
                     {"setVariableResult": [{"attributeStatus": "RebootRequired", **COMPONENT}]}),
    "UnlockConnector": ({"evseId": 1, "connectorId": 1}, {"status": "Unlocked"}),
    "GetBaseReport": ({"requestId": 9, "reportBase": "FullInventory"}, {"status": "Accepted"}),
}


@pytest.fixture
async def caller(redis_url: str) -> Any:
    """A CommandClient on its own Redis connection (as another process would have)."""
    redis = connect_redis(redis_url)
    yield CommandClient(redis, Keys("evfleet"), default_timeout_s=5)
    await redis.aclose()


Provision = Callable[..., Awaitable[None]]


async def connected(node: CsmsNode, provision: Provision, sid: str = "CP-1") -> RawStation:
    await provision(sid)
    st = await RawStation.connect(node.url, sid, PASSWORD)
    await st.ok("Heartbeat", {})
    return st


async def test_each_outgoing_call_is_answered(node: CsmsNode, provision: Callable[..., Awaitable[None]],
                                              caller: CommandClient, redis: Redis) -> None:
    st = await connected(node, provision)
    seen: list[tuple[str, dict[str, Any]]] = []

    def answer(msg: list[Any]) -> list[Any]:
        seen.append((msg[2], msg[3]))
        return [3, msg[1], CALLS[msg[2]][1]]

    st.auto_answer = {action: answer for action in CALLS}
    for action, (payload, expected) in CALLS.items():
        reply = await caller.call("CP-1", action, payload)
        assert reply.outcome is Outcome.RESULT, (action, reply)
        assert reply.payload == expected and reply.station_id == "CP-1" and reply.action == action
    assert [a for a, _ in seen] == list(CALLS)
    assert seen[0][1] == CALLS["SetChargingProfile"][0]  # sent exactly as asked
    results = await stream_events(redis, {"command.result"})
    assert [e["data"]["action"] for e in results] == list(CALLS)
    assert all(e["data"]["outcome"] == "result" for e in results)
    await st.close()


async def test_call_error_offline_invalid_and_timeout(node: CsmsNode, provision: Provision,
                                                      caller: CommandClient) -> None:
    st = await connected(node, provision)
    st.auto_answer = {"SetChargingProfile": lambda m: [4, m[1], "NotImplemented", "no smart charging", {}]}
    reply = await caller.call("CP-1", "SetChargingProfile", CALLS["SetChargingProfile"][0])
    assert reply.outcome is Outcome.CALL_ERROR and reply.error and reply.error["code"] == "NotImplemented"
    with pytest.raises(StationCallError) as err:
        reply.raise_for_outcome()
    assert err.value.code == "NotImplemented"
    # invalid: unknown action, schema violation (never sent to the station)
    bad = await caller.call("CP-1", "MakeCoffee", {})
    assert bad.outcome is Outcome.INVALID
    bad = await caller.call("CP-1", "Reset", {"type": "Sometime"})
    assert bad.outcome is Outcome.INVALID and bad.error and bad.error["code"] == "PropertyConstraintViolation"
    # a station answer that breaks the schema is reported, not passed off as a result
    st.auto_answer = {"Reset": {"status": "Maybe"}}
    reply = await caller.call("CP-1", "Reset", {"type": "Immediate"})
    assert reply.outcome is Outcome.CALL_ERROR and reply.payload == {"status": "Maybe"}
    # timeout: the station never answers; reported, and the queue moves on
    st.auto_answer = {"Reset": lambda m: None, "UnlockConnector": {"status": "Unlocked"}}
    slow, quick = await asyncio.gather(
        caller.call("CP-1", "Reset", {"type": "Immediate"}, timeout_s=0.5),
        caller.call("CP-1", "UnlockConnector", {"evseId": 1, "connectorId": 1}))
    assert slow.outcome is Outcome.TIMEOUT and quick.outcome is Outcome.RESULT
    # offline: unknown / disconnected station
    off = await caller.call("CP-404", "Reset", {"type": "Immediate"})
    assert off.outcome is Outcome.OFFLINE
    with pytest.raises(StationOfflineError):
        off.raise_for_outcome()
    await st.close()
    for _ in range(100):
        if (await caller.call("CP-1", "Reset", {"type": "Immediate"})).outcome is Outcome.OFFLINE:
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("station still reported online after disconnect")


async def test_calls_to_one_station_are_sent_one_at_a_time_in_order(
        node: CsmsNode, provision: Callable[..., Awaitable[None]], caller: CommandClient) -> None:
    st = await connected(node, provision)
    outstanding = 0
    max_outstanding = 0
    order: list[int] = []

    async def answer_later(msg: list[Any]) -> None:
        nonlocal outstanding
        await asyncio.sleep(0.02)
        outstanding -= 1
        await st.ws.send(json.dumps([3, msg[1], {"status": "Accepted"}]))

    def on_call(msg: list[Any]) -> None:
        nonlocal outstanding, max_outstanding
        outstanding += 1
        max_outstanding = max(max_outstanding, outstanding)
        order.append(msg[3]["chargingProfileId"])
        asyncio.get_running_loop().create_task(answer_later(msg))

    st.auto_answer = {"ClearChargingProfile": on_call}
    replies: list[CommandReply] = []
    for i in range(8):  # queued in this order by one caller
        replies.append(await asyncio.wait_for(caller.call("CP-1", "ClearChargingProfile",
                                                          {"chargingProfileId": i}), 5))
    assert order == list(range(8)) and max_outstanding == 1
    assert all(r.ok for r in replies)
    # concurrent callers: never more than one CALL outstanding at the station
    order.clear()
    await asyncio.gather(*(caller.call("CP-1", "ClearChargingProfile", {"chargingProfileId": i})
                           for i in range(10)))
    assert sorted(order) == list(range(10)) and max_outstanding == 1
    await st.close()


async def test_second_process_sends_set_charging_profile(
        node: CsmsNode, provision: Callable[..., Awaitable[None]], redis_url: str) -> None:
    st = await connected(node, provision)
    received: list[dict[str, Any]] = []

    def answer(msg: list[Any]) -> list[Any]:
        received.append(msg[3])
        return [3, msg[1], {"status": "Accepted"}]

    st.auto_answer = {"SetChargingProfile": answer}
    script = (
        "import asyncio, json, sys\n"
        "from csms.commands import CommandClient\n"
        "from evfleet.store.client import connect_redis\n"
        "from evfleet.keys import Keys\n"
        "async def main():\n"
        "    r = connect_redis(sys.argv[1])\n"
        "    reply = await CommandClient(r, Keys('evfleet')).call('CP-1', 'SetChargingProfile',\n"
        "                                                         json.loads(sys.argv[2]), timeout_s=10)\n"
        "    print(reply.model_dump_json())\n"
        "    await r.aclose()\n"
        "asyncio.run(main())\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, redis_url, json.dumps(CALLS["SetChargingProfile"][0]),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=str(REPO),
        env={**os.environ, "PYTHONPATH": str(REPO)})
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    reply = json.loads(out)
    assert reply["outcome"] == "result" and reply["payload"] == {"status": "Accepted"}
    assert received == [CALLS["SetChargingProfile"][0]]
    await st.close()


async def test_a_station_answering_after_six_seconds_still_reaches_the_caller(
        node: CsmsNode, provision: Callable[..., Awaitable[None]], redis_url: str) -> None:
    """Regression: redis-py's default 5 s socket timeout cut every BRPOP for a slower answer."""
    st = await connected(node, provision)

    async def answer_slowly(msg: list[Any]) -> None:
        await asyncio.sleep(6.0)
        await st.ws.send(json.dumps([3, msg[1], {"status": "Accepted"}]))

    st.auto_answer = {"ClearChargingProfile": lambda msg: asyncio.get_running_loop().create_task(
        answer_slowly(msg)) and None}
    redis = connect_redis(redis_url)
    client = CommandClient(redis, Keys("evfleet"), default_timeout_s=15)
    try:
        reply = await client.call("CP-1", "ClearChargingProfile", {"chargingProfileId": 1})
    finally:
        await client.aclose()
        await redis.aclose()
    assert reply.outcome is Outcome.RESULT and reply.payload == {"status": "Accepted"}
    await st.close()
