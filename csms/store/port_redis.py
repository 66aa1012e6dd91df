"""`StateStore` (evfleet.store.port) on the documented Redis keys (docs/redis-schema.md).

The smart-charging service's reads and writes, moved here from the service: leases
(`SET NX PX`), the event stream (plain XREAD: every node sees every event), the site's EVSEs (station,
EVSE hash, applied-profile record and charging needs) and one MULTI/EXEC per `StoreWrite`. Expects a
`decode_responses=True` client.

Reads that grow with the site (every EVSE, the site's active transactions) go out as Lua reads of
at most `READ_CHUNK` keys of one slot (`RedisStateStore._read`): each is one round trip whose
reply hiredis parses in C and the store turns into dicts in one event-loop callback, and the loop
serves other callbacks (station messages) while Redis answers the next, so a pass over a
20,000-station site is many short callbacks, not one long stall. (They were pipelines of single
commands: redis-py's packing and per-reply parsing were most of a fallback re-share's CPU.)
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from evfleet.events import Event
from evfleet.keys import Keys
from evfleet.store.lag import StreamLag
from evfleet.store.owned import PEXPIRE_IF_OWNED
from evfleet.store.port import EvseId, StoredEvse, StoreWrite
from evfleet.store.shards import active_refs_of
from evfleet.store.sites import own_limit_kw, pipelined, positive_kw, site_station_ids
from evfleet.store.slots import slot_groups
from evfleet.store.stream import read_new_events, stream_tail_id

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger(__name__)

T = TypeVar("T")

STREAM_MAXLEN = 100_000

DOC_MEMO_MAX = 200_000
"""Parsed documents `_doc` keeps (two per EVSE of the sites read; cleared when full)."""

READ_CHUNK = 600
"""Keys per Lua read (`RedisStateStore._read`): one short script run in Redis, one reply to parse
(in one event-loop callback: 1,800 keys were 10-20 ms of it at 800 stations, issue 14)."""

STORED_CHUNK = 100
"""EVSE records built per event-loop callback (`_read_each`: the JSON of their applied profile and
charging needs parsed); all of a site's in one callback were 15-24 ms at 800 EVSEs (issue 14)."""

_READ = """
local out = {}
local n = #ARGV
for i = 1, #KEYS do
  local op = ARGV[((i - 1) % n) + 1]
  if op == 'H' then out[i] = redis.call('HGETALL', KEYS[i])
  elseif op == 'K' then out[i] = redis.call('HKEYS', KEYS[i])
  elseif op == 'G' then out[i] = redis.call('GET', KEYS[i])
  elseif op == 'T' then out[i] = redis.call('HMGET', KEYS[i], 'station_id', 'evse_id')
  else return redis.error_reply('unknown read ' .. op) end
end
return out
"""


_CAS_SET = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) end
return false
"""
"""`steal_leases`: take the lease only from the holder it was seen with."""


SITE_CHUNK = 2000
"""Stations (EVSEs) a whole-site read handles between two yields to the event loop while it builds
its keys and EVSE lists (`site_evses`, `_records`): 20,000 of them held the loop for 20-30 ms."""


def _json(raw: Any) -> dict[str, Any] | None:
    return json.loads(raw) if raw else None


def _reply(op: str, raw: Any) -> Any:
    """One key's part of a `_READ` reply as redis-py would return its command's (nil -> None),
    lists of strings as tuples (which the garbage collector stops tracking, issue 14)."""
    if op == "H":
        it = iter(raw)
        return dict(zip(it, it, strict=True))
    if op == "T":
        return tuple(None if v is False else v for v in raw)
    if op == "K":
        return tuple(raw)
    return raw


class RedisStateStore:
    """The smart-charging store port on Redis (see module doc)."""

    def __init__(self, redis: Redis, keys: Keys) -> None:
        self.redis = redis
        self.keys = keys
        self._script = redis.register_script(_READ)
        self._refresh = redis.register_script(PEXPIRE_IF_OWNED)  # `refresh_alive`
        self._docs: dict[str, tuple[str, dict[str, Any]]] = {}  # `_doc`: key -> (raw text, parsed)

    async def hold_lease(self, site_id: str, node_id: str, ttl_ms: int,
                         seen: dict[str, str] | None = None) -> bool:
        """SET NX PX, or PEXPIRE when this node already holds it."""
        key = self.keys.smart_charging_lease(site_id)
        if await self.redis.set(key, node_id, nx=True, px=ttl_ms):
            return True
        holder: Any = await self.redis.get(key)
        if holder == node_id:
            await self.redis.pexpire(key, ttl_ms)
            return True
        if holder and seen is not None:
            seen[site_id] = str(holder)
        return False

    async def steal_leases(self, leases: Mapping[str, str], node_id: str, ttl_ms: int) -> set[str]:
        """One compare-and-set script per lease key (one key: one slot on a Redis Cluster),
        pipelined."""
        sites = sorted(leases)
        replies = await pipelined(self.redis, sites, lambda pipe, s: pipe.eval(
            _CAS_SET, 1, self.keys.smart_charging_lease(s), leases[s], node_id, ttl_ms))
        return {s for s, ok in zip(sites, replies, strict=True) if ok}

    async def announce_alive(self, node_id: str, token: str, ttl_ms: int) -> None:
        """SET PX."""
        await self.redis.set(self.keys.node_alive(node_id), token, px=ttl_ms)

    async def refresh_alive(self, node_id: str, token: str, ttl_ms: int) -> bool:
        """PEXPIRE if the key still holds `token` (a one-key script)."""
        return bool(await self._refresh(keys=[self.keys.node_alive(node_id)], args=[token, ttl_ms]))

    async def alive_tokens(self, node_ids: Sequence[str]) -> dict[str, str]:
        """GET of each node's liveness key, pipelined."""
        replies = await pipelined(self.redis, node_ids, lambda pipe, n: pipe.get(self.keys.node_alive(n)))
        return {n: t for n, t in zip(node_ids, replies, strict=True) if t}

    async def hold_leases(self, site_ids: Sequence[str], node_id: str, ttl_ms: int,
                          seen: dict[str, str] | None = None) -> set[str]:
        """`hold_lease` of every site in two pipelined round trips (SET NX PX and GET of each, then
        PEXPIRE of those this node holds), not two or three round trips per site one after the other:
        a node renewing 50 leases that way under load took longer than their TTL, lost some to the
        other node, and both ran a whole-site take-over pass (issue 14)."""
        keys = [self.keys.smart_charging_lease(s) for s in site_ids]

        def take(pipe: Any, key: str) -> None:
            pipe.set(key, node_id, nx=True, px=ttl_ms)
            pipe.get(key)

        replies = await pipelined(self.redis, keys, take)
        taken = {s for i, s in enumerate(site_ids) if replies[2 * i]}
        renew = [k for i, (s, k) in enumerate(zip(site_ids, keys, strict=True))
                 if s not in taken and replies[2 * i + 1] == node_id]
        renewed = await pipelined(self.redis, renew, lambda pipe, key: pipe.pexpire(key, ttl_ms))
        held = dict(zip(renew, renewed, strict=True))
        if seen is not None:
            seen.update((s, replies[2 * i + 1]) for i, s in enumerate(site_ids)
                        if s not in taken and replies[2 * i + 1] and replies[2 * i + 1] != node_id)
        return taken | {s for s, k in zip(site_ids, keys, strict=True) if held.get(k)}

    async def release_lease(self, site_id: str, node_id: str) -> None:
        """DEL the lease if this node holds it."""
        key = self.keys.smart_charging_lease(site_id)
        if await self.redis.get(key) == node_id:
            await self.redis.delete(key)

    async def events_tail(self) -> str:
        """Newest entry id of `evfleet:events`."""
        return await stream_tail_id(self.redis, self.keys.event_streams())

    async def read_events(self, last_id: str, count: int, block_ms: int,
                          skip: Callable[[Mapping[str, str]], bool] | None = None,
                          lag: StreamLag | None = None) -> tuple[str, list[Event]]:
        """XREAD after `last_id` (malformed entries are logged and skipped, and so are, unparsed,
        entries whose raw fields `skip` says to); `lag` sees the ids read (`evfleet.store.lag`)."""
        streams = self.keys.event_streams()
        last_id, pairs = await read_new_events(self.redis, streams, last_id, block_ms, count, skip, lag)
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
        """EVSEs of the site: ids from the connectors hash and from active transactions (only the
        site's stations' active sets are read, `evfleet.store.active_index`)."""
        k = self.keys
        stations = await site_station_ids(self.redis, k, site_id, default_site)
        keys: list[str] = []
        for start in range(0, len(stations), SITE_CHUNK):  # 40,000 keys were 20 ms in one stretch
            if start:
                await asyncio.sleep(0)
            keys += [key for s in stations[start:start + SITE_CHUNK]
                     for key in (k.station(s), k.station_connectors(s))]
        raw = await self._read(keys, "HK")
        active = await active_refs_of(self.redis, k, stations)  # the site's stations' sets only
        tx_evses: dict[str, set[int]] = {}
        for [sid_eid] in await self._read([k.transaction(ref) for ref in active], "T"):
            if sid_eid[0] and str(sid_eid[1] or "").isdigit():
                tx_evses.setdefault(sid_eid[0], set()).add(int(sid_eid[1]))
        triples: list[tuple[str, int, dict[str, str]]] = []
        for n, (sid, (station, connectors)) in enumerate(zip(stations, raw, strict=True)):
            if n and n % SITE_CHUNK == 0:  # a 20,000-station site: the loop is not held for one pass
                await asyncio.sleep(0)
            eids = {int(f.split("/", 1)[0]) for f in connectors if f.split("/", 1)[0].isdigit()}
            eids |= tx_evses.get(sid, set())
            triples += [(sid, eid, station) for eid in sorted(eids) if eid > 0]
        return await self._records(triples)

    async def evse_records(self, evses: Sequence[EvseId]) -> list[StoredEvse]:
        """Station hash, EVSE hash, applied profile and charging needs of each EVSE (`_read_each`)."""
        k = self.keys
        keys = [key for sid, eid in evses for key in (
            k.station(sid), k.station_evse(sid, eid), k.applied_profile(sid, eid),
            k.charging_needs(sid, eid))]

        def stored(i: int, raw: Sequence[Any]) -> StoredEvse:
            sid, eid = evses[i]
            return StoredEvse(sid, eid, _reply("H", raw[0]), _reply("H", raw[1]),
                              self._doc(keys[4 * i + 2], raw[2]), self._doc(keys[4 * i + 3], raw[3]))

        return await self._read_each(keys, "HHGG", stored, STORED_CHUNK)

    async def _records(self, triples: list[tuple[str, int, dict[str, str]]]) -> list[StoredEvse]:
        k = self.keys
        keys: list[str] = []
        for start in range(0, len(triples), SITE_CHUNK):
            if start:
                await asyncio.sleep(0)
            keys += [key for sid, eid, _ in triples[start:start + SITE_CHUNK] for key in (
                k.station_evse(sid, eid), k.applied_profile(sid, eid), k.charging_needs(sid, eid))]

        def stored(i: int, raw: Sequence[Any]) -> StoredEvse:
            sid, eid, station = triples[i]
            return StoredEvse(sid, eid, station, _reply("H", raw[0]), self._doc(keys[3 * i + 1], raw[1]),
                              self._doc(keys[3 * i + 2], raw[2]))

        return await self._read_each(keys, "HGG", stored, STORED_CHUNK)

    def _doc(self, key: str, raw: str | None) -> dict[str, Any] | None:
        """The JSON document `raw` read at `key`, parsed, or a copy of the one parsed from the same
        text the last time `key` was read (the text is read every time: never staler than the
        read). Copies are top-level (`dict(...)`): the service sets fields of records it rewrites,
        never inside their nested values, which the copies share with the memo."""
        if not raw:
            self._docs.pop(key, None)
            return None
        hit = self._docs.get(key)
        if hit is not None and hit[0] == raw:
            return dict(hit[1])
        doc = _json(raw)
        if not isinstance(doc, dict):
            return doc
        if len(self._docs) >= DOC_MEMO_MAX:
            self._docs.clear()
        self._docs[key] = (raw, doc)
        return dict(doc)

    async def _read(self, keys: Sequence[str], ops: str) -> list[tuple[Any, ...]]:
        """The replies of each item's keys, read by `ops` (one letter per key of an item: H HGETALL
        -> dict, K HKEYS, G GET, T HMGET station_id evse_id), in order, a tuple per item
        (`_read_each`)."""
        return await self._read_each(keys, ops, lambda _i, raw: tuple(map(_reply, ops, raw)), READ_CHUNK)

    async def _read_each(self, keys: Sequence[str], ops: str,
                         build: Callable[[int, Sequence[Any]], T], most: int) -> list[T]:
        """`build(i, replies)` of each item i, from the raw replies of its keys read by `ops` (see
        `_read`), at most `most` items per event-loop callback, in order. `keys` holds the items'
        keys in a row, `len(ops)` per item (no container per item: see below).

        One Lua script call per `READ_CHUNK` keys of one slot (every key of an item shares its
        station's hash tag), not one pipelined command per key: redis-py packs a command and parses
        its reply in Python, hiredis parses one script reply in C, which made most of a whole-site
        pass. Each call is one round trip and its reply one event-loop callback, so other callbacks
        run between chunks, as with `pipelined`. Like it, the chunks are not one snapshot.

        The item's result is built in the callback that receives its replies: no per-item list of
        replies outlives it. A whole-site read holds every result until it returns, and a young
        garbage collection walks every container alive then (issue 14: 20 per EVSE at 20,000 made
        each collection during a pass 20-80 ms of CPU).
        """
        width = len(ops)
        out: list[Any] = [None] * (len(keys) // width)
        per_call = max(1, min(most, READ_CHUNK // width))
        for group in slot_groups(self.redis, keys[::width]):
            for lo in range(0, len(group), per_call):
                part = group[lo:lo + per_call]
                replies = await self._script(keys=[keys[i * width + j] for i in part for j in range(width)],
                                             args=list(ops))
                for n, i in enumerate(part):
                    out[i] = build(i, replies[n * width:(n + 1) * width])
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
