"""The station restarts an EV's communication that gave up (or whose EVCC process ended) while the EV
is plugged in, as a charger does, at most MAX_EV_RESTARTS times per plug-in; not after the EV stopped.

Josev's EVCC alone, once its SDP retry cycles are used up (sessions failed on its 2 s timeouts at a
busy SECC), logs "Unplug and plug in the cable again" and waits: the car would never charge with
HLC. Here the runners are stand-ins (a few lines of Python speaking the bridge protocol) inside the
real namespace holder, so the test needs no JVM.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest

from evfleet.clock import RealClock
from evse_sim.iso15118 import bridge
from evse_sim.iso15118.bridge import MAX_EV_RESTARTS, JosevHlc
from evse_sim.iso15118.messages import EvNeeds
from evse_sim.iso15118.netns import check
from evse_sim.iso15118.secc import SeccConfig

CAP = check()
pytestmark = [pytest.mark.iso15118, pytest.mark.timeout(60),
              pytest.mark.skipif(not CAP.ok, reason=CAP.explain())]

RUNNER = r"""
import json, os, socket, sys, time
sock = socket.socket(socket.AF_UNIX)
sock.connect(sys.argv[1])
role, how = sys.argv[2], sys.argv[3]
def send(**msg):
    sock.sendall((json.dumps(msg) + "\n").encode())
send(op="hello", role=role, name="evse1", pid=os.getpid())
send(op="ready")
if role == "evcc" and how == "gives_up":  # what the patched Josev EVCC says, then it idles
    send(op="hlc_gave_up", reason="maximum number of SDP retry cycles (5) is now reached")
elif role == "evcc" and how == "exits":
    time.sleep(0.2)
    sys.exit(1)
time.sleep(600)
"""


async def _run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str) -> JosevHlc:
    def stand_in(role: str, socket_path: Path, *_args: Any, **_kwargs: Any) -> list[str]:
        return [sys.executable, "-c", RUNNER, str(socket_path), role, how]

    monkeypatch.setattr(bridge, "runner_argv", stand_in)
    monkeypatch.setattr(bridge, "STAGGER_S", 0.05)
    hlc = JosevHlc(object(), RealClock(), SeccConfig(), workdir=tmp_path)  # type: ignore[arg-type]
    await hlc.open(timeout_s=30)
    return hlc


def _evcc_pids(hlc: JosevHlc) -> list[int]:
    return [d["pid"] for _, k, d in hlc.events if k == "hello" and d.get("role") == "evcc"]


@pytest.mark.parametrize("how", ["gives_up", "exits"])
async def test_an_ev_that_gave_up_gets_a_new_evcc_a_bounded_number_of_times(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    hlc = await _run(tmp_path, monkeypatch, how)
    try:
        hlc.start(EvNeeds(departure_time_s=3600, energy_wh=10_000, ev_max_current_a=16))
        deadline = asyncio.get_running_loop().time() + 30
        while hlc.ev_restarts < MAX_EV_RESTARTS or len(_evcc_pids(hlc)) < 1 + MAX_EV_RESTARTS:
            assert asyncio.get_running_loop().time() < deadline, hlc.events
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)  # no more after the last one gave up too
        pids = _evcc_pids(hlc)
        assert len(pids) == len(set(pids)) == 1 + MAX_EV_RESTARTS, pids
        assert hlc.ev_restarts == MAX_EV_RESTARTS
        assert hlc.failed == (how == "gives_up")  # an EVCC that ended before any session: no session failed
        assert hlc.holder is not None
        assert all(hlc.holder.exited(pid) is not None for pid in pids[:-1])  # each replaced EVCC ended
    finally:
        await hlc.close()


async def test_no_restart_once_the_ev_stopped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hlc = await _run(tmp_path, monkeypatch, "exits")
    try:
        hlc.start(EvNeeds(departure_time_s=3600, energy_wh=10_000, ev_max_current_a=16))
        await hlc.wait_evcc_ready(20)
        hlc.stop()  # the EV leaves: its EVCC ending is no failure
        await asyncio.sleep(1.0)
        assert hlc.ev_restarts == 0 and len(_evcc_pids(hlc)) == 1
    finally:
        await hlc.close()


async def test_no_restart_when_the_station_closes_the_link(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hlc = await _run(tmp_path, monkeypatch, "stays")
    closed = False
    try:
        hlc.start(EvNeeds(departure_time_s=3600, energy_wh=10_000, ev_max_current_a=16))
        await hlc.wait_evcc_ready(20)
        await hlc.close()  # the EV still plugged in: its EVCC ends with the namespace
        closed = True
        await asyncio.sleep(0.5)
        assert hlc.ev_restarts == 0 and hlc.errors == [], (hlc.ev_restarts, hlc.errors)
    finally:
        if not closed:
            await hlc.close()
