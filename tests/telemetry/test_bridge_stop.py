"""Stopping the MQTT bridge always ends, even when aiomqtt swallows the cancellation.

aiomqtt waits for each publish's confirmation with `asyncio.wait_for`; on Python 3.11 a cancellation
that arrives in the same event-loop iteration as the confirmation is lost (wait_for returns the
result). The bridge's publish loop then went back to waiting for the next message and its TaskGroup,
`run` and whoever cancelled `run` waited for ever (test_prices_over_mqtt_land_in_redis hung until
pytest's 300 s timeout). The stand-in client below does what aiomqtt's publish does, and the test
makes the confirmation and the cancellation meet in one iteration on purpose.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import pytest

from csms.telemetry import bridge as bridge_module
from csms.telemetry.bridge import MqttBridge
from csms.telemetry.outbox import Message


class ConfirmingClient:
    """`publish` as aiomqtt.Client has it: send, then `asyncio.wait_for` the broker's confirmation."""

    def __init__(self) -> None:
        self.in_flight = asyncio.Event()
        self.confirmed = asyncio.Event()
        self.topics: list[str] = []

    async def publish(self, topic: str, payload: Any, qos: int = 0, retain: bool = False) -> None:
        """Record the message, then wait (at most 10 s) for `confirmed`."""
        self.topics.append(topic)
        self.in_flight.set()
        await asyncio.wait_for(self.confirmed.wait(), 10)


def _bridge() -> MqttBridge:
    return MqttBridge(cast(Any, None), cast(Any, None), "mqtt://127.0.0.1:1", prefix="t")


async def test_publish_loop_ends_when_a_confirmation_and_the_cancellation_come_together() -> None:
    bridge = _bridge()
    client = ConfirmingClient()
    bridge.enqueue([Message("t/sites/yard/prices/state", "{}", retain=True)])
    publisher = asyncio.create_task(bridge._publish(cast(Any, client)))
    await asyncio.wait_for(client.in_flight.wait(), 5)
    # one synchronous step: the confirmation wakes wait_for's inner task first, then the cancellation
    # reaches wait_for, which (3.11) finds the inner task done and returns instead of raising
    client.confirmed.set()
    publisher.cancel()
    done, _ = await asyncio.wait({publisher}, timeout=5)  # no second cancel: that would hide the bug
    assert publisher in done, "the publish loop ignored its cancellation (went back to the outbox)"
    assert publisher.cancelled()
    assert client.topics == ["t/sites/yard/prices/state"]


async def test_run_stops_within_its_bound_even_if_a_loop_ignores_every_cancellation(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(bridge_module, "STOP_GRACE_S", 0.2)
    monkeypatch.setattr(bridge_module, "STOP_TIMEOUT_S", 1.0)
    bridge = _bridge()
    released = asyncio.Event()
    cancels = 0

    async def stubborn() -> None:  # a library that loses every cancellation
        nonlocal cancels
        while not released.is_set():
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                cancels += 1

    async def idle() -> None:
        await asyncio.Event().wait()

    monkeypatch.setattr(bridge, "connect_loop", stubborn)
    monkeypatch.setattr(bridge, "read_events", idle)
    runner = asyncio.create_task(bridge.run())
    await asyncio.sleep(0.05)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    runner.cancel()
    with caplog.at_level(logging.ERROR, logger="evfleet.tasks"):
        done, _ = await asyncio.wait({runner}, timeout=5)
    assert runner in done and runner.cancelled()
    assert 0.9 <= loop.time() - t0 < 3.0
    assert cancels >= 2  # cancelled again after the grace period
    assert "mqtt bridge tasks still running" in caplog.text and "mqtt-connection at stubborn" in caplog.text
    released.set()  # let the stand-in end, so the test's event loop closes cleanly
    await asyncio.sleep(0)
    for task in asyncio.all_tasks():
        if task.get_name() == "mqtt-connection":
            task.cancel()
            await asyncio.wait({task}, timeout=1)
