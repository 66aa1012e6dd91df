"""After an accepted boot the csms asks the station for its device model (EVSE max power, phases)."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from ocpp.routing import after, on
from ocpp.v201 import ChargePoint, call, call_result
from ocpp.v201.enums import Action
from prometheus_client import REGISTRY
from redis.asyncio import Redis
from websockets.asyncio.client import connect

from csms.app import CsmsNode, running_csms
from csms.core.security import basic_auth_header
from tests.csms.conftest import PASSWORD, make_settings
from tests.csms.helpers import stream_events, wait_for


def _evse_item(evse_id: int, name: str, value: str, **chars: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "component": {"name": "EVSE", "evse": {"id": evse_id}}, "variable": {"name": name},
        "variable_attribute": [{"type": "Actual", "value": value, "mutability": "ReadOnly"}]}
    if chars:
        item["variable_characteristics"] = {"supports_monitoring": False, **chars}
    return item


class PlainStation(ChargePoint):
    """An `ocpp`-library station that records every frame it receives (no GetBaseReport handler)."""

    frames: list[list[Any]]

    async def route_message(self, raw_msg: str) -> None:
        """Record, then route as the library does."""
        self.frames.append(json.loads(raw_msg))
        await super().route_message(raw_msg)


class InventoryStation(PlainStation):
    """Answers GetBaseReport, then reports its two EVSEs (11 kW 3-phase, 7.4 kW 1-phase)."""

    @on(Action.get_base_report)
    async def on_get_base_report(self, request_id: int, report_base: str,
                                 **_: Any) -> call_result.GetBaseReport:
        return call_result.GetBaseReport(status="Accepted")

    @after(Action.get_base_report)
    async def send_report(self, request_id: int, report_base: str, **_: Any) -> None:
        await self.call(call.NotifyReport(request_id=request_id, generated_at="2026-01-01T08:00:00Z",
                                          seq_no=0,
                                          report_data=[
                                              _evse_item(1, "Power", "0", data_type="decimal", unit="W",
                                                         max_limit=11000),
                                              _evse_item(1, "SupplyPhases", "3", data_type="integer"),
                                              _evse_item(2, "Power", "0", data_type="decimal", unit="W",
                                                         max_limit=7400),
                                              _evse_item(2, "SupplyPhases", "1", data_type="integer"),
                                          ]), suppress=False)


@asynccontextmanager
async def booted(node: CsmsNode, cls: type[PlainStation], station_id: str) -> AsyncIterator[PlainStation]:
    """A connected station of class `cls` whose BootNotification was Accepted."""
    ws = await connect(node.station_url(station_id), subprotocols=["ocpp2.0.1"],  # type: ignore[list-item]
                       additional_headers={"Authorization": basic_auth_header(station_id, PASSWORD)})
    cp = cls(station_id, ws)
    cp.frames = []
    runner = asyncio.create_task(cp.start())
    try:
        boot = await cp.call(call.BootNotification(
            charging_station={"model": "M", "vendor_name": "V"}, reason="PowerUp"), suppress=False)
        assert boot.status == "Accepted"
        yield cp
    finally:
        await ws.close()
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


def _fetches(outcome: str) -> float:
    return REGISTRY.get_sample_value("evfleet_device_model_fetches_total", {"outcome": outcome}) or 0.0


def _get_base_reports(frames: list[list[Any]]) -> list[list[Any]]:
    return [f for f in frames if f[0] == 2 and f[2] == "GetBaseReport"]


async def test_boot_fetches_the_device_model_and_stores_evse_max_power(
        redis_url: str, redis: Redis, provision: Callable[..., Awaitable[None]]) -> None:
    accepted_before = _fetches("Accepted")
    async with running_csms(make_settings(redis_url, fetch_device_model_on_boot=True), services=[]) as node:
        await provision("INV-1", site_id="depot")
        async with booted(node, InventoryStation, "INV-1") as cp:
            async def stored() -> bool:
                return await redis.hget("evfleet:station:INV-1:evse:2", "max_power_w") is not None

            await wait_for(stored, timeout=5)
            assert await redis.hget("evfleet:station:INV-1:evse:1", "max_power_w") == "11000.0"
            assert await redis.hget("evfleet:station:INV-1:evse:1", "phases") == "3"
            assert await redis.hget("evfleet:station:INV-1:evse:2", "max_power_w") == "7400.0"
            assert await redis.hget("evfleet:station:INV-1:evse:2", "phases") == "1"
            # the BootNotification answer came first, then exactly one GetBaseReport FullInventory
            assert cp.frames[0][0] == 3 and "interval" in cp.frames[0][2]
            requests = _get_base_reports(cp.frames)
            assert len(requests) == 1 and requests[0][3]["reportBase"] == "FullInventory"
            assert _fetches("Accepted") == accepted_before + 1
            results = [e for e in await stream_events(redis, {"command.result"})
                       if e["data"]["action"] == "GetBaseReport"]
            assert [e["data"]["outcome"] for e in results] == ["result"]
            assert await redis.keys("evfleet:reply:*") == []  # the node's own call needs no reply list


async def test_station_answering_with_an_error_still_boots(
        redis_url: str, redis: Redis, provision: Callable[..., Awaitable[None]]) -> None:
    errors_before = _fetches("call_error")
    async with running_csms(make_settings(redis_url, fetch_device_model_on_boot=True), services=[]) as node:
        await provision("PLAIN-1")
        async with booted(node, PlainStation, "PLAIN-1") as cp:  # the library answers NotImplemented
            async def counted() -> bool:
                return _fetches("call_error") == errors_before + 1

            await wait_for(counted, timeout=5)
            assert len(_get_base_reports(cp.frames)) == 1
            assert await redis.hget("evfleet:station:PLAIN-1", "online") == "1"
            assert (await cp.call(call.Heartbeat(), suppress=False)).current_time
            assert await redis.hget("evfleet:station:PLAIN-1:evse:1", "max_power_w") is None


async def test_setting_off_sends_nothing_after_boot(
        node: CsmsNode, provision: Callable[..., Awaitable[None]]) -> None:
    assert node.ctx.settings.fetch_device_model_on_boot is False
    await provision("INV-2")
    async with booted(node, InventoryStation, "INV-2") as cp:
        await asyncio.sleep(0.5)
        assert _get_base_reports(cp.frames) == []


class RefusingStation(PlainStation):
    """Answers GetBaseReport NotSupported (a charger without device-model reports)."""

    @on(Action.get_base_report)
    async def on_get_base_report(self, request_id: int, report_base: str,
                                 **_: Any) -> call_result.GetBaseReport:
        return call_result.GetBaseReport(status="NotSupported")


async def test_refusal_is_logged_once_per_station_and_counted_every_boot(
        redis_url: str, provision: Callable[..., Awaitable[None]], caplog: Any) -> None:
    caplog.set_level(logging.INFO, logger="csms.protocol.commands")
    refused_before = _fetches("NotSupported")
    async with running_csms(make_settings(redis_url, fetch_device_model_on_boot=True), services=[]) as node:
        await provision("REF-1")
        for boots in (1, 2):
            async with booted(node, RefusingStation, "REF-1"):
                async def counted(n: int = boots) -> bool:
                    return _fetches("NotSupported") == refused_before + n

                await wait_for(counted, timeout=5)
    lines = [r for r in caplog.records if "refused GetBaseReport" in r.getMessage()]
    assert [r.levelno for r in lines] == [logging.INFO]  # one line for two boots, not a warning each
