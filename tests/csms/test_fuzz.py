"""Fuzz: >= 10,000 hostile frames (tests/csms/fuzzframes.py) over real WebSockets at a live node with
the operator API, while a well-behaved station keeps charging and an operator keeps reading.

Asserted: every CALL gets its CALLERROR (the right message id; the right code where the frame
says which), frames that must not be answered are not, oversized frames close with 1009 and
nothing else closes a connection (0 crashes: no 1011, no handler traceback, every node task
alive, no error logged by the station side), nothing from a rejected frame is stored, the good
station is served throughout (within 5 s, generous for a loaded machine), and the API answers
200 throughout. `-m soak` runs 100,000 frames.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from csms.api.tokens import TokenStore
from csms.app import API_SERVICE, CsmsNode, running_csms
from csms.core.security import basic_auth_header
from csms.protocol.framing import schema_violation
from csms.store.provisioning import provision_station
from evfleet.clock import RealClock
from evfleet.keys import Keys
from evfleet.store.client import as_str, connect_redis
from tests.csms.conftest import PASSWORD, TEST_ITERATIONS, make_settings
from tests.csms.fuzzframes import BASES, Hostile, hostile_frames
from tests.waiting import until

KEYS = Keys("evfleet")
FUZZERS = 8
CONNECTION_FIELDS = {"online", "node", "conn_id", "connected_at", "remote_addr", "last_seen",
                     "security_profile", "disconnected_at", "close_code", "close_reason", "ocpp_version"}


@dataclass
class FuzzStats:
    """What one fuzzing connection saw."""

    sent: Counter[str] = field(default_factory=Counter)
    answered: int = 0
    wrong: list[str] = field(default_factory=list)
    closes: Counter[int | None] = field(default_factory=Counter)
    reconnects: int = 0


async def _open(url: str, sid: str) -> ClientConnection:
    return await connect(url + sid, subprotocols=["ocpp2.0.1"],  # type: ignore[list-item]
                         additional_headers={"Authorization": basic_auth_header(sid, PASSWORD)},
                         open_timeout=10, max_size=None, ping_interval=None)


async def _fuzz_one(url: str, sid: str, frames: list[Hostile], stats: FuzzStats) -> None:
    ws = await _open(url, sid)
    for h in frames:
        stats.sent[h.kind] += 1
        try:
            await ws.send(h.frame)
            if h.expect == "silent":
                continue
            answer = json.loads(await asyncio.wait_for(ws.recv(), 10))
        except ConnectionClosed as err:
            code = err.rcvd.code if err.rcvd else None
            stats.closes[code] += 1
            if h.expect != "close" or code != 1009:
                stats.wrong.append(f"{h.kind}: closed {code} for {str(h.frame)[:120]!r}")
            stats.reconnects += 1
            ws = await _open(url, sid)
            continue
        if h.expect == "close":
            stats.wrong.append(f"{h.kind}: answered instead of closed: {answer}")
            continue
        stats.answered += 1
        if not (isinstance(answer, list) and answer[0] == 4 and len(answer) == 5):
            stats.wrong.append(f"{h.kind}: not a CALLERROR {answer} for {str(h.frame)[:120]!r}")
        elif h.uid is not None and answer[1] != h.uid:
            stats.wrong.append(f"{h.kind}: answer {answer[:3]} for message id {h.uid}")
        elif h.code is not None and answer[2] != h.code:
            stats.wrong.append(f"{h.kind}: {answer[2]} instead of {h.code}: {answer[3]}")
    # a silent frame answered by mistake would show up here
    try:
        extra = await asyncio.wait_for(ws.recv(), 0.5)
        stats.wrong.append(f"unexpected answer {str(extra)[:200]}")
    except TimeoutError:
        pass
    await ws.close()


async def _good_station(url: str, stop: asyncio.Event, latencies: list[float], failures: list[str]) -> int:
    """A station charging normally: Heartbeat and TransactionEvent, each answered and stored."""
    ws = await _open(url, "GOOD-1")

    async def call(action: str, payload: dict[str, Any]) -> list[Any]:
        uid = str(uuid.uuid4())
        started = time.perf_counter()
        await ws.send(json.dumps([2, uid, action, payload]))
        answer = json.loads(await asyncio.wait_for(ws.recv(), 10))
        latencies.append(time.perf_counter() - started)
        if answer[:2] != [3, uid]:
            failures.append(f"{action}: {answer}")
        return list(answer)

    await call("BootNotification", BASES["BootNotification"])
    seq = 0
    while not stop.is_set():
        await call("Heartbeat", {})
        await call("TransactionEvent", {**BASES["TransactionEvent"], "seqNo": seq,
                                        "eventType": "Started" if seq == 0 else "Updated",
                                        "transactionInfo": {"transactionId": "GOOD-TX"},
                                        "idToken": {"idToken": "GOOD-TOKEN", "type": "ISO14443"}})
        seq += 1
        await asyncio.sleep(0.05)
    await ws.close()
    return seq


async def _operator(api_url: str, token: str, stop: asyncio.Event, statuses: Counter[int]) -> None:
    async with httpx.AsyncClient(base_url=api_url, headers={"Authorization": f"Bearer {token}"},
                                 timeout=10) as http:
        while not stop.is_set():
            for path in ("/api/v1/stations", "/api/v1/events?limit=100", "/api/v1/sites", "/metrics"):
                statuses[(await http.get(path)).status_code] += 1
            await asyncio.sleep(0.3)


async def _station_state(redis: Redis, sid: str) -> dict[str, Any]:
    """Everything stored about a station except connection bookkeeping and its quota counter."""
    keys = sorted(as_str(k) for k in await redis.keys(f"evfleet:station:{sid}*")
                  if ":quota:" not in as_str(k))
    state: dict[str, Any] = {"keys": keys}
    fields = await redis.hgetall(KEYS.station(sid))
    state["hash"] = {k: v for k, v in fields.items() if k not in CONNECTION_FIELDS}
    return state


async def run_fuzz(redis_url: str, frames_total: int, caplog: pytest.LogCaptureFixture,
                   strict_logs: bool = False) -> dict[str, Any]:
    """Run the fuzz against a fresh node; returns the figures (asserts inside)."""
    for action, payload in BASES.items():  # the mutations start from valid payloads
        assert schema_violation(action, payload) is None, action
    settings = make_settings(redis_url, api_enabled=True, api_host="127.0.0.1", api_port=0,
                             rate_limit_per_s=1e6, rate_limit_burst=1_000_000)
    redis = connect_redis(redis_url)
    fuzz_ids = [f"FZ-{i}" for i in range(FUZZERS)]
    for sid in [*fuzz_ids, "GOOD-1"]:
        await provision_station(redis, KEYS, sid, PASSWORD, iterations=TEST_ITERATIONS, site_id="depot")
    viewer, _ = await TokenStore(redis, KEYS, RealClock()).create("fuzz-viewer", "viewer")
    caplog.set_level(logging.WARNING)
    async with running_csms(settings, services=[API_SERVICE]) as node:
        await until(lambda: node.ctx.api_port, 10)
        api_url = f"http://127.0.0.1:{node.ctx.api_port}"
        for sid in fuzz_ids:  # boot once, properly: what follows must change nothing
            ws = await _open(node.url, sid)
            await ws.send(json.dumps([2, "boot", "BootNotification", BASES["BootNotification"]]))
            assert json.loads(await ws.recv())[0] == 3
            await ws.close()
        await until(lambda: all(node.registry.get(s) is None for s in fuzz_ids), 10)
        before = {sid: await _station_state(redis, sid) for sid in fuzz_ids}
        stream_tail = (await redis.xrevrange(KEYS.events(), count=1))[0][0]

        frames = list(hostile_frames(frames_total))
        stats = [FuzzStats() for _ in fuzz_ids]
        stop = asyncio.Event()
        latencies: list[float] = []
        good_failures: list[str] = []
        statuses: Counter[int] = Counter()
        good = asyncio.create_task(_good_station(node.url, stop, latencies, good_failures))
        operator = asyncio.create_task(_operator(api_url, viewer, stop, statuses))
        started = time.perf_counter()
        await asyncio.gather(*(_fuzz_one(node.url, sid, frames[i::FUZZERS], st)
                               for i, (sid, st) in enumerate(zip(fuzz_ids, stats, strict=True))))
        elapsed = time.perf_counter() - started
        stop.set()
        good_events = await good
        await operator
        _assert_node_alive(node)

        wrong = [w for st in stats for w in st.wrong]
        assert wrong == [], f"{len(wrong)} wrong reactions, first: {wrong[:5]}"
        crashes = sum(n for st in stats for code, n in st.closes.items() if code != 1009)
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
        # the station side must never fail; elsewhere (on a saturated machine) a Redis read that
        # timed out in the live feed is logged and retried: counted, not a crash (the API's answers
        # are asserted below)
        station_side = [r for r in errors if r.name.startswith(("csms.protocol", "websockets"))]
        assert crashes == 0 and station_side == [], [r.getMessage() for r in station_side[:5]]
        if strict_logs:
            assert errors == [], [r.getMessage() for r in errors[:5]]

        stored_from_rejected, kinds = await _stored_from_rejected(redis, fuzz_ids, before, stream_tail)
        assert stored_from_rejected == 0, kinds

        assert good_failures == [] and good_events > 10
        assert len(await redis.lrange(KEYS.transaction_events("GOOD-1:GOOD-TX"), 0, -1)) == good_events
        assert set(statuses) == {200} and sum(statuses.values()) >= 8, statuses
        sent = sum(sum(st.sent.values()) for st in stats)
        figures = {"frames": sent, "seconds": round(elapsed, 1), "crashes": crashes,
                   "stored_from_rejected": stored_from_rejected,
                   "answered": sum(st.answered for st in stats),
                   "closed_1009": sum(st.closes[1009] for st in stats),
                   "good_station_events": good_events, "good_max_latency_s": round(max(latencies), 3),
                   "api_requests": sum(statuses.values()), "other_logged_errors": len(errors),
                   "by_kind": dict(sum((st.sent for st in stats), Counter()))}
        print(f"\nfuzz: {json.dumps(figures)}")
    await redis.aclose()
    return figures


async def _stored_from_rejected(redis: Redis, fuzz_ids: list[str], before: dict[str, dict[str, Any]],
                                stream_tail: Any) -> tuple[int, Counter[str]]:
    """Anything the fuzz stations changed: their keys and hash fields (connection bookkeeping and
    quota counters aside), stream events other than refusals and connects, any FUZZ key."""
    changed = 0
    for sid in fuzz_ids:
        after = await _station_state(redis, sid)
        changed += len(set(after["keys"]) ^ set(before[sid]["keys"]))
        changed += sum(1 for k in set(after["hash"]) | set(before[sid]["hash"])
                       if after["hash"].get(k) != before[sid]["hash"].get(k))
    new_events = await redis.xrange(KEYS.events(), min=f"({as_str(stream_tail)}", max="+")
    kinds = Counter(f["type"] for _, f in new_events if f["station_id"] in fuzz_ids)
    bookkeeping = ("protocol.error", "station.connected", "station.disconnected")
    changed += sum(n for kind, n in kinds.items() if kind not in bookkeeping)
    changed += len(await redis.keys("*FUZZ*"))
    return changed, kinds


def _assert_node_alive(node: CsmsNode) -> None:
    for task in node.tasks:
        assert not task.done(), f"node task {task.get_name()} ended"


async def test_fuzz_10k_hostile_frames(redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    figures = await run_fuzz(redis_url, 10_000, caplog)
    assert figures["frames"] >= 10_000 and figures["good_max_latency_s"] < 5.0


@pytest.mark.soak
async def test_fuzz_soak_100k(redis_url: str, caplog: pytest.LogCaptureFixture) -> None:
    figures = await run_fuzz(redis_url, 100_000, caplog)
    assert figures["frames"] >= 100_000
