"""`StateStore` (evfleet.store.port) on the documented Redis keys (docs/redis-schema.md).

The smart-charging service's reads and writes, moved here from the service: leases
(`SET NX PX`), the event stream (plain XREAD: every node sees every event), the site's EVSEs (station,
EVSE hash, applied-profile record and charging needs, pipelined) and one MULTI/EXEC per
`StoreWrite`. Expects a `decode_responses=True` client.

Reads that grow with the site (every EVSE, every active transaction) go out as pipelines of at
most `PIPELINE_CHUNK` commands: each chunk is one round trip whose reply is parsed in one
event-loop callback, and the loop serves other callbacks (station messages) while Redis answers
the next, so a pass over a 20,000-station site is many short callbacks, not one long stall.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from evfleet.events import Event
from evfleet.keys import Keys
from evfleet.store.port import EvseId, StoredEvse, StoreWrite
from evfleet.store.shards import active_refs
from evfleet.store.sites import PIPELINE_CHUNK, own_limit_kw, pipelined, positive_kw, site_station_ids
from evfleet.store.stream import read_new_events, stream_tail_id

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger(__name__)

STREAM_MAXLEN = 100_000

def _json(raw: Any) -> dict[str, Any] | None:
    return json.loads(raw) if raw else None


class RedisStateStore:
    """The smart-charging store port on Redis (see module doc)."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys

    async def hold_lease(self, site_id: str, node_id: str, ttl_ms: int) -> bool:
        """SET NX PX, or PEXPIRE when this node already holds it."""
        key = self.keys.smart_charging_lease(site_id)
        if await self.redis.set(key, node_id, nx=True, px=ttl_ms):
            return True
        if await self.redis.get(key) == node_id:
            await self.redis.pexpire(key, ttl_ms)
            return True
        return False

    async def release_lease(self, site_id: str, node_id: str) -> None:
        """DEL the lease if this node holds it."""
        key = self.keys.smart_charging_lease(site_id)
        if await self.redis.get(key) == node_id:
            await self.redis.delete(key)

    async def events_tail(self) -> str:
        """Newest entry id of `evfleet:events`."""
        return await stream_tail_id(self.redis, self.keys.event_streams())

    async def read_events(self, last_id: str, count: int, block_ms: int,
                          skip: Callable[[Mapping[str, str]], bool] | None = None) -> tuple[str, list[Event]]:
        """XREAD after `last_id` (malformed entries are logged and skipped, and so are, unparsed,
        entries whose raw fields `skip` says to)."""
        streams = self.keys.event_streams()
        last_id, pairs = await read_new_events(self.redis, streams, last_id, block_ms, count, skip)
        return last_id, [event for _id, event in pairs]

    async def site_ids(self) -> set[str]:
        """Members of the sites SET."""
        return {str(s) for s in await self.redis.smembers(self.keys.sites())}

    async def station_site(self, station_id: str) -> str:
        """`site_id` of the station hash."""
        return str(await self.redis.hget(self.keys.station(station_id), "site_id") or "")

    async def site_limit_kw(self, site_id: str) -> str | None:
        """`limit_kw` of the site hash, else the published `default_site_limit_kw` (one round trip)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hget(self.keys.site(site_id), "limit_kw")
        pipe.hget(self.keys.site_defaults(), "site_limit_kw")
        own, published = await pipe.execute()
        kw = own_limit_kw(own)
        kw = positive_kw(published) if kw is None else kw
        return None if kw is None else repr(kw)

    async def site_margin_kw(self) -> str | None:
        """`site_margin_kw` of the published deployment defaults."""
        raw = await self.redis.hget(self.keys.site_defaults(), "site_margin_kw")
        return None if raw is None else str(raw)

    async def site_plan(self, site_id: str) -> dict[str, Any] | None:
        """`site:{id}:plan`."""
        return _json(await self.redis.get(self.keys.site_plan(site_id)))

    async def site_evses(self, site_id: str, default_site: str) -> list[StoredEvse]:
        """EVSEs of the site: ids from the connectors hash and from active transactions."""
        k = self.keys
        stations = await site_station_ids(self.redis, k, site_id, default_site)
        raw = await pipelined(self.redis, stations, lambda p, sid: (p.hgetall(k.station(sid)),
                                                                    p.hkeys(k.station_connectors(sid))))
        active = await active_refs(self.redis, k)
        tx_evses: dict[str, set[int]] = {}
        for sid_eid in await pipelined(self.redis, active,
                                       lambda p, ref: p.hmget(k.transaction(ref), ["station_id", "evse_id"])):
            if sid_eid[0] and str(sid_eid[1] or "").isdigit():
                tx_evses.setdefault(sid_eid[0], set()).add(int(sid_eid[1]))
        triples: list[tuple[str, int, dict[str, str]]] = []
        for i, sid in enumerate(stations):
            eids = {int(f.split("/", 1)[0]) for f in raw[2 * i + 1] if f.split("/", 1)[0].isdigit()}
            eids |= tx_evses.get(sid, set())
            triples += [(sid, eid, raw[2 * i]) for eid in sorted(eids) if eid > 0]
        return await self._records(triples)

    async def evse_records(self, evses: Sequence[EvseId]) -> list[StoredEvse]:
        """Station hash per EVSE, then `_records`."""
        k = self.keys
        stations = await pipelined(self.redis, evses, lambda p, e: p.hgetall(k.station(e[0])))
        return await self._records([(sid, eid, st) for (sid, eid), st in zip(evses, stations, strict=True)])

    async def _records(self, triples: list[tuple[str, int, dict[str, str]]]) -> list[StoredEvse]:
        k = self.keys
        out: list[StoredEvse] = []
        step = PIPELINE_CHUNK // 3
        for start in range(0, len(triples), step):  # decoded chunk by chunk, between round trips
            part = triples[start:start + step]
            raw = await pipelined(self.redis, part, lambda p, t: (
                p.hgetall(k.station_evse(t[0], t[1])), p.get(k.applied_profile(t[0], t[1])),
                p.get(k.charging_needs(t[0], t[1]))))
            out += [StoredEvse(sid, eid, station, raw[3 * i], _json(raw[3 * i + 1]), _json(raw[3 * i + 2]))
                    for i, (sid, eid, station) in enumerate(part)]
        return out

    async def applied_profile(self, evse: EvseId) -> dict[str, Any] | None:
        """`profile:{sid}:{eid}`."""
        return _json(await self.redis.get(self.keys.applied_profile(*evse)))

    async def ev_schedule(self, evse: EvseId) -> dict[str, Any] | None:
        """The EV's schedule record of the EVSE."""
        return _json(await self.redis.get(self.keys.ev_schedule(*evse)))

    async def tx_energy_wh(self, tx_ref: str) -> str | None:
        """`energy_wh` of the transaction hash."""
        value = await self.redis.hget(self.keys.transaction(tx_ref), "energy_wh")
        return None if value is None else str(value)

    async def session_fields(self, tx_ref: str, names: Sequence[str]) -> list[str | None]:
        """HMGET on `tx:{ref}:loop`."""
        values = await self.redis.hmget(self.keys.session_loop(tx_ref), list(names))
        return [None if v is None else str(v) for v in values]

    async def write(self, batch: StoreWrite) -> None:
        """One MULTI/EXEC with every part of the batch; in the Redis Cluster layout one per shard
        (each station's and each site's writes stay atomic; the batch as a whole is not)."""
        if not batch:
            return
        k = self.keys
        pipes: dict[int, Any] = {}

        def st(sid: str) -> Any:
            return pipes.setdefault(k.shard_of_station(sid), self.redis.pipeline(transaction=True))

        for (sid, eid), record in batch.profiles.items():
            st(sid).set(k.applied_profile(sid, eid), json.dumps(record, default=str))
        for (sid, eid), mapping in batch.evse_fields.items():
            st(sid).hset(k.station_evse(sid, eid), mapping=mapping)
        for (sid, eid), names in batch.evse_deleted.items():
            st(sid).hdel(k.station_evse(sid, eid), *names)
        for ref, counters in batch.session_incr.items():
            for name, by in counters.items():
                st(ref.split(":", 1)[0]).hincrby(k.session_loop(ref), name, by)
        for ref, mapping in batch.session_fields.items():
            st(ref.split(":", 1)[0]).hset(k.session_loop(ref), mapping=mapping)
        for (sid, eid), record in batch.ev_schedules.items():
            st(sid).set(k.ev_schedule(sid, eid), json.dumps(record, default=str))
        for site_id, mapping in batch.site_fields.items():
            pipes.setdefault(k.shard_of_site(site_id), self.redis.pipeline(transaction=True)).hset(
                k.site(site_id), mapping=mapping)
        for fields in batch.events:
            shard = k.shard_of_event(fields.get("station_id", ""), fields.get("site_id", ""))
            pipes.setdefault(shard, self.redis.pipeline(transaction=True)).xadd(
                k.events(shard), fields, maxlen=STREAM_MAXLEN, approximate=True)
        for pipe in pipes.values():
            await pipe.execute()
