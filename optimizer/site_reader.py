"""Redis -> `SiteState`: the optimizer's read side of the store (the snapshot itself is pure).

`read_site(redis, keys, site_id, now)` reads one site through `optimizer.bulk_read` (one
read-only Lua script per batch of keys) and decodes every record with `evfleet.records`, the
one decoder the csms uses too; `optimizer.snapshot.build_instance` turns the result into an
instance. It lives in the optimizer (not in `evfleet.store`) because `SiteState` is the
optimizer's type, and it needs only Redis and the key names, so the optimizer never imports csms.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar, cast

from evfleet.records import (
    DEFAULT_MAX_POWER_W,
    AppliedProfile,
    ChargingNeeds,
    EvseRecord,
    StationRecord,
    TransactionRecord,
    stored_float,
)
from evfleet.store.shards import active_refs_of
from evfleet.store.sites import (
    DEFAULT_SITE_LIMIT_KW,
    budget_kw,
    limit_in_force,
    margin_kw,
    site_station_ids,
)
from optimizer.bulk_read import bulk_read, get, hget, hgetall, hkeys, lrange
from optimizer.snapshot import EvseState, SessionState, SiteState

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from evfleet.keys import Keys


MEMO_MAX = 200_000
"""Documents `ReadMemo` keeps (two per EVSE and one per driver of the sites read; cleared when full)."""

T = TypeVar("T")


class ReadMemo:
    """The decode of each key's last read, reused while the stored value read is the same.

    Every key is still read on every `read_site` (nothing is staler than its read): only decoding an
    identical JSON document (applied profile, charging needs) or history list again is skipped; hashes
    decode cheaply and are not kept (they were most of the memo's memory). The decoded values are
    frozen records (or a parsed document the snapshot only reads), so sharing them between reads is
    safe. A worker keeps one: about 4.5 KB per station (22.5 MB at 5,000, benchmarks/worker_read.py)."""

    def __init__(self, max_entries: int = MEMO_MAX) -> None:
        self._entries: dict[str, tuple[Any, Any]] = {}
        self._max = max_entries
        self.hits = 0
        self.misses = 0

    def decode(self, key: str, raw: Any, decode: Callable[[Any], T]) -> T:
        """`decode(raw)`, or the value decoded the last time `key` read an equal `raw`."""
        if not self._max:  # no memo: a one-off read keeps nothing alive (more full GCs otherwise)
            return decode(raw)
        hit = self._entries.get(key)
        if hit is not None and hit[0] == raw:
            self.hits += 1
            return cast(T, hit[1])
        self.misses += 1
        value = decode(raw)
        if len(self._entries) >= self._max:
            self._entries.clear()
        self._entries[key] = (raw, value)
        return value


async def read_site(redis: Redis, keys: Keys, site_id: str, now: datetime,
                    default_limit_kw: float = DEFAULT_SITE_LIMIT_KW, default_site: str = "default",
                    default_max_power_w: float = DEFAULT_MAX_POWER_W, memo: ReadMemo | None = None,
                    ) -> SiteState:
    """Read one site's state from Redis (decode_responses=True client). The limit is the one in
    force (`evfleet.store.sites.limit_in_force`: the site's own, else the csms's published default,
    else `default_limit_kw`), minus the published site margin (`budget_kw`): the margin is never
    planned. Only the site's own keys are read (its stations, their EVSEs and active sessions, their
    drivers' histories), each decoded by `evfleet.records` (through `memo` when given)."""
    memo = memo if memo is not None else ReadMemo(max_entries=0)
    pipe = redis.pipeline(transaction=False)  # one round trip: the limit in force, the margin, the prices
    pipe.hget(keys.site(site_id), "limit_kw")
    pipe.hmget(keys.site_defaults(), ["site_limit_kw", "site_margin_kw"])
    pipe.get(keys.site_prices(site_id))
    own, (published, margin), prices_raw = await pipe.execute()
    limit_kw = budget_kw(limit_in_force(own, published, default_limit_kw).limit_kw, margin_kw(margin))
    prices = json.loads(prices_raw) if prices_raw else None
    station_ids = await site_station_ids(redis, keys, site_id, default_site)
    stations, evse_ids = await _read_stations(redis, keys, station_ids)
    txs, at_needs = await _read_transactions(redis, keys, station_ids)
    for tx in txs.values():
        if tx.station_id in evse_ids and tx.evse_id is not None:
            evse_ids[tx.station_id].add(tx.evse_id)
    pairs = [(sid, eid) for sid in station_ids for eid in sorted(evse_ids[sid])]
    evses, needs_by_key = await _read_evses(redis, keys, pairs, stations, now, default_max_power_w, memo)
    sessions: list[SessionState] = []
    for txid, tx in txs.items():
        sid = tx.station_id
        if sid not in stations or tx.evse_id is None or tx.ended:
            continue
        needs = needs_by_key.get(f"{sid}/{tx.evse_id}")
        if needs is not None and needs.tx_ref != txid:
            needs = None  # needs of an earlier session on this EVSE
        sessions.append(SessionState(
            tx_ref=txid, station_id=sid, evse_id=tx.evse_id,
            started_at=tx.started_at or tx.updated_at or now,
            id_token=tx.id_token, energy_wh=tx.energy_wh, power_w=tx.power_w, soc=tx.soc,
            needs=needs.raw if needs is not None else None,
            energy_at_needs_wh=stored_float(at_needs.get(txid), 0.0) if needs is not None else None,
            charging_state=tx.charging_state, metered_at=tx.metered_at,
        ))
    history = await _read_history(redis, keys, {s.id_token for s in sessions if s.id_token}, memo)
    return SiteState(site_id=site_id, limit_kw=limit_kw, evses=evses, sessions=sessions, prices=prices,
                     history_kwh=history)


async def _read_stations(redis: Redis, keys: Keys, station_ids: Sequence[str],
                         ) -> tuple[dict[str, StationRecord], dict[str, set[int]]]:
    """Each station's record and the EVSE ids its connectors name."""
    raw = await bulk_read(redis, [op for sid in station_ids for op in (
        hgetall(keys.station(sid)), hkeys(keys.station_connectors(sid)))])
    stations = {sid: StationRecord.decode(raw[2 * i]) for i, sid in enumerate(station_ids)}
    evse_ids: dict[str, set[int]] = {sid: set() for sid in station_ids}
    for i, sid in enumerate(station_ids):
        for fld in raw[2 * i + 1]:
            head = str(fld).split("/", 1)[0]
            if head.isdigit() and int(head) > 0:
                evse_ids[sid].add(int(head))
    return stations, evse_ids


async def _read_transactions(redis: Redis, keys: Keys, station_ids: Sequence[str],
                             ) -> tuple[dict[str, TransactionRecord], dict[str, Any]]:
    """The active transactions of the stations (tx_ref -> record) and each one's meter energy
    when its needs came (`energy_at_needs_wh` of its loop hash, raw)."""
    refs = sorted(await active_refs_of(redis, keys, station_ids))
    raw = await bulk_read(redis, [hgetall(keys.transaction(ref)) for ref in refs]
                          + [hget(keys.session_loop(ref), "energy_at_needs_wh") for ref in refs])
    txs = {ref: TransactionRecord.decode(h) for ref, h in zip(refs, raw, strict=False)}
    return txs, dict(zip(refs, raw[len(refs):], strict=True))


async def _read_evses(redis: Redis, keys: Keys, pairs: Sequence[tuple[str, int]],
                      stations: Mapping[str, StationRecord], now: datetime, default_max_power_w: float,
                      memo: ReadMemo) -> tuple[list[EvseState], dict[str, ChargingNeeds]]:
    """Each EVSE's state (its hash and applied-profile record) and the charging needs stored on it."""
    raw = await bulk_read(redis, [op for sid, eid in pairs for op in (
        hgetall(keys.station_evse(sid, eid)), get(keys.applied_profile(sid, eid)),
        get(keys.charging_needs(sid, eid)))])

    evses: list[EvseState] = []
    needs_by_key: dict[str, ChargingNeeds] = {}
    now_s = now.timestamp()
    for i, (sid, eid) in enumerate(pairs):
        h, profile_raw, needs_raw = raw[3 * i], raw[3 * i + 1], raw[3 * i + 2]
        evse = EvseRecord.decode(h, default_max_power_w)
        applied = memo.decode(keys.applied_profile(sid, eid), profile_raw, _applied_series)
        evses.append(EvseState(
            station_id=sid, evse_id=eid, online=stations[sid].online, steerable=evse.steerable,
            max_power_w=evse.max_power_w, phases=evse.phases, voltage_v=evse.voltage_v,
            rate_unit=evse.rate_unit, transaction_id=evse.transaction_id,
            applied_max_w=applied.max_from(now_s) if applied else None,
            applied_tx=applied.tx_ref if applied else "",
            default_w=evse.default_limit_w, metered_max_w=evse.metered_max_w,
            noncompliant_w=evse.noncompliant_w,
        ))
        needs = memo.decode(keys.charging_needs(sid, eid), needs_raw, ChargingNeeds.decode)
        if needs is not None:
            needs_by_key[f"{sid}/{eid}"] = needs
    return evses, needs_by_key


def _applied_series(raw: Any) -> AppliedProfile | None:
    """The applied-profile record without its parsed document (`raw`): the read uses its session and
    series only, and a memo of 2,500 parsed documents (the accepted TxProfile each) held most of its
    memory (62 MB at 5,000 stations)."""
    applied = AppliedProfile.decode(raw)
    return replace(applied, raw=None) if applied is not None else None


def _history_rows(rows: Sequence[str]) -> list[tuple[int, float]]:
    return [(int(r["weekday"]), float(r["energy_kwh"])) for r in map(json.loads, rows)]


async def _read_history(redis: Redis, keys: Keys, tokens: set[str], memo: ReadMemo,
                        ) -> dict[str, list[tuple[int, float]]]:
    """id token -> [(weekday, kWh), ...] of its driver's past sessions (`Keys.energy_history`)."""
    token_list = sorted(tokens)
    if not token_list:
        return {}
    rows_raw = await bulk_read(redis, [lrange(keys.energy_history(tok)) for tok in token_list])
    return {tok: memo.decode(keys.energy_history(tok), rows, _history_rows)
            for tok, rows in zip(token_list, rows_raw, strict=True)}
