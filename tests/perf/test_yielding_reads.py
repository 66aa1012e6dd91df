"""Site-wide reads and decodes leave the event loop to other work between chunks (real Redis).

A pass over a large site used to be one pipeline (packed and parsed in one event-loop callback)
and one decode loop: every station message waited behind it. These tests check the results are
the same as one pipeline, and that other tasks run while the pass goes on.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any, TypeVar

import pytest
from redis.asyncio.client import Pipeline
from redis.commands.core import AsyncScript

from csms.smart_charging import decoding
from csms.smart_charging.evse import EvseInfo, decode_evse
from csms.store import port_redis
from csms.store.port_redis import RedisStateStore
from evfleet.keys import Keys
from evfleet.store.client import connect_redis
from evfleet.store.port import StoredEvse
from evfleet.store.sites import pipelined
from tests.interleave import alongside, breaks

K = Keys("evfleet")
T = TypeVar("T")


async def _interleaved(work: Awaitable[T], log: list[str]) -> tuple[T, int]:
    """`alongside`, and the number of times the other task got the loop right after a step of `work`."""
    result = await alongside(work, log)
    return result, breaks(log)


@pytest.fixture
def executes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A log with an "x" for every pipeline round trip and every Lua script call."""
    log: list[str] = []
    original = Pipeline.execute
    call = AsyncScript.__call__

    async def execute(self: Pipeline, raise_on_error: bool = True) -> list[Any]:
        log.append("x")
        return await original(self, raise_on_error)

    async def script(self: AsyncScript, keys: Any = None, args: Any = None, client: Any = None) -> Any:
        log.append("x")
        return await call(self, keys, args, client)

    monkeypatch.setattr(Pipeline, "execute", execute)
    monkeypatch.setattr(AsyncScript, "__call__", script)
    return log


async def test_pipelined_answers_like_one_pipeline_and_lets_others_run(redis_url: str,
                                                                       executes: list[str]) -> None:
    redis = connect_redis(redis_url)
    try:
        ids = [f"S{i:04d}" for i in range(1_000)]
        await redis.hset(K.station("S0007"), "site_id", "north")
        await redis.hset(K.station("S0999"), "site_id", "south")
        one = redis.pipeline(transaction=False)
        for sid in ids:
            one.hget(K.station(sid), "site_id")
        expected = await one.execute()
        executes.clear()
        got, breaks = await _interleaved(
            pipelined(redis, ids, lambda p, sid: p.hget(K.station(sid), "site_id"), chunk=100), executes)
        assert got == expected and got[7] == "north" and got[999] == "south"
        assert executes.count("x") == 10 and breaks == 10  # other work ran after each round trip
        assert await pipelined(redis, [], lambda p, sid: p.get(sid)) == []
    finally:
        await redis.aclose()


async def test_site_evses_of_a_large_site_reads_every_evse_across_chunks(redis_url: str,
                                                                        executes: list[str]) -> None:
    redis = connect_redis(redis_url)
    try:
        n = 700  # 1,400 station and 2,100 EVSE keys: Lua reads of at most READ_CHUNK keys each
        for i in range(n):
            sid = f"CP{i:04d}"
            await redis.sadd(K.stations(), sid)
            await redis.hset(K.station(sid), mapping={"site_id": "big", "online": "1"})
            await redis.hset(K.station_connectors(sid), "1/1", "{}")
            await redis.hset(K.station_evse(sid, 1), "max_power_w", str(1000 + i))
        await redis.set(K.applied_profile("CP0650", 1), '{"limit_w": 5}')
        store = RedisStateStore(redis, K)
        executes.clear()
        evses, breaks = await _interleaved(store.site_evses("big", "default"), executes)
        assert len(evses) == n
        assert [e.evse["max_power_w"] for e in evses] == [str(1000 + i) for i in range(n)]
        assert evses[650].profile == {"limit_w": 5} and evses[649].profile is None
        # 1,400 station keys (3 reads of 300 stations) and 2,100 EVSE keys (4 x 200 EVSEs) at
        # least, plus whatever else the read needs (e.g. the active-transaction index): other work
        # after each
        assert port_redis.READ_CHUNK == 600
        assert executes.count("x") >= 7 and breaks == executes.count("x")
    finally:
        await redis.aclose()


async def test_decode_all_yields_between_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    log: list[str] = []

    def decode(record: StoredEvse) -> EvseInfo:
        log.append("d")
        return decode_evse(record)

    monkeypatch.setattr(decoding, "decode_evse", decode)
    n = decoding.DECODE_CHUNK * 3 + 1
    records = [StoredEvse(f"CP{i}", 1, {"online": "1"}, {"max_power_w": "11000"}, None, None)
               for i in range(n)]
    infos, breaks = await _interleaved(decoding.decode_all(records), log)
    assert len(infos) == n and infos["CP7/1"].electrical.max_power_w == 11000
    assert breaks == 3  # between the four chunks


async def test_evse_records_parse_their_json_in_chunks(redis_url: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The applied profiles and needs of a site's EVSEs are parsed as each read call's records
    arrive (at most `STORED_CHUNK` per event-loop callback), not all after the last read."""
    redis = connect_redis(redis_url)
    log: list[str] = []
    parse = port_redis._parsed

    def logged(raw: str | None) -> Any:
        log.append("j")
        return parse(raw)

    try:
        n = 2 * port_redis.STORED_CHUNK + port_redis.STORED_CHUNK // 2
        evses = [(f"CP{i:04d}", 1) for i in range(n)]
        for sid, eid in evses:
            await redis.hset(K.station_evse(sid, eid), "max_power_w", "11000")
        await redis.set(K.applied_profile("CP0201", 1), '{"limit_w": 5}')
        monkeypatch.setattr(port_redis, "_parsed", logged)
        got, _ = await _interleaved(RedisStateStore(redis, K).evse_records(evses), log)
        assert [(r.station_id, r.evse_id) for r in got] == evses
        assert got[201].profile == {"limit_w": 5} and got[200].profile is None
        runs = [len(run) for run in "".join(log).split("o") if run]
        # two JSON documents per record, as many records per callback as one read call carries
        # (the station's online, the EVSE hash, its two documents: 4 keys a record)
        per_call = min(port_redis.STORED_CHUNK, port_redis.READ_CHUNK // 4)
        assert runs == [2 * per_call] * (n // per_call) + ([2 * (n % per_call)] if n % per_call else [])
        assert len(runs) > 1
    finally:
        await redis.aclose()
