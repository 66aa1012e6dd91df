"""Timed-out SetChargingProfile calls are logged at WARNING, one line per second with their count
and a few station ids (`csms.smart_charging.timeouts`): 1,180 in one start-up wave between nodes
were counted but never logged."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from csms.command_types import CommandReply, Outcome
from csms.smart_charging import defaults, timeouts
from tests.loop.test_service_unit import SITE, FixedClock, Stations, _service, _session
from tests.loop.test_watchdog_held import _accept
from tests.loop.test_watchdog_incremental import CountingStore


class Silent(Stations):
    """Stations whose every SetChargingProfile times out (the node holding them did not answer)."""

    async def call(self, station_id: str, action: str, payload: dict[str, Any],
                   timeout_s: float | None = None) -> CommandReply:
        self.sent.append((station_id, payload))
        return CommandReply(request_id="r", station_id=station_id, action=action, outcome=Outcome.TIMEOUT,
                            error={"code": "timeout", "description": "no reply from node n-2 within 35 s"})


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == timeouts.__name__ and r.levelno == logging.WARNING]


async def test_a_wave_of_timeouts_is_one_warning_a_window(caplog: pytest.LogCaptureFixture) -> None:
    log = timeouts.TimeoutLog(window_s=0.05)
    caplog.set_level(logging.WARNING, timeouts.__name__)
    for n in range(1_180):
        log.note(f"CP-{n}", "default" if n % 2 else "plan", {"description": "no reply from node n-2"})
    assert _lines(caplog) == []  # not one line per call
    await asyncio.sleep(0.1)
    [line] = _lines(caplog)
    assert line.startswith("1180 SetChargingProfile call(s) timed out") and "default 590, plan 590" in line
    assert "CP-0, CP-1, CP-2, CP-3, CP-4 and 1175 more" in line and "no reply from node n-2" in line
    log.note("CP-9", "plan")
    await asyncio.sleep(0.1)
    assert len(_lines(caplog)) == 2 and "1 SetChargingProfile" in _lines(caplog)[1]
    await asyncio.sleep(0.1)
    assert len(_lines(caplog)) == 2  # nothing noted: nothing logged


async def test_timed_out_profiles_and_defaults_are_logged(caplog: pytest.LogCaptureFixture,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A TxProfile and a default that time out (through the service's send paths) are logged."""
    monkeypatch.setattr(timeouts, "LOG", timeouts.TimeoutLog(window_s=0.05))
    caplog.set_level(logging.WARNING, timeouts.__name__)
    clock, store = FixedClock(), CountingStore()
    store.sites[SITE] = {"limit_kw": "100"}
    _session(store, "CP-1", 3_000.0)
    svc = _service(store, Silent(clock, 100_000.0), clock)
    await _accept(svc, clock, "CP-1", 2_000.0)
    info = (await svc.evse_infos([("CP-1", 1)]))["CP-1/1"]
    await defaults._one(svc, SITE, info, {"evseId": 1}, 0.0)
    await asyncio.sleep(0.1)
    [line] = _lines(caplog)
    assert line.startswith("2 SetChargingProfile") and "default 1, plan 1" in line and "CP-1" in line
