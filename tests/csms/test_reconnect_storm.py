"""Reconnect storms and stations that never boot: real node, real Redis, client connections from
a separate process (tests/csms/storm_client.py)."""

from __future__ import annotations

import asyncio
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from csms.app import running_csms
from csms.core.security import hash_password
from evfleet.keys import Keys
from evfleet.store.client import hmap
from tests.csms.conftest import make_settings
from tests.csms.helpers import RawStation, wait_for
from tests.csms.storm_client import sid

REPO = Path(__file__).resolve().parents[2]
STORM_PASSWORD = "storm-secret-0123456789"  # 23 characters: the fast keyed hash
CLIENT_OPEN_TIMEOUT_S = 60.0  # a charger's connection timeout; generous for a loaded machine


def _raise_nofile(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < min(need, hard):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def _provision_many(redis: Redis, n: int, booted: bool) -> None:
    keys = Keys()
    pipe = redis.pipeline(transaction=False)
    for i in range(n):
        cred = hash_password(STORM_PASSWORD)
        pipe.sadd(keys.stations(), sid(i))
        pipe.hset(keys.station_credentials(sid(i)),
                  mapping=hmap({**cred.to_fields(), "security_profile": "1"}))
        fields = {"site_id": "storm", "compat": "0", "online": "0"}
        if booted:
            fields["last_boot"] = "2026-01-01T00:00:00+00:00"
        pipe.hset(keys.station(sid(i)), mapping=fields)
    await pipe.execute()


def _clients(url: str, n: int, mode: str, processes: int = 2) -> list[subprocess.Popen[str]]:
    per = [n // processes + (1 if i < n % processes else 0) for i in range(processes)]
    procs, first = [], 0
    for count in per:
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "tests.csms.storm_client", url, STORM_PASSWORD, str(first), str(count),
             mode, str(CLIENT_OPEN_TIMEOUT_S)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            cwd=str(REPO)))
        first += count
    return procs


async def _read_line(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any]:
    assert proc.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), timeout)
    assert line, f"client exited with {proc.poll()}"
    return dict(json.loads(line))


async def _online(redis: Redis, n: int) -> int:
    pipe = redis.pipeline(transaction=False)
    for i in range(n):
        pipe.hget(f"evfleet:station:{sid(i)}", "online")
    return sum(1 for v in await pipe.execute() if v == "1")


async def test_1000_stations_reconnect_at_once_with_zero_handshake_timeouts(redis_url: str,
                                                                            redis: Redis) -> None:
    n = 1000
    _raise_nofile(4 * n)
    await _provision_many(redis, n, booted=True)
    async with running_csms(make_settings(redis_url), services=[]) as node:
        procs = _clients(node.url, n, "boot")
        try:
            outs = [await _read_line(p, 240) for p in procs]
            assert sum(o["handshake_timeouts"] for o in outs) == 0, outs[0]
            assert [o["refused"] for o in outs] == [{}] * len(procs)
            assert sum(o["connected"] for o in outs) == n  # every one on its first try
            assert sum(len(o["booted_at"]) for o in outs) == n, [o["boot_errors"] for o in outs]
            assert len(node.registry) == n
            assert await _online(redis, n) == n
            assert node.server.gate.queued == 0
            times = sorted(t for o in outs for t in o["booted_at"])
            print(f"\n1000-station storm: median {times[n // 2]:.1f} s, last {times[-1]:.1f} s")
        finally:
            for p in procs:
                p.communicate(timeout=60)
        await wait_for(lambda: _none_online(redis, n), timeout=60)
        assert len(node.registry) == 0


async def _none_online(redis: Redis, n: int) -> bool:
    return await _online(redis, n) == 0


async def test_connections_that_never_boot_are_closed_and_hold_no_state(redis_url: str, redis: Redis) -> None:
    n = 2000
    _raise_nofile(4 * n)
    await _provision_many(redis, n, booted=False)
    boot_timeout_s = 5.0
    settings = make_settings(redis_url, boot_timeout_s=boot_timeout_s)
    async with running_csms(settings, services=[]) as node:
        # a station that boots in time stays connected
        booted = await RawStation.connect(node.url, sid(n - 1), STORM_PASSWORD)
        await booted.ok("BootNotification", {"reason": "PowerUp",
                                             "chargingStation": {"model": "M", "vendorName": "V"}})
        procs = _clients(node.url, n - 1, "silent")
        try:
            started = time.monotonic()
            opened = [await _read_line(p, 240) for p in procs]
            assert sum(o["connected"] for o in opened) == n - 1, opened
            closed = [await _read_line(p, 240) for p in procs]
            elapsed = time.monotonic() - started
            codes: dict[str, int] = {}
            for c in closed:
                for code, count in c["close_codes"].items():
                    codes[code] = codes.get(code, 0) + count
            assert codes == {"1008": n - 1}, closed
            assert any("BootNotification" in r for c in closed for r in c["close_reasons"])
            # closed after the boot timeout, not at once (connecting itself took part of `elapsed`)
            assert min(c["last_closed_s"] for c in closed) >= boot_timeout_s
            print(f"\n{n - 1} unbooted connections closed; last {elapsed:.1f} s after the storm began")
        finally:
            for p in procs:
                p.communicate(timeout=60)
        # no state left: not online, not in the registry, no open connections, no gate slots
        await wait_for(lambda: _online_count_is(redis, n - 1, 0), timeout=30)
        assert node.registry.station_ids() == [sid(n - 1)]
        assert len(node.server._server.connections) == 1  # type: ignore[union-attr]
        await wait_for(lambda: _gate_idle(node.server.gate), timeout=10)
        assert booted.ws.close_code is None
        await booted.ok("Heartbeat", {})
        await booted.close()


async def _online_count_is(redis: Redis, n: int, want: int) -> bool:
    return await _online(redis, n) == want


async def _gate_idle(gate: Any) -> bool:
    return bool(gate.in_flight == 0 and gate.queued == 0)
