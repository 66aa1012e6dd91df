"""A raw WebSocket station for tests: sends exact frames, answers CSMS CALLs on demand."""

from __future__ import annotations

import asyncio
import json
import ssl
import uuid
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from csms.core.security import basic_auth_header


class RawStation:
    """One station connection speaking raw OCPP-J frames."""

    def __init__(self, ws: ClientConnection, station_id: str) -> None:
        self.ws = ws
        self.station_id = station_id
        self.incoming_calls: asyncio.Queue[list[Any]] = asyncio.Queue()
        self._responses: dict[str, asyncio.Future[list[Any]]] = {}
        self.unsolicited: list[Any] = []
        self._reader = asyncio.create_task(self._read())
        self.auto_answer: dict[str, Any] = {}

    @classmethod
    async def connect(cls, url: str, station_id: str, password: str | None,
                      subprotocols: list[str] | None = None, ssl_ctx: ssl.SSLContext | None = None,
                      **kwargs: Any) -> RawStation:
        """Open a connection (raises websockets.InvalidStatus on a refused handshake)."""
        headers = {"Authorization": basic_auth_header(station_id, password)} if password is not None else {}
        ws = await connect(url + station_id, subprotocols=subprotocols or ["ocpp2.0.1"],  # type: ignore[arg-type]
                           additional_headers=headers, ssl=ssl_ctx, open_timeout=5, **kwargs)
        return cls(ws, station_id)

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                msg = json.loads(raw)
                if msg[0] == 2:
                    if msg[2] in self.auto_answer:
                        answer = self.auto_answer[msg[2]]
                        frame = answer(msg) if callable(answer) else [3, msg[1], answer]
                        if frame is not None:
                            await self.ws.send(json.dumps(frame))
                    else:
                        await self.incoming_calls.put(msg)
                elif msg[1] in self._responses:
                    self._responses.pop(msg[1]).set_result(msg)
                else:
                    self.unsolicited.append(msg)
        except Exception:  # connection closed
            pass
        finally:
            for fut in self._responses.values():
                if not fut.done():
                    fut.set_exception(ConnectionError("closed"))

    async def send_raw(self, text: str | bytes, expect_id: str | None = None,
                       timeout: float = 5) -> list[Any]:
        """Send any text; wait for the answer with message id `expect_id` (if given)."""
        fut: asyncio.Future[list[Any]] | None = None
        if expect_id is not None:
            fut = asyncio.get_running_loop().create_future()
            self._responses[expect_id] = fut
        await self.ws.send(text)
        if fut is None:
            return []
        return await asyncio.wait_for(fut, timeout)

    async def call(self, action: str, payload: dict[str, Any], timeout: float = 5) -> list[Any]:
        """Send a CALL and return the full answer frame ([3, id, payload] or [4, id, code, ...])."""
        uid = str(uuid.uuid4())
        return await self.send_raw(json.dumps([2, uid, action, payload]), expect_id=uid, timeout=timeout)

    async def ok(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        """CALL that must succeed; returns the CALLRESULT payload."""
        frame = await self.call(action, payload)
        assert frame[0] == 3, frame
        return frame[2]

    async def close(self) -> None:
        """Close the connection."""
        await self.ws.close()
        self._reader.cancel()


async def stream_events(redis: Any, types: set[str] | None = None) -> list[dict[str, Any]]:
    """Every event on `evfleet:events` (data decoded), optionally filtered by type."""
    out = []
    for _id, fields in await redis.xrange("evfleet:events"):
        if types is None or fields["type"] in types:
            out.append({**fields, "data": json.loads(fields["data"])})
    return out


async def wait_for(predicate: Any, timeout: float = 5.0, interval: float = 0.02) -> None:
    """Poll an async predicate until it is true (or fail)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        if await predicate():
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)
