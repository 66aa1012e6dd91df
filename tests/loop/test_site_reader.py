"""optimizer.site_reader over a real Redis: a site's read touches only the site's own keys, and the
memo of decoded records never hides a change (issue 14: the worker's read of a 50-station site read
and decoded every active transaction of the fleet)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from redis.asyncio import Redis

from evfleet.keys import Keys, tx_ref
from optimizer import site_reader
from optimizer.site_reader import ReadMemo, read_site

K = Keys("evfleet")
NOW = datetime(2026, 3, 2, 17, 0, tzinfo=UTC)


async def _station(redis: Redis, site: str, sid: str, *, online: bool = True) -> str:
    """A station of `site` with one EVSE in a session (its needs and an accepted profile); its tx ref."""
    ref = tx_ref(sid, "1")
    await redis.sadd(K.stations(), sid)
    await redis.sadd(K.sites(), site)
    await redis.sadd(K.site_stations(site), sid)
    await redis.hset(K.station(sid), mapping={"site_id": site, "online": "1" if online else "0"})
    await redis.hset(K.station_evse(sid, 1), mapping={"max_power_w": "11040", "transaction_id": "1",
                                                      "tx_ref": ref})
    await redis.sadd(K.active_for(sid), ref)
    await redis.sadd(K.station_active(sid), ref)
    await redis.hset(K.transaction(ref), mapping={
        "station_id": sid, "transaction_id": "1", "evse_id": "1", "state": "Started", "id_token": f"T-{sid}",
        "started_at": (NOW - timedelta(hours=1)).isoformat(), "energy_wh": "1000"})
    await redis.set(K.charging_needs(sid, 1), json.dumps({
        "tx_ref": ref, "departure_time": (NOW + timedelta(hours=4)).isoformat(), "energy_amount_wh": 15_000}))
    await _profile(redis, sid, ref, 7000.0)
    return ref


async def _profile(redis: Redis, sid: str, ref: str, limit_w: float) -> None:
    await redis.set(K.applied_profile(sid, 1), json.dumps({
        "tx_ref": ref, "status": "Accepted", "applied_series_w": [[NOW.timestamp() - 60, limit_w]]}))


async def test_a_site_read_touches_only_the_sites_own_sessions(redis: Redis, monkeypatch: pytest.MonkeyPatch,
                                                                ) -> None:
    """The other site's transactions are not read (they were: every active transaction of the fleet,
    then dropped), and the site's own sessions are all there."""
    mine = [await _station(redis, "A", f"A-{i}") for i in range(3)]
    theirs = [await _station(redis, "B", f"B-{i}") for i in range(4)]
    read_keys: list[str] = []
    real = site_reader.bulk_read

    async def spy(client: Any, ops: Sequence[tuple[str, str]]) -> list[Any]:
        read_keys.extend(key for _, key in ops)
        return await real(client, ops)

    monkeypatch.setattr(site_reader, "bulk_read", spy)
    state = await read_site(redis, K, "A", NOW)
    assert sorted(s.tx_ref for s in state.sessions) == sorted(mine)
    assert {e.station_id for e in state.evses} == {"A-0", "A-1", "A-2"}
    other = [key for key in read_keys if any(sid in key for sid in ("B-0", "B-1", "B-2", "B-3"))]
    assert other == [], f"read another site's keys: {other}"
    assert not any(K.transaction(ref) in read_keys for ref in theirs)


async def test_the_memo_never_hides_a_change(redis: Redis) -> None:
    """A second read of an unchanged site decodes nothing again; every record changed in between is
    read as it is now: a session's energy and needs, an offline station's applied limit (which the
    plan counts as fixed load, the site limit's budget), a new session."""
    ref = await _station(redis, "A", "A-0")
    await _station(redis, "A", "A-1", online=False)
    memo = ReadMemo()
    first = await read_site(redis, K, "A", NOW, memo=memo)
    misses = memo.misses
    again = await read_site(redis, K, "A", NOW, memo=memo)
    assert memo.misses == misses and memo.hits >= misses - 2  # every record reused (prices/limit aside)
    assert again == first

    await redis.hset(K.transaction(ref), "energy_wh", "5000")
    await redis.set(K.charging_needs("A-0", 1), json.dumps({
        "tx_ref": ref, "departure_time": (NOW + timedelta(hours=2)).isoformat(), "energy_amount_wh": 9_000}))
    await _profile(redis, "A-1", tx_ref("A-1", "1"), 2000.0)
    new_ref = await _station(redis, "A", "A-2")
    state = await read_site(redis, K, "A", NOW, memo=memo)
    session = next(s for s in state.sessions if s.tx_ref == ref)
    assert session.energy_wh == 5000.0
    assert session.needs is not None and session.needs["energy_amount_wh"] == 9_000
    offline = next(e for e in state.evses if e.station_id == "A-1")
    assert offline.applied_max_w == 2000.0 and offline.fixed_w(tx_ref("A-1", "1")) == 2000.0
    assert new_ref in {s.tx_ref for s in state.sessions}
    assert state == await read_site(redis, K, "A", NOW)  # the same as a read without a memo


def test_a_read_without_a_memo_keeps_nothing() -> None:
    """`read_site` without a memo decodes every value and keeps none alive after the read (a one-off
    read that kept its records until it ended ran more full garbage collections: 130-150 ms instead
    of ~100 ms for a 1,000-EVSE site)."""
    memo, calls = ReadMemo(max_entries=0), []

    def decode(raw: str) -> str:
        calls.append(raw)
        return raw

    assert memo.decode("k", "v", decode) == memo.decode("k", "v", decode) == "v"
    assert calls == ["v", "v"] and not memo._entries
