"""Redis down means no answer, not a wrong answer: a real redis-server (AOF, fsync always) is
stopped (SIGTERM) and killed (SIGKILL) under stations that keep sending TransactionEvents over real
WebSockets; every event is stored exactly once and the node recovers by itself."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import tempfile
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest
from redis.asyncio import Redis
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from csms.app import running_csms
from csms.core.security import basic_auth_header
from csms.store.embedded import find_redis_server, free_port
from evfleet.keys import Keys, tx_ref
from evfleet.store.client import connect_redis
from tests.csms.conftest import PASSWORD, TEST_ITERATIONS, make_settings
from tests.csms.helpers import RawStation

KEYS = Keys("evfleet")


class AofRedis:
    """A redis-server with AOF and `appendfsync always` that a test can stop, kill and restart."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="evfleet-aof-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [find_redis_server(), "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
             "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, process_group=0)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                import socket
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            self.proc.wait(10)
        self.proc = None


@dataclass
class QueuedStation:
    """A station as OCPP wants it: a TransactionEvent leaves its queue only when answered with a
    CALLRESULT; a CALLERROR answer drops it (as real stations and evse_sim do, hence a loss)."""

    url: str
    station_id: str
    queue: deque[dict[str, Any]] = field(default_factory=deque)
    generated: list[tuple[str, int]] = field(default_factory=list)
    answered: list[tuple[str, int]] = field(default_factory=list)
    call_errors: list[list[Any]] = field(default_factory=list)
    connects: int = 0
    refused: int = 0
    close_codes: list[int | None] = field(default_factory=list)

    def add(self, txid: str, seq: int, event_type: str) -> None:
        self.generated.append((txid, seq))
        self.queue.append({"eventType": event_type, "timestamp": "2026-03-02T17:00:00Z",
                           "triggerReason": "MeterValuePeriodic", "seqNo": seq,
                           "transactionInfo": {"transactionId": txid},
                           "evse": {"id": 1, "connectorId": 1}})

    async def _call(self, ws: Any, action: str, payload: dict[str, Any]) -> list[Any]:
        uid = str(uuid.uuid4())
        await ws.send(json.dumps([2, uid, action, payload]))
        while True:
            msg = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if msg[0] != 2 and msg[1] == uid:
                return list(msg)

    async def run(self, done: asyncio.Event) -> None:
        while not (done.is_set() and not self.queue):
            try:
                async with connect(self.url + self.station_id, subprotocols=["ocpp2.0.1"],  # type: ignore[list-item]
                                   additional_headers={"Authorization": basic_auth_header(
                                       self.station_id, PASSWORD)}, open_timeout=5) as ws:
                    self.connects += 1
                    await self._call(ws, "BootNotification", {
                        "reason": "PowerUp", "chargingStation": {"model": "M", "vendorName": "V"}})
                    while not (done.is_set() and not self.queue):
                        if not self.queue:
                            await asyncio.sleep(0.01)
                            continue
                        payload = self.queue[0]
                        answer = await self._call(ws, "TransactionEvent", payload)
                        key = (payload["transactionInfo"]["transactionId"], payload["seqNo"])
                        if answer[0] == 3:
                            self.answered.append(key)
                        else:
                            self.call_errors.append(answer)
                        self.queue.popleft()
            except InvalidStatus as err:
                assert err.response.status_code == 503, err  # never 401 while Redis is down
                self.refused += 1
                await asyncio.sleep(0.2)
            except ConnectionClosed as err:
                self.close_codes.append(err.rcvd.code if err.rcvd else None)
                await asyncio.sleep(0.2)
            except (OSError, TimeoutError):
                await asyncio.sleep(0.2)


async def produce(stations: list[QueuedStation], stop: asyncio.Event, every_s: float = 0.03) -> None:
    """Each station runs transactions of 8 events (Started, 6 Updated, Ended), one after another."""
    n = 0
    while not stop.is_set():
        for st in stations:
            tx, seq = divmod(n, 8)
            kind = "Started" if seq == 0 else "Ended" if seq == 7 else "Updated"
            st.add(f"{st.station_id}-tx{tx}", seq, kind)
        n += 1
        await asyncio.sleep(every_s)
    # finish the open transactions so every one has an end
    while n % 8:
        for st in stations:
            tx, seq = divmod(n, 8)
            st.add(f"{st.station_id}-tx{tx}", seq, "Ended" if seq == 7 else "Updated")
        n += 1


async def test_transaction_events_survive_redis_stop_and_kill() -> None:
    server = AofRedis()
    server.start()
    try:
        await _run_outages(server)
    finally:
        server.stop(signal.SIGKILL)


async def _run_outages(server: AofRedis) -> None:
    from csms.store.provisioning import provision_station

    admin = connect_redis(server.url)
    for i in range(3):
        await provision_station(admin, KEYS, f"RQ-{i}", PASSWORD, iterations=TEST_ITERATIONS)
    await admin.aclose()
    async with running_csms(make_settings(server.url), services=[]) as node:
        stations = [QueuedStation(node.url, f"RQ-{i}") for i in range(3)]
        done, stop_producing = asyncio.Event(), asyncio.Event()
        runners = [asyncio.create_task(st.run(done)) for st in stations]
        producer = asyncio.create_task(produce(stations, stop_producing))
        await asyncio.sleep(1.5)
        for sig in (signal.SIGTERM, signal.SIGKILL, signal.SIGKILL):
            server.stop(sig)
            await asyncio.sleep(2.0)  # events pile up in the stations' queues
            server.start()
            await asyncio.sleep(1.5)
        stop_producing.set()
        await producer
        done.set()
        await asyncio.wait_for(asyncio.gather(*runners), 60)
        assert all(st.connects >= 2 for st in stations), [st.connects for st in stations]
        assert any(st.refused for st in stations)  # handshakes while Redis was down: 503, not 401
        codes = {c for st in stations for c in st.close_codes}
        assert 1013 in codes and codes <= {1013}, codes  # closed "try again later", never 1011
        # the node recovered by itself: a station connects, and a command reaches it through Redis
        extra = await RawStation.connect(node.url, "RQ-0", PASSWORD)
        extra.auto_answer["ClearCache"] = {"status": "Accepted"}
        await extra.ok("BootNotification", {"reason": "PowerUp",
                                            "chargingStation": {"model": "M", "vendorName": "V"}})
        reply = await node.ctx.extras["commands"].call("RQ-0", "ClearCache", {}, timeout_s=10)
        assert reply.payload == {"status": "Accepted"}, reply
        await extra.close()

        redis: Redis = connect_redis(server.url)
        checked = lost = duplicated = 0
        for st in stations:
            assert st.call_errors == [], st.call_errors[:3]
            assert sorted(st.answered) == sorted(st.generated)
            by_tx: dict[str, set[int]] = {}
            for txid, seq in st.generated:
                by_tx.setdefault(txid, set()).add(seq)
            for txid, seqs in by_tx.items():
                stored = [json.loads(raw)["seqNo"] for raw in
                          await redis.lrange(KEYS.transaction_events(f"{st.station_id}:{txid}"), 0, -1)]
                checked += len(seqs)
                lost += len(seqs - set(stored))
                duplicated += len(stored) - len(set(stored))
                assert {int(x.split(":")[0]) for x in await redis.smembers(
                    KEYS.transaction_seqnos(f"{st.station_id}:{txid}"))} == seqs
        await redis.aclose()
        print(f"\nredis outage: {checked} TransactionEvents checked, {lost} lost, {duplicated} duplicated; "
              f"connects {[st.connects for st in stations]}, refused handshakes "
              f"{[st.refused for st in stations]}")
        assert checked > 300 and lost == 0 and duplicated == 0


async def test_redis_refusing_writes_gives_no_answer_then_recovers() -> None:
    """Redis up but refusing writes (OOM under `maxmemory` with noeviction): the TransactionEvent is
    not answered, the connection closes with 1013, and once Redis takes writes again the station's
    resend is stored exactly once."""
    from csms.store.provisioning import provision_station

    server = AofRedis()
    server.start()
    admin = connect_redis(server.url)
    try:
        await provision_station(admin, KEYS, "RQ-OOM", PASSWORD, iterations=TEST_ITERATIONS)
        async with running_csms(make_settings(server.url), services=[]) as node:
            st = await RawStation.connect(node.url, "RQ-OOM", PASSWORD)
            await st.ok("Heartbeat", {})
            event = {"eventType": "Started", "timestamp": "2026-03-02T17:00:00Z",
                     "triggerReason": "Authorized", "seqNo": 0,
                     "transactionInfo": {"transactionId": "TX-OOM"}, "evse": {"id": 1, "connectorId": 1}}
            await admin.config_set("maxmemory-policy", "noeviction")
            await admin.config_set("maxmemory", "1")  # every write is refused with OOM
            try:
                with contextlib.suppress(ConnectionError):
                    answer = await st.call("TransactionEvent", event, timeout=10)
                    raise AssertionError(f"answered while Redis refused writes: {answer}")
                await asyncio.wait_for(st.ws.wait_closed(), 5)
                assert st.ws.close_code == 1013 and st.unsolicited == []
            finally:
                await admin.config_set("maxmemory", "0")
            st = await RawStation.connect(node.url, "RQ-OOM", PASSWORD)
            await st.ok("TransactionEvent", event)  # the station's resend
            await st.ok("TransactionEvent", event)  # and a duplicate of it: a replay
            await st.close()
        stored = await admin.lrange(KEYS.transaction_events(tx_ref("RQ-OOM", "TX-OOM")), 0, -1)
        assert [json.loads(raw)["seqNo"] for raw in stored] == [0]
    finally:
        await admin.aclose()
        server.stop(signal.SIGKILL)


async def test_a_transaction_event_on_a_silent_lean_connection_is_not_answered(
        redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The node's per-message connection (`evfleet.store.lean`) goes silent (a half-open connection)
    while redis-py's stay fine: the TransactionEvent written on it is not answered, the station is
    closed 1013 as on any outage (not left waiting for ever), and its resend on a new connection is
    stored exactly once."""
    import csms.app
    from csms.store.provisioning import provision_station
    from evfleet.store.lean import LeanRedis
    from tests.evfleet.test_lean_redis import SilencingProxy

    proxy = SilencingProxy(int(redis_url.rsplit(":", 1)[1].split("/")[0]))
    proxied = await proxy.start()
    monkeypatch.setattr(csms.app, "LeanRedis", SimpleNamespace(
        from_url=lambda _url: LeanRedis.from_url(proxied, reply_timeout_s=1.0, check_s=0.1)))
    admin = connect_redis(redis_url)
    try:
        await provision_station(admin, KEYS, "RQ-MUTE", PASSWORD, iterations=TEST_ITERATIONS)
        async with running_csms(make_settings(redis_url), services=[]) as node:
            st = await RawStation.connect(node.url, "RQ-MUTE", PASSWORD)
            await st.ok("Heartbeat", {})  # through the lean connection
            assert proxy.connections == 1
            event = {"eventType": "Started", "timestamp": "2026-03-02T17:00:00Z",
                     "triggerReason": "Authorized", "seqNo": 0,
                     "transactionInfo": {"transactionId": "TX-MUTE"}, "evse": {"id": 1, "connectorId": 1}}
            proxy.silence()
            with contextlib.suppress(ConnectionError):  # at main: no answer and no close (TimeoutError)
                answer = await st.call("TransactionEvent", event, timeout=15)
                raise AssertionError(f"answered while its write went unanswered: {answer}")
            await asyncio.wait_for(st.ws.wait_closed(), 5)
            assert st.ws.close_code == 1013 and st.unsolicited == []
            st = await RawStation.connect(node.url, "RQ-MUTE", PASSWORD)
            await st.ok("TransactionEvent", event)  # the station's resend, on a new lean connection
            await st.close()
            assert proxy.connections == 2
        stored = await admin.lrange(KEYS.transaction_events(tx_ref("RQ-MUTE", "TX-MUTE")), 0, -1)
        assert [json.loads(raw)["seqNo"] for raw in stored] == [0]
    finally:
        await admin.aclose()
        await proxy.stop()
