"""Interoperability: a station built on the `ocpp` library's own v201 ChargePoint."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from ocpp.routing import on
from ocpp.v201 import ChargePoint, call, call_result
from ocpp.v201.enums import Action
from redis.asyncio import Redis
from websockets.asyncio.client import connect

from csms import metrics
from csms.app import CsmsNode
from csms.core.security import basic_auth_header
from evfleet.logs import JsonFormatter, configure_logging, log_context
from tests.csms.conftest import PASSWORD


class LibStation(ChargePoint):
    """A station as an `ocpp`-library user would write it."""

    profiles: list[dict[str, Any]]

    @on(Action.set_charging_profile)
    async def on_set_charging_profile(self, evse_id: int, charging_profile: dict[str, Any],
                                      **_: Any) -> call_result.SetChargingProfile:
        self.profiles.append({"evse_id": evse_id, **charging_profile})
        return call_result.SetChargingProfile(status="Accepted")


async def test_ocpp_library_station_boots_transacts_and_answers_calls(
        node: CsmsNode, provision: Callable[..., Awaitable[None]], redis: Redis) -> None:
    await provision("LIB-1")
    ws = await connect(node.station_url("LIB-1"), subprotocols=["ocpp2.0.1"],  # type: ignore[list-item]
                       additional_headers={"Authorization": basic_auth_header("LIB-1", PASSWORD)})
    cp = LibStation("LIB-1", ws)
    cp.profiles = []
    runner = asyncio.create_task(cp.start())
    boot = await cp.call(call.BootNotification(
        charging_station={"model": "LibModel", "vendor_name": "LibVendor"}, reason="PowerUp"), suppress=False)
    assert boot.status == "Accepted" and boot.interval == node.ctx.settings.heartbeat_interval_s
    started = await cp.call(call.TransactionEvent(
        event_type="Started", timestamp="2026-01-01T08:00:00Z", trigger_reason="CablePluggedIn", seq_no=0,
        transaction_info={"transaction_id": "lib-tx"}, evse={"id": 1, "connector_id": 1},
        meter_value=[{"timestamp": "2026-01-01T08:00:00Z", "sampled_value": [{"value": 2.0,
                      "unit_of_measure": {"unit": "kWh"}}]}]), suppress=False)
    assert started is not None
    assert await redis.hget("evfleet:tx:LIB-1:lib-tx", "energy_wh") == "2000.0"
    reply = await node.commands.call("LIB-1", "SetChargingProfile", {"evseId": 1, "chargingProfile": {
        "id": 3, "stackLevel": 1, "chargingProfilePurpose": "TxProfile", "chargingProfileKind": "Absolute",
        "transactionId": "lib-tx", "chargingSchedule": [{"id": 1, "chargingRateUnit": "A",
                                                         "chargingSchedulePeriod": [{"startPeriod": 0,
                                                                                     "limit": 16.0}]}]}})
    assert reply.ok and reply.payload == {"status": "Accepted"}
    assert cp.profiles and cp.profiles[0]["evse_id"] == 1
    runner.cancel()
    await ws.close()


async def test_metrics_count_messages_and_errors(station: Any) -> None:
    def value(name: str, labels: dict[str, str]) -> float:
        return metrics.OCPP_MESSAGES.labels(**labels)._value.get() if name == "m" else \
            metrics.OCPP_PROTOCOL_ERRORS.labels(**labels)._value.get()

    before_ok = value("m", {"action": "Heartbeat", "result": "accepted"})
    before_err = value("e", {"code": "RpcFrameworkError"})
    await station.ok("Heartbeat", {})
    await station.send_raw("garbage", expect_id="-1")
    assert value("m", {"action": "Heartbeat", "result": "accepted"}) == before_ok + 1
    assert value("e", {"code": "RpcFrameworkError"}) == before_err + 1
    assert metrics.CONNECTED_STATIONS._value.get() >= 1
    hist = metrics.OCPP_HANDLER_SECONDS.labels("Heartbeat")._sum.get()
    assert hist > 0


def test_json_log_lines_carry_station_and_message_id() -> None:
    record = logging.LogRecord("csms.x", logging.WARNING, __file__, 1, "refused %s", ("frame",), None)
    with log_context(station_id="CP-9", message_id="m-1"):
        from evfleet.logs import ContextFilter

        ContextFilter().filter(record)
    line = json.loads(JsonFormatter().format(record))
    assert line["station_id"] == "CP-9" and line["message_id"] == "m-1" and line["msg"] == "refused frame"
    assert line["level"] == "WARNING"
    configure_logging("INFO", json_lines=True)
    configure_logging("INFO", json_lines=False)  # idempotent: replaces its own handler only
    handlers = [h for h in logging.getLogger().handlers if getattr(h, "_evfleet", False)]
    assert len(handlers) == 1
    logging.getLogger().removeHandler(handlers[0])
