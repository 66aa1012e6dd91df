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
from evfleet.records import EVSE_DECODED_FIELDS
from evfleet.store.client import as_str
from evfleet.store.lag import StreamLag
from evfleet.store.owned import PEXPIRE_IF_OWNED
from evfleet.store.port import EvseId, StoredEvse, StoreWrite
from evfleet.store.shards import active_refs_of
from evfleet.store.sites import own_limit_kw, pipelined, positive_kw, site_stations_online
from evfleet.store.slots import slot_groups
from evfleet.store.stream import read_new_events, stream_tail_id

if TYPE_CHECKING:
    from redis.asyncio import Redis

log = logging.getLogger(__name__)

T = TypeVar("T")

STREAM_MAXLEN = 100_000

EVSE_MEMO_MAX = 100_000
"""EVSE records `_stored` keeps with the raw replies they were built from (cleared when full)."""

READ_CHUNK = 600
"""Keys per Lua read (`RedisStateStore._read`): one short script run in Redis, one reply to parse
(in one event-loop callback: 1,800 keys were 10-20 ms of it at 800 stations, issue 14)."""

STORED_CHUNK = 200
"""EVSE records built per event-loop callback (`_read_each`: the JSON of their applied profile and
charging needs parsed unless unchanged since the last read, `_stored`); all of a site's in one
callback were 15-24 ms at 800 EVSEs (issue 14). 200 EVSEs are `READ_CHUNK` keys, one call; most
records of a pass are unchanged since the last one and not parsed again."""

_READ = """
local evse_fields = {EVSE_FIELDS}
local out = {}
local n = #ARGV
for i = 1, #KEYS do
  local op = ARGV[((i - 1) % n) + 1]
  if op == 'H' then out[i] = redis.call('HGETALL', KEYS[i])
  elseif op == 'O' then out[i] = redis.call('HMGET', KEYS[i], 'online')
  elseif op == 'E' then out[i] = redis.call('HMGET', KEYS[i], unpack(evse_fields))
  elseif op == 'K' then out[i] = redis.call('HKEYS', KEYS[i])
  elseif op == 'G' then out[i] = redis.call('GET', KEYS[i])
  elseif op == 'T' then out[i] = redis.call('HMGET', KEYS[i], 'station_id', 'evse_id')
  else return redis.error_reply('unknown read ' .. op) end
end
return out
""".replace("EVSE_FIELDS", ", ".join(f"'{f}'" for f in EVSE_DECODED_FIELDS))


_CAS_SET = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3]) end
return false
"""
"""`steal_leases`: take the lease only from the holder it was seen with."""


SITE_CHUNK = 2000
"""Stations (EVSEs) a whole-site read handles between two yields to the event loop while it builds
its keys and EVSE lists (`site_evses`, `_records`): 20,000 of them held the loop for 20-30 ms."""


def _parsed(raw: str | bytes | None) -> Any:
    """A stored JSON document's text parsed (None if none)."""
    return json.loads(raw) if raw else None


def _reply(op: str, raw: Any) -> Any:
    """One key's part of a `_READ` reply as redis-py would return its command's (nil -> None),
    lists of strings as tuples (which the garbage collector stops tracking, issue 14); `O` (the
    station's `online`) and `E` (the decoded fields of an EVSE hash) as the hash's dict of those
    fields that exist."""
    if op == "H":
        it = iter(raw)
        return dict(zip(it, it, strict=True))
    if op == "O":
        return {} if raw[0] is None or raw[0] is False else {"online": raw[0]}
    if op == "E":
        return {f: v for f, v in zip(EVSE_DECODED_FIELDS, raw, strict=True)
                if v is not None and v is not False}
    if op == "T":
        return tuple(None if v is False else v for v in raw)
    if op == "K":
        return tuple(raw)
    return raw


class RedisStateStore:
    """The smart-charging store port on Redis (see module doc)."""

    def __init__(self, redis: Redis, keys: Keys, alive_redis: Redis | None = None) -> None:
        self.redis = redis
        self.keys = keys
        self.alive_redis = alive_redis or redis
        """The client of `announce_alive` / `refresh_alive` (the node's liveness): a connection of its
        own in a node (`evfleet.store.client.own_connection`), not queued behind station traffic."""
        self._script = redis.register_script(_READ)
        self._refresh = self.alive_redis.register_script(PEXPIRE_IF_OWNED)  # `refresh_alive`
        self._evses: dict[bytes, tuple[tuple[Any, ...], StoredEvse]] = {}  # `_stored`: key -> (raw, record)
        self._keys_of_station: dict[str, tuple[bytes, bytes]] = {}
        self._keys_of_evse: dict[tuple[str, int], tuple[bytes, bytes, bytes]] = {}

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
        """SET PX, then SADD to the announced nodes (in that order: a node listed there without
        its key has lapsed, `live_nodes`)."""
        await self.alive_redis.set(self.keys.node_alive(node_id), token, px=ttl_ms)
        await self.alive_redis.sadd(self.keys.smart_charging_nodes(), node_id)

    async def refresh_alive(self, node_id: str, token: str, ttl_ms: int) -> bool:
        """PEXPIRE if the key still holds `token` (a one-key script)."""
        return bool(await self._refresh(keys=[self.keys.node_alive(node_id)], args=[token, ttl_ms]))

    async def alive_tokens(self, node_ids: Sequence[str]) -> dict[str, str]:
        """GET of each node's liveness key, pipelined."""
        replies = await pipelined(self.redis, node_ids, lambda pipe, n: pipe.get(self.keys.node_alive(n)))
        return {n: t for n, t in zip(node_ids, replies, strict=True) if t}

    async def live_nodes(self) -> dict[str, str]:
        """SMEMBERS of the announced nodes, GET of their liveness keys; SREM of those whose key is
        gone (one that announces itself again is listed again: it sets its key first)."""
        nodes = sorted(as_str(n) for n in await self.redis.smembers(self.keys.smart_charging_nodes()))
        tokens = await self.alive_tokens(nodes)
        gone = [n for n in nodes if n not in tokens]
        if gone:
            await self.redis.srem(self.keys.smart_charging_nodes(), *gone)
        return tokens

    async def lease_holders(self, site_ids: Sequence[str]) -> dict[str, str]:
        """GET of each site's lease key, pipelined."""
        replies = await pipelined(self.redis, site_ids,
                                  lambda pipe, s: pipe.get(self.keys.smart_charging_lease(s)))
        return {s: t or "" for s, t in zip(site_ids, replies, strict=True)}

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
        return _parsed(await self.redis.get(self.keys.site_plan(site_id)))

    async def site_evses(self, site_id: str, default_site: str) -> list[StoredEvse]:
        """EVSEs of the site: ids from the connectors hash and from active transactions (only the
        site's stations' active sets are read, `evfleet.store.active_index`)."""
        k = self.keys
        # the station's `online` (the one field of its hash decode_evse reads) comes with the check
        # of its `site_id`, in the same read of the hash
        online = await site_stations_online(self.redis, k, site_id, default_site)
        stations = [sid for sid, _ in online]
        keys: list[bytes] = []
        for start in range(0, len(stations), SITE_CHUNK):  # 40,000 keys were 20 ms in one stretch
            if start:
                await asyncio.sleep(0)
            keys += [self._station_keys(s)[1] for s in stations[start:start + SITE_CHUNK]]
        # one reply per station, not wrapped in a tuple per item (`_read`): 20,000 stations' were
        # 40,000 tuples alive at once, for young collections to walk (issue 14)
        raw = await self._read_each(keys, "K", lambda _i, reply, at: _reply("K", reply[at]), READ_CHUNK)
        active = await active_refs_of(self.redis, k, stations)  # the site's stations' sets only
        tx_evses: dict[str, set[int]] = {}

        def tx_evse(_i: int, reply: Sequence[Any], at: int) -> None:
            """A transaction's (station, EVSE) into `tx_evses` as its reply arrives (kept: none)."""
            sid, eid = _reply("T", reply[at])
            if sid and str(eid or "").isdigit():
                tx_evses.setdefault(sid, set()).add(int(eid))

        await self._read_each([k.transaction(ref) for ref in active], "T", tx_evse, READ_CHUNK)
        # the EVSEs in three columns (no tuple per EVSE: a young collection walks what a pass holds)
        sids: list[str] = []
        eids: list[int] = []
        ons: list[str | None] = []
        for n, ((sid, on), connectors) in enumerate(zip(online, raw, strict=True)):
            if n and n % SITE_CHUNK == 0:  # a 20,000-station site: the loop is not held for one pass
                await asyncio.sleep(0)
            ids = {int(f.split("/", 1)[0]) for f in connectors if f.split("/", 1)[0].isdigit()}
            ids |= tx_evses.get(sid, set())
            for eid in sorted(ids):
                if eid > 0:
                    sids.append(sid)
                    eids.append(eid)
                    ons.append(on)
        return await self._records(sids, eids, ons)

    async def evse_records(self, evses: Sequence[EvseId]) -> list[StoredEvse]:
        """The station's `online`, the EVSE hash's decoded fields, applied profile and charging needs
        of each EVSE (`_read_each`, `_stored`)."""
        keys = [key for sid, eid in evses for key in (self._station_keys(sid)[0], *self._evse_keys(sid, eid))]

        def stored(i: int, raw: Sequence[Any], at: int) -> StoredEvse:
            sid, eid = evses[i]
            return self._stored(keys[4 * i + 1], sid, eid, _reply("O", raw[at]).get("online"), raw[at + 1],
                                raw[at + 2], raw[at + 3])

        return await self._read_each(keys, "OEGG", stored, STORED_CHUNK)

    def _station_keys(self, sid: str) -> tuple[bytes, bytes]:
        """(station hash, connectors hash) keys of a station, built and encoded once (a whole-site
        read sends them for every station each pass: redis-py encodes a str key per command)."""
        hit = self._keys_of_station.get(sid)
        if hit is None:
            if len(self._keys_of_station) >= EVSE_MEMO_MAX:
                self._keys_of_station.clear()
            hit = self._keys_of_station[sid] = (self.keys.station(sid).encode(),
                                                self.keys.station_connectors(sid).encode())
        return hit

    def _evse_keys(self, sid: str, eid: int) -> tuple[bytes, bytes, bytes]:
        """(EVSE hash, applied profile, charging needs) keys of an EVSE, built and encoded once."""
        hit = self._keys_of_evse.get((sid, eid))
        if hit is None:
            if len(self._keys_of_evse) >= EVSE_MEMO_MAX:
                self._keys_of_evse.clear()
            k = self.keys
            hit = self._keys_of_evse[(sid, eid)] = (
                k.station_evse(sid, eid).encode(), k.applied_profile(sid, eid).encode(),
                k.charging_needs(sid, eid).encode())
        return hit

    async def _records(self, sids: list[str], eids: list[int], ons: list[str | None]) -> list[StoredEvse]:
        """The record of each EVSE (station, EVSE id, the station's `online`), `_stored`."""
        keys: list[bytes] = []
        for start in range(0, len(sids), SITE_CHUNK):
            if start:
                await asyncio.sleep(0)
            keys += [key for sid, eid in zip(sids[start:start + SITE_CHUNK], eids[start:start + SITE_CHUNK],
                                              strict=True) for key in self._evse_keys(sid, eid)]

        def stored(i: int, raw: Sequence[Any], at: int) -> StoredEvse:
            return self._stored(keys[3 * i], sids[i], eids[i], ons[i], raw[at], raw[at + 1], raw[at + 2])

        return await self._read_each(keys, "EGG", stored, STORED_CHUNK)

    def _stored(self, key: bytes, sid: str, eid: int, online: str | None, evse: Sequence[Any],
                profile: str | None, needs: str | None) -> StoredEvse:
        """The record of one EVSE from this read's raw replies (its station's `online`, the `E` reply
        of its hash, the texts of its applied-profile record and charging needs).

        Everything is read every time and compared: when this read's raw replies equal those the
        EVSE's last record was built from, that record (the same object) is returned, else a new
        one is built (parsed) and kept. So a record is never staler than the read, and a decode
        memo knows an unchanged one by identity (`csms.smart_charging.decoding`). The record and
        its documents are shared between reads: readers never change them (the service's
        `EvseInfo` holds these documents themselves, read-only, `decoding.decode_all`). `key`: the
        EVSE hash's key, the memo's."""
        hit = self._evses.get(key)
        if hit is not None:  # compared one by one: no tuple per EVSE per pass (young collections)
            was = hit[0]
            if was[0] == online and was[1] == evse and was[2] == profile and was[3] == needs:
                return hit[1]
        raw = (online, evse, profile, needs)
        station = {} if online is None else {"online": online}
        record = StoredEvse(sid, eid, station, _reply("E", evse), _parsed(profile), _parsed(needs))
        if len(self._evses) >= EVSE_MEMO_MAX:
            self._evses.clear()
        self._evses[key] = (raw, record)
        return record

    async def _read(self, keys: Sequence[str | bytes], ops: str) -> list[tuple[Any, ...]]:
        """The replies of each item's keys, read by `ops` (one letter per key of an item: H HGETALL
        -> dict, O HMGET online -> dict, E HMGET of `EVSE_DECODED_FIELDS` -> dict, K HKEYS, G GET,
        T HMGET station_id evse_id), in order, a tuple per item
        (`_read_each`)."""
        width = len(ops)
        return await self._read_each(
            keys, ops, lambda _i, raw, at: tuple(map(_reply, ops, raw[at:at + width])), READ_CHUNK)

    async def _read_each(self, keys: Sequence[str | bytes], ops: str,
                         build: Callable[[int, Sequence[Any], int], T], most: int) -> list[T]:
        """`build(i, replies, at)` of each item i, from the raw replies of its keys read by `ops` (see
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
                    out[i] = build(i, replies, n * width)
        return out

    async def applied_profile(self, evse: EvseId) -> dict[str, Any] | None:
        """`profile:{sid}:{eid}`."""
        return _parsed(await self.redis.get(self.keys.applied_profile(*evse)))

    async def ev_schedule(self, evse: EvseId) -> dict[str, Any] | None:
        """The EV's schedule record of the EVSE."""
        return _parsed(await self.redis.get(self.keys.ev_schedule(*evse)))

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
