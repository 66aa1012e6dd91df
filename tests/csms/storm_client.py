"""Many station connections at once, in a separate process (so the client's own CPU does not
compete with the node's event loop in the test process).

    python -m tests.csms.storm_client URL PASSWORD FIRST COUNT MODE OPEN_TIMEOUT

Station ids are `S{i:05d}` for i in FIRST..FIRST+COUNT. MODE `boot`: connect (one attempt),
send BootNotification, print a JSON summary once all are done, keep the connections open
until stdin closes. MODE `silent`: connect and never send anything; print a summary once every
connection was closed by the server (close codes and when).
"""

from __future__ import annotations

import asyncio
import json
import resource
import sys
import time
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus

from csms.core.security import basic_auth_header


def sid(i: int) -> str:
    """Station id of index `i`."""
    return f"S{i:05d}"


async def _open(url: str, station_id: str, password: str, timeout: float,
                stats: dict[str, Any]) -> ClientConnection | None:
    try:
        return await connect(url + station_id, subprotocols=["ocpp2.0.1"],  # type: ignore[list-item]
                             additional_headers={"Authorization": basic_auth_header(station_id, password)},
                             open_timeout=timeout, ping_interval=None, compression=None)
    except TimeoutError:
        stats["handshake_timeouts"] += 1
    except InvalidStatus as err:
        code = str(err.response.status_code)
        stats["refused"][code] = stats["refused"].get(code, 0) + 1
    except OSError as err:
        stats["refused"][type(err).__name__] = stats["refused"].get(type(err).__name__, 0) + 1
    return None


async def _boot(ws: ClientConnection, stats: dict[str, Any], start: float) -> None:
    await ws.send(json.dumps([2, "boot", "BootNotification", {
        "reason": "PowerUp", "chargingStation": {"model": "Storm", "vendorName": "Test"}}]))
    while True:
        msg = json.loads(await ws.recv())
        if msg[0] == 2:
            await ws.send(json.dumps([3, msg[1], {"status": "Accepted"}]))
        elif msg[1] == "boot":
            stats["booted_at"].append(time.monotonic() - start)
            return


async def main(url: str, password: str, first: int, count: int, mode: str, timeout: float) -> None:
    """Run one storm (see module docstring)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    stats: dict[str, Any] = {"handshake_timeouts": 0, "refused": {}, "booted_at": [], "connected": 0,
                             "close_codes": {}, "closed_at": []}
    start = time.monotonic()
    boot_errors: list[str] = []

    async def one(i: int) -> ClientConnection | None:
        ws = await _open(url, sid(i), password, timeout, stats)
        if ws is not None and mode == "boot":  # like a charger: BootNotification right away
            try:
                await _boot(ws, stats, start)
            except Exception as err:
                boot_errors.append(repr(err))
        return ws

    conns = await asyncio.gather(*(one(i) for i in range(first, first + count)))
    live = [c for c in conns if c is not None]
    stats["connected"] = len(live)
    stats["connected_s"] = time.monotonic() - start
    if mode == "boot":
        stats["boot_errors"] = boot_errors[:5]
        print(json.dumps(stats), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await asyncio.gather(*(c.close() for c in live), return_exceptions=True)
        return
    print(json.dumps({"connected": len(live), "connected_s": stats["connected_s"],
                      "handshake_timeouts": stats["handshake_timeouts"], "refused": stats["refused"]}),
          flush=True)

    async def wait_closed(ws: ClientConnection) -> None:
        await ws.wait_closed()
        code = str(ws.close_code)
        stats["close_codes"][code] = stats["close_codes"].get(code, 0) + 1
        stats["closed_at"].append(time.monotonic() - start)

    await asyncio.gather(*(wait_closed(c) for c in live))
    print(json.dumps({"close_codes": stats["close_codes"],
                      "last_closed_s": max(stats["closed_at"], default=0),
                      "close_reasons": sorted({c.close_reason or "" for c in live})[:3]}), flush=True)


if __name__ == "__main__":
    a = sys.argv[1:]
    asyncio.run(main(a[0], a[1], int(a[2]), int(a[3]), a[4], float(a[5])))
