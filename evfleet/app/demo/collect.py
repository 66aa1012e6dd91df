"""Read what the stations reported from Redis (the documented contract in docs/redis-schema.md).

The I/O edge of the report: transactions with their meter samples for the measured
optimized run, and a small live status for the progress bar. Works on any Redis client
(`decode_responses` on or off).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from redis.asyncio import Redis

from evfleet.app.demo.metering import MeterSample, delivered_wh
from evfleet.isotime import parse_iso_or_none
from evfleet.keys import Keys
from evfleet.store.shards import active_refs, refs_by_start


@dataclass(frozen=True)
class MeasuredTransaction:
    """One transaction as the csms stored it, with its cumulative energy readings."""

    transaction_id: str
    """The csms's key of the transaction (its `tx_ref`: station, transactionId, generation)."""
    station_id: str
    evse_id: int
    id_token: str
    started_at: datetime | None
    ended_at: datetime | None
    samples: tuple[MeterSample, ...]

    @property
    def delivered_kwh(self) -> float:
        """Energy delivered according to the meter readings."""
        return delivered_wh(self.samples) / 1000.0


@dataclass(frozen=True)
class LiveStatus:
    """What the progress bar shows, read from Redis."""

    stations_online: int
    stations_total: int
    sessions_active: int
    sessions_charging: int
    site_power_kw: float
    site_limit_kw: float
    sessions_total: int
    energy_kwh: float


def _s(value: Any) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)


def _dt(value: Any) -> datetime | None:
    text = _s(value)
    if not text:
        return None
    return parse_iso_or_none(text)


def _float(value: Any, default: float = 0.0) -> float:
    try:
        return float(_s(value))
    except ValueError:
        return default


def parse_meter_entry(raw: Any) -> MeterSample | None:
    """One `tx:{ref}:meter` list entry -> MeterSample (None without a time or an energy reading)."""
    try:
        data = json.loads(_s(raw))
    except json.JSONDecodeError:
        return None
    if not isinstance(data, dict) or data.get("energy_wh") is None:
        return None
    ts = _dt(data.get("ts"))
    if ts is None:
        return None
    return MeterSample(ts=ts, energy_wh=float(data["energy_wh"]))


def transaction_from_fields(transaction_id: str, fields: Mapping[Any, Any],
                            meter: list[Any]) -> MeasuredTransaction:
    """Build a MeasuredTransaction from a `tx:{ref}` hash and its meter list."""
    f = {_s(k): _s(v) for k, v in fields.items()}
    samples = tuple(s for s in (parse_meter_entry(m) for m in meter) if s is not None)
    return MeasuredTransaction(
        transaction_id=transaction_id, station_id=f.get("station_id", ""),
        evse_id=int(f.get("evse_id") or 0), id_token=f.get("id_token", ""),
        started_at=_dt(f.get("started_at")), ended_at=_dt(f.get("ended_at")), samples=samples)


async def read_transactions(redis: Redis, keys: Keys) -> list[MeasuredTransaction]:
    """Every transaction the csms stored, with its meter samples, in start order."""
    ids = [ref for ref, _ in await refs_by_start(redis, keys)]
    pipe = redis.pipeline(transaction=False)
    for tx in ids:
        pipe.hgetall(keys.transaction(tx))
        pipe.lrange(keys.transaction_meter(tx), 0, -1)
    rows = await pipe.execute()
    return [transaction_from_fields(tx, rows[2 * i], rows[2 * i + 1]) for i, tx in enumerate(ids)]


async def read_live_status(redis: Redis, keys: Keys, site_id: str, station_ids: list[str]) -> LiveStatus:
    """Stations online, sessions active/charging, site power and limit, right now."""
    active = await active_refs(redis, keys)
    pipe = redis.pipeline(transaction=False)
    for sid in station_ids:
        pipe.hget(keys.station(sid), "online")
    for tx in active:
        pipe.hmget(keys.transaction(tx), ["charging_state", "power_w"])
    pipe.hget(keys.site(site_id), "limit_kw")
    all_tx = [ref for ref, _ in await refs_by_start(redis, keys)]
    for tx in all_tx:
        pipe.lindex(keys.transaction_meter(tx), 0)
        pipe.lindex(keys.transaction_meter(tx), -1)
    rows = await pipe.execute()
    ends = rows[len(rows) - 2 * len(all_tx):]
    rows = rows[:len(rows) - 2 * len(all_tx)]
    energy_wh = 0.0
    for first_raw, last_raw in zip(ends[0::2], ends[1::2], strict=True):
        first, last = parse_meter_entry(first_raw), parse_meter_entry(last_raw)
        if first is not None and last is not None:
            energy_wh += max(0.0, last.energy_wh - first.energy_wh)
    online = sum(1 for v in rows[:len(station_ids)] if _s(v) == "1")
    tx_rows = rows[len(station_ids):len(station_ids) + len(active)]
    charging = sum(1 for state, _ in tx_rows if _s(state) == "Charging")
    power_kw = sum(_float(p) for _, p in tx_rows) / 1000.0
    return LiveStatus(stations_online=online, stations_total=len(station_ids),
                      sessions_active=len(active), sessions_charging=charging,
                      site_power_kw=power_kw, site_limit_kw=_float(rows[-1]),
                      sessions_total=len(all_tx), energy_kwh=energy_wh / 1000.0)
