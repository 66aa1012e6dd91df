"""Redis -> `SiteState`: the optimizer's read side of the store (the snapshot itself is pure).

`read_site(redis, keys, site_id, now)` reads one site through `optimizer.bulk_read` (one
read-only Lua script per batch of keys) and decodes every record with `evfleet.records`, the
one decoder the csms uses too; `optimizer.snapshot.build_instance` turns the result into an
instance. It lives in the optimizer (not in `evfleet.store`) because `SiteState` is the
optimizer's type, and it needs only Redis and the key names, so the optimizer never imports csms.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import TYPE_CHECKING, Any

from evfleet.records import (
    DEFAULT_MAX_POWER_W,
    AppliedProfile,
    EvseRecord,
    StationRecord,
    TransactionRecord,
    stored_float,
)
from evfleet.store.shards import active_refs
from evfleet.store.sites import (
    DEFAULT_SITE_LIMIT_KW,
    budget_kw,
    published_margin_kw,
    site_limit,
    site_station_ids,
)
from optimizer.bulk_read import bulk_read, get, hget, hgetall, hkeys, lrange
from optimizer.snapshot import EvseState, SessionState, SiteState

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from evfleet.keys import Keys


async def read_site(redis: Redis, keys: Keys, site_id: str, now: datetime,
                    default_limit_kw: float = DEFAULT_SITE_LIMIT_KW, default_site: str = "default",
                    default_max_power_w: float = DEFAULT_MAX_POWER_W) -> SiteState:
    """Read one site's state from Redis (decode_responses=True client). The limit is the one in
    force (`evfleet.store.sites.site_limit`: the site's own, else the csms's published default,
    else `default_limit_kw`), minus the published site margin (`budget_kw`): the margin is never
    planned."""
    limit_kw = budget_kw((await site_limit(redis, keys, site_id, default_limit_kw)).limit_kw,
                         await published_margin_kw(redis, keys))
    prices_raw = await redis.get(keys.site_prices(site_id))
    prices = json.loads(prices_raw) if prices_raw else None
    station_ids = await site_station_ids(redis, keys, site_id, default_site)
    raw = await bulk_read(redis, [op for sid in station_ids for op in (
        hgetall(keys.station(sid)), hkeys(keys.station_connectors(sid)))])
    stations = {sid: StationRecord.decode(raw[2 * i]) for i, sid in enumerate(station_ids)}
    evse_ids: dict[str, set[int]] = {sid: set() for sid in station_ids}
    for i, sid in enumerate(station_ids):
        for fld in raw[2 * i + 1]:
            head = str(fld).split("/", 1)[0]
            if head.isdigit() and int(head) > 0:
                evse_ids[sid].add(int(head))
    active_list = sorted(await active_refs(redis, keys))  # tx refs
    tx_raw = await bulk_read(redis, [hgetall(keys.transaction(txid)) for txid in active_list]
                             + [hget(keys.session_loop(txid), "energy_at_needs_wh") for txid in active_list])
    txs = {ref: TransactionRecord.decode(h) for ref, h in zip(active_list, tx_raw, strict=False)}
    at_needs = dict(zip(active_list, tx_raw[len(active_list):], strict=True))
    for tx in txs.values():
        if tx.station_id in evse_ids and tx.evse_id is not None:
            evse_ids[tx.station_id].add(tx.evse_id)
    pairs = [(sid, eid) for sid in station_ids for eid in sorted(evse_ids[sid])]
    raw = await bulk_read(redis, [op for sid, eid in pairs for op in (
        hgetall(keys.station_evse(sid, eid)), get(keys.applied_profile(sid, eid)),
        get(keys.charging_needs(sid, eid)))])
    evses: list[EvseState] = []
    needs_by_key: dict[str, dict[str, Any]] = {}
    for i, (sid, eid) in enumerate(pairs):
        h, profile_raw, needs_raw = raw[3 * i], raw[3 * i + 1], raw[3 * i + 2]
        evse = EvseRecord.decode(h, default_max_power_w)
        applied = AppliedProfile.decode(profile_raw)
        evses.append(EvseState(
            station_id=sid, evse_id=eid, online=stations[sid].online, steerable=evse.steerable,
            max_power_w=evse.max_power_w, phases=evse.phases, voltage_v=evse.voltage_v,
            rate_unit=evse.rate_unit, transaction_id=evse.transaction_id,
            applied_max_w=applied.max_from(now.timestamp()) if applied else None,
            applied_tx=applied.tx_ref if applied else "",
            default_w=evse.default_limit_w, metered_max_w=evse.metered_max_w,
            noncompliant_w=evse.noncompliant_w,
        ))
        if needs_raw:
            needs_by_key[f"{sid}/{eid}"] = json.loads(needs_raw)
    sessions: list[SessionState] = []
    tokens: set[str] = set()
    for txid, tx in txs.items():
        sid = tx.station_id
        if sid not in stations or tx.evse_id is None or tx.ended:
            continue
        needs = needs_by_key.get(f"{sid}/{tx.evse_id}")
        if needs and needs.get("tx_ref") != txid:
            needs = None  # needs of an earlier session on this EVSE
        sessions.append(SessionState(
            tx_ref=txid, station_id=sid, evse_id=tx.evse_id,
            started_at=tx.started_at or tx.updated_at or now,
            id_token=tx.id_token, energy_wh=tx.energy_wh, power_w=tx.power_w, soc=tx.soc,
            needs=needs,
            energy_at_needs_wh=stored_float(at_needs.get(txid), 0.0) if needs else None,
            charging_state=tx.charging_state,
        ))
        if tx.id_token:
            tokens.add(tx.id_token)
    history: dict[str, list[tuple[int, float]]] = {}
    if tokens:
        token_list = sorted(tokens)
        rows_raw = await bulk_read(redis, [lrange(keys.energy_history(tok)) for tok in token_list])
        for tok, rows in zip(token_list, rows_raw, strict=True):
            history[tok] = [(int(r["weekday"]), float(r["energy_kwh"])) for r in map(json.loads, rows)]
    return SiteState(site_id=site_id, limit_kw=limit_kw, evses=evses, sessions=sessions, prices=prices,
                     history_kwh=history)
