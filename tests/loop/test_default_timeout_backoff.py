"""A TxDefaultProfile whose call timed out is sent again after a per-EVSE backoff, not in every
pass (`defaults.TimeoutBackoff`): re-sending at once to stations whose node was behind sent up to
6 defaults per EVSE at start-up and fed the timeouts (issue 14). Meanwhile the EVSE counts at the
higher of the limits it may hold."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from csms.command_types import CommandReply, Outcome
from csms.settings import CsmsSettings
from csms.smart_charging import defaults
from csms.smart_charging.service import SmartChargingService
from evfleet.events import Event, EventType
from evfleet.store.memory import InMemoryStateStore
from tests.loop.test_service_unit import SITE, FixedClock, Stations, _until

EVSE = ("CP-1", 1)


class Unanswering(Stations):
    """Stations that let SetChargingProfile time out (after the call timeout) while `silent`."""

    def __init__(self, clock: FixedClock) -> None:
        super().__init__(clock, 20_000.0)
        self.silent = True

    async def call(self, station_id: str, action: str, payload: dict[str, Any],
                   timeout_s: float | None = None) -> CommandReply:
        if not self.silent:
            return await super().call(station_id, action, payload, timeout_s)
        self.sent.append((station_id, payload))
        await asyncio.sleep(timeout_s or 30.0)
        return CommandReply(request_id="r", station_id=station_id, action=action, outcome=Outcome.TIMEOUT,
                            error={"code": "timeout", "description": "no reply"})


async def _counted_w(svc: SmartChargingService, clock: FixedClock) -> float:
    info = (await svc.evse_infos([EVSE]))["CP-1/1"]
    return max(w for _, w in info.applied(clock.timestamp()))


async def _timed_out(backoff_s: float) -> tuple[FixedClock, InMemoryStateStore, Unanswering,
                                                 SmartChargingService]:
    """CP-1 holds an 11 kW default; the reservation (0 W per idle EVSE) lowers it; that call times out."""
    clock, store = FixedClock(), InMemoryStateStore()
    store.sites[SITE] = {"limit_kw": "20"}
    store.add_evse("CP-1", 1, site_id=SITE, max_power_w="22000", rate_unit="W", default_limit_w="11000.0")
    stations = Unanswering(clock)
    settings = CsmsSettings(default_site=SITE, call_timeout_s=0.05, default_timeout_backoff_s=backoff_s,
                            default_timeout_backoff_max_s=backoff_s)
    svc = SmartChargingService(store, clock, settings, "node-a", stations)  # type: ignore[arg-type]
    assert await svc.ensure_defaults(SITE) == 1
    await _until(lambda: any(e.type == EventType.PROFILE_ANSWERED for e in store.typed_events()), "timed out")
    return clock, store, stations, svc


def _stop(svc: SmartChargingService) -> None:
    for site in svc.sites.values():
        if site.task:
            site.task.cancel()


async def test_a_timed_out_default_waits_for_its_backoff_and_counts_at_the_higher_limit() -> None:
    clock, store, stations, svc = await _timed_out(0.3)
    try:
        await asyncio.sleep(0.1)  # the old code re-sent at once (a pass queued by the timeout)
        for _ in range(3):  # passes during the backoff (boots, new EVSEs, limit changes) skip it
            assert await svc.ensure_defaults(SITE) == 0
            assert await defaults.run_pass(svc, SITE) == 0
        assert len(stations.sent) == 1 and svc.defaults.timeouts.waiting(EVSE, clock.timestamp())
        # unknown whether it holds 0 W or still 11 kW: counted at 11 kW throughout
        assert await _counted_w(svc, clock) == 11_000.0
        assert "default_limit_w" in store.evses[EVSE] and store.evses[EVSE]["default_limit_w"] == "11000.0"

        stations.silent = False  # it answers again; its wait is over (the clock passes it)
        clock.t += timedelta(seconds=1)
        await _until(lambda: len(stations.sent) == 2, "sent again after the backoff")
        await _until(lambda: store.evses[EVSE].get("default_limit_w") == "0.0", "accepted")
        assert EVSE not in svc.defaults.timeouts.waits  # the answer reset its backoff
        assert await _counted_w(svc, clock) == 0.0
        assert await svc.ensure_defaults(SITE) == 0 and len(stations.sent) == 2
    finally:
        _stop(svc)


async def test_a_reconnect_ends_the_wait() -> None:
    """The station reconnects (maybe to a node that answers): its default goes in the next pass."""
    clock, store, stations, svc = await _timed_out(600.0)
    try:
        assert len(stations.sent) == 1 and svc.defaults.timeouts.waiting(EVSE, clock.timestamp())
        stations.silent = False
        connected = Event(type=EventType.STATION_CONNECTED, station_id="CP-1", site_id=SITE, ts=clock.now())
        await svc.dispatch(connected)
        await _until(lambda: store.evses[EVSE].get("default_limit_w") == "0.0", "sent and accepted")
        assert len(stations.sent) == 2
    finally:
        _stop(svc)


async def test_the_wait_doubles_with_jitter_up_to_its_cap_and_an_answer_resets_it() -> None:
    backoff = defaults.TimeoutBackoff(10.0, 40.0)
    waits = [backoff.timed_out(EVSE, 0.0) for _ in range(5)]
    assert all(2.0 <= w <= 40.0 for w in waits) and backoff.waits[EVSE].attempt == 5
    assert backoff.waits[EVSE].cap() == 40.0 and backoff.waiting(EVSE, 1.9)
    backoff.reset(EVSE)
    assert not backoff.waiting(EVSE, 0.0) and EVSE not in backoff.waits
