"""The node-side write path: every state change an OCPP handler makes, plus its stream event.

Public names: `StateStore`, `STREAM_MAXLEN`, `SUPERSEDED_REASON` (stream fields: `evfleet.events`).

Each method writes the state and appends the `evfleet:events` entry in one MULTI
transaction or one Lua script (all or nothing). Every key one method touches belongs to one
station, and in the Redis Cluster layout (`evfleet.keys`) to that station's shard: the stream and
the `tx:active` / `tx:by-start` indexes written are the shard's, so each call is one slot.
Transactions are keyed by `tx_ref` (station, transactionId, generation; `evfleet.keys`).
TransactionEvent is written by a script that checks the transaction's (seqNo, eventType) set
first, so a replay racing with the original is applied once; a charger's reused id (counter
reset) starts the id's next generation.
A transaction starting on an EVSE whose previous transaction never ended ends that one in the
same script (`stopped_reason` "Other", `superseded_by`, a `tx.ended` event with `superseded: true`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from csms.core.metering import MeterSample
from csms.core.timeutil import iso
from csms.core.transactions import (
    TxDecision,
    TxEvent,
    TxState,
    belongs_to_earlier_generation,
    decide_transaction_event,
    seq_member,
    starts_new_generation,
)
from csms.store.quota import EventQuota
from evfleet.clock import Clock
from evfleet.events import EventType, event_fields
from evfleet.jsonsafe import dumps_compact
from evfleet.keys import Keys, parse_tx_ref, tx_ref
from evfleet.records import stored_float
from evfleet.store.client import as_str, as_str_dict, hmap
from evfleet.store.lean import LeanRedis

STREAM_MAXLEN = 100_000
SUPERSEDED_REASON = "Other"
"""`stopped_reason` of a transaction ended because a new one started on its EVSE (OCPP ReasonEnum)."""

_MARK_OFFLINE = """
if redis.call('HGET', KEYS[1], 'node') == ARGV[1] and redis.call('HGET', KEYS[1], 'conn_id') == ARGV[2] then
  redis.call('HSET', KEYS[1], 'online', '0', 'last_seen', ARGV[3])
  return 1
end
return 0
"""


# KEYS: generations hash, tx, seqnos[, evse hash]; ARGV: transactionId, seqnos member
# returns: the tx hash, member seen, member count, the EVSE's active tx ref, the id's latest generation
_READ_TX = """
local evse_tx = ''
if KEYS[4] then evse_tx = redis.call('HGET', KEYS[4], 'tx_ref') or '' end
return {redis.call('HGETALL', KEYS[2]), redis.call('SISMEMBER', KEYS[3], ARGV[2]),
        redis.call('SCARD', KEYS[3]), evse_tx, redis.call('HGET', KEYS[1], ARGV[1]) or '1'}
"""

# KEYS: tx, seqnos, events list, meter list, active set, by-start zset, evse hash, station hash, stream,
#       superseded tx (the EVSE's previous, never ended transaction; = KEYS[1] if none), generations hash,
#       the station's active set (`Keys.station_active`: changed with the active set, member for member)
# ARGV: member count seen by the reader, seqnos member, JSON spec (StateStore._tx_write_spec),
#       transactionId, generation seen by the reader
_WRITE_TX = """
if (redis.call('HGET', KEYS[11], ARGV[4]) or '1') ~= ARGV[5] then
  return 0  -- the id started a new generation since the read: read and decide again
end
if redis.call('SCARD', KEYS[2]) ~= tonumber(ARGV[1]) or redis.call('SISMEMBER', KEYS[2], ARGV[2]) == 1 then
  return 0
end
local s = cjson.decode(ARGV[3])
if s.supersede and (redis.call('HGET', KEYS[7], 'tx_ref') or '') ~= s.supersede.ref then
  return 0  -- the EVSE's transaction changed since the read: read and decide again
end
if s.generation then redis.call('HSET', KEYS[11], ARGV[4], s.generation) end
if s.supersede then redis.call('SREM', KEYS[12], s.supersede.ref) end
if s.supersede and redis.call('SREM', KEYS[5], s.supersede.ref) == 1 then
  local sh = {}
  for k, v in pairs(s.supersede.fields) do sh[#sh + 1] = k; sh[#sh + 1] = v end
  redis.call('HSET', KEYS[10], unpack(sh))
  redis.call('HSET', KEYS[7], 'last_tx_ref', s.supersede.ref, 'last_transaction_id', s.supersede.txid)
  redis.call('XADD', KEYS[9], 'MAXLEN', '~', s.maxlen, '*', unpack(s.supersede.event))
end
local hs = {}
for k, v in pairs(s.fields) do hs[#hs + 1] = k; hs[#hs + 1] = v end
redis.call('HSET', KEYS[1], unpack(hs))
if s.offline then redis.call('HINCRBY', KEYS[1], 'offline_events', 1) end
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('RPUSH', KEYS[3], s.raw)
if s.sample then redis.call('RPUSH', KEYS[4], s.sample) end
if s.start_score then redis.call('ZADD', KEYS[6], s.start_score, s.ref) end
if s.activate then redis.call('SADD', KEYS[5], s.ref); redis.call('SADD', KEYS[12], s.ref) end
if s.ended then redis.call('SREM', KEYS[5], s.ref); redis.call('SREM', KEYS[12], s.ref) end
if s.evse then
  if s.ended then
    redis.call('HSET', KEYS[7], 'last_tx_ref', s.ref, 'last_transaction_id', s.txid)
    if redis.call('HGET', KEYS[7], 'tx_ref') == s.ref then
      redis.call('HSET', KEYS[7], 'tx_ref', '', 'transaction_id', '')
    end
  elseif s.first then
    redis.call('HSET', KEYS[7], 'tx_ref', s.ref, 'transaction_id', s.txid)
    redis.call('HSETNX', KEYS[7], 'max_power_w', '0')
  end
  if s.phases then redis.call('HSET', KEYS[7], 'phases_used', s.phases) end
end
redis.call('HSET', KEYS[8], 'last_seen', s.now)
for _, ev in ipairs(s.events) do
  redis.call('XADD', KEYS[9], 'MAXLEN', '~', s.maxlen, '*', unpack(ev))
end
return 1
"""

# KEYS: evse hash, station hash, stream[, tx hash, tx meter list of the expected ref]
# ARGV: expected tx_ref ('' for none), now, maxlen, voltage ('' for none), sample JSON, number of
#       tx hash field/value pairs N, N pairs, the event's flat field/value pairs
# returns: {1, ref} when written, {0, ref} (nothing written) when the EVSE's tx_ref is not the expected
_METER_VALUES = """
local ref = redis.call('HGET', KEYS[1], 'tx_ref') or ''
if ref ~= ARGV[1] then return {0, ref} end
local n = tonumber(ARGV[6])
if ref ~= '' then
  redis.call('RPUSH', KEYS[5], ARGV[5])
  if n > 0 then redis.call('HSET', KEYS[4], unpack(ARGV, 7, 6 + 2 * n)) end
end
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'voltage_v', ARGV[4]) end
redis.call('HSET', KEYS[2], 'last_seen', ARGV[2])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', unpack(ARGV, 7 + 2 * n))
return {1, ref}
"""


def needs_fields(record: Mapping[str, Any], at: datetime) -> dict[str, str]:
    """A session's loop fields of new charging needs (`Keys.session_loop`, docs/redis-schema.md):
    when they came, the energy metered then (0 when unknown), departure and energy asked."""
    return {"needs_received_at": at.isoformat(),
            "energy_at_needs_wh": str(stored_float(record.get("meter_wh"), 0.0)),
            "departure_time": str(record.get("departure_time") or ""),
            "energy_amount_wh": str(record.get("energy_amount_wh") or "")}


def _dumps(value: Any) -> str:
    return dumps_compact(value)


class StateStore:
    """Writes of one csms node (stateless apart from handles; safe to share)."""

    def __init__(self, redis: Redis, keys: Keys, clock: Clock, node_id: str,
                 quota: EventQuota | None = None, fast: LeanRedis | None = None) -> None:
        self.redis = redis
        self.keys = keys
        self.clock = clock
        self.node_id = node_id
        self.quota = quota  # per-station limit on station-generated events (None: unlimited)
        # the per-message writes (TransactionEvent, MeterValues, Heartbeat) go through `fast` when
        # given (`evfleet.store.lean`: same server, pipelined, a fraction of redis-py's CPU)
        self.fast = fast
        scripts: Any = fast or redis
        self._mark_offline = redis.register_script(_MARK_OFFLINE)
        self._read_tx = scripts.register_script(_READ_TX)
        self._write_tx = scripts.register_script(_WRITE_TX)
        self._meter_values = scripts.register_script(_METER_VALUES)
        # (station, EVSE) -> the tx_ref this node last saw active there: only the guess
        # `meter_values` passes to its script, which checks it against the EVSE hash (a wrong
        # guess costs a second round trip, never a write to the wrong transaction)
        self._evse_ref: dict[str, dict[int, str]] = {}

    def _xadd(self, pipe: Pipeline | Redis, station_id: str, fields: dict[str, str]) -> None:
        pipe.xadd(self.keys.station_events(station_id), fields,  # type: ignore[arg-type]
                  maxlen=STREAM_MAXLEN, approximate=True)

    def _event(self, pipe: Pipeline, event_type: EventType, station_id: str, site_id: str,
               evse_id: int | None = None, ref: str = "",
               data: Mapping[str, Any] | None = None) -> None:
        self._xadd(pipe, station_id,
                   event_fields(event_type, self.clock.now(), station_id, evse_id, ref, site_id, data))

    # --- reads --------------------------------------------------------------------
    async def station_info(self, station_id: str) -> dict[str, str]:
        """The station hash (empty if unknown)."""
        return as_str_dict(await self.redis.hgetall(self.keys.station(station_id)))

    async def evse_transaction(self, station_id: str, evse_id: int) -> str:
        """The `tx_ref` of the EVSE's active transaction ("" if none)."""
        return as_str(await self.redis.hget(self.keys.station_evse(station_id, evse_id), "tx_ref"))

    async def id_token_status(self, id_token: str) -> dict[str, str]:
        """Stored id token record (empty if unknown)."""
        return as_str_dict(await self.redis.hgetall(self.keys.id_token(id_token)))

    # --- connection lifecycle -----------------------------------------------------
    async def station_connected(self, station_id: str, site_id: str, conn_id: str,
                                remote: str, security_profile: int, ocpp_version: str = "2.0.1") -> None:
        """Mark a station online on this node (and the OCPP version it speaks)."""
        now = self.clock.now().isoformat()
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self.keys.station(station_id), mapping=hmap({
            "online": "1", "node": self.node_id, "conn_id": conn_id, "connected_at": now,
            "last_seen": now, "remote_addr": remote, "security_profile": str(security_profile),
            "ocpp_version": ocpp_version}))
        self._event(pipe, EventType.STATION_CONNECTED, station_id, site_id,
                    data={"node": self.node_id, "remote_addr": remote, "ocpp_version": ocpp_version})
        await pipe.execute()

    async def station_disconnected(self, station_id: str, site_id: str, conn_id: str, code: int | None,
                                   reason: str) -> bool:
        """Mark a station offline if this connection still owns it. True if it did."""
        now = self.clock.now().isoformat()
        done = await self._mark_offline(keys=[self.keys.station(station_id)],
                                        args=[self.node_id, conn_id, now])
        self._evse_ref.pop(station_id, None)
        if done:
            pipe = self.redis.pipeline(transaction=True)
            self._event(pipe, EventType.STATION_DISCONNECTED, station_id, site_id,
                        data={"node": self.node_id, "code": code, "reason": reason})
            await pipe.execute()
        return bool(done)

    # --- B: provisioning ----------------------------------------------------------
    async def boot(self, station_id: str, site_id: str, info: Mapping[str, str], reason: str,
                   heartbeat_interval_s: int) -> None:
        """Store a BootNotification (vendor, model, serial, firmware, reason).

        Each EVSE the station reported before gets `booted_at` (clock seconds): the station may
        have lost its TxDefaultProfile, so the node acting for its site forces it again while
        `booted_at` is not older than the `default_at` of its last accepted default
        (`csms.smart_charging.defaults.needs_default`). Stored, not only sent as the event: a boot
        while no node acts for the site (a take-over, a hand-over) is found by the taker's
        RECONCILE, which reads the site."""
        stamp = self.clock.now()
        now = stamp.isoformat()
        fields = {k: v for k, v in info.items() if v is not None}
        connectors = await self.redis.hkeys(self.keys.station_connectors(station_id))
        evse_ids = {int(head) for f in connectors if (head := as_str(f).split("/", 1)[0]).isdigit()}
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self.keys.station(station_id), mapping=hmap({
            **fields, "boot_reason": reason, "last_boot": now, "last_seen": now,
            "heartbeat_interval_s": str(heartbeat_interval_s)}))
        for evse_id in sorted(e for e in evse_ids if e > 0):
            pipe.hset(self.keys.station_evse(station_id, evse_id), "booted_at", repr(stamp.timestamp()))
        self._event(pipe, EventType.STATION_BOOTED, station_id, site_id, data={**fields, "reason": reason})
        await pipe.execute()

    async def seen(self, station_id: str) -> None:
        """Update `last_seen` (Heartbeat)."""
        key, now = self.keys.station(station_id), self.clock.now().isoformat()
        if self.fast is not None:
            await self.fast.execute("HSET", key, "last_seen", now)
        else:
            await self.redis.hset(key, "last_seen", now)

    # --- G: availability ----------------------------------------------------------
    async def connector_status(self, station_id: str, site_id: str, evse_id: int, connector_id: int,
                               status: str, station_ts: str) -> None:
        """Store a StatusNotification."""
        now = self.clock.now().isoformat()
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self.keys.station_connectors(station_id), f"{evse_id}/{connector_id}",
                  _dumps({"status": status, "updated_at": now, "station_ts": station_ts}))
        pipe.hsetnx(self.keys.station_evse(station_id, evse_id), "tx_ref", "")
        pipe.hsetnx(self.keys.station_evse(station_id, evse_id), "transaction_id", "")
        pipe.hsetnx(self.keys.station_evse(station_id, evse_id), "max_power_w", "0")
        pipe.hset(self.keys.station(station_id), "last_seen", now)
        self._event(pipe, EventType.CONNECTOR_STATUS, station_id, site_id, evse_id,
                    data={"connector_id": connector_id, "status": status, "station_ts": station_ts})
        await pipe.execute()

    async def set_evse_facts(self, station_id: str, evse_id: int, facts: Mapping[str, str]) -> None:
        """Record EVSE hardware facts (max_power_w, phases, voltage_v, rate_unit)."""
        if facts:
            await self.redis.hset(self.keys.station_evse(station_id, evse_id), mapping=hmap(facts))

    # --- E: transactions ----------------------------------------------------------
    async def transaction_event(self, station_id: str, site_id: str, ev: TxEvent,
                                raw: Mapping[str, Any]) -> TxDecision:
        """Apply one TransactionEvent of `station_id` atomically; a replay changes nothing.

        The transaction is (station_id, transactionId, generation): another station's
        transaction with the same id is never read or written. Read (one script), decide in
        Python (`csms.core.transactions`), write (one script that first checks that no other
        event of this transaction, and no new generation of its id, was stored meanwhile, else
        the read-decide-write is repeated): two round trips, all-or-nothing.
        """
        k = self.keys
        txid, member = ev.transaction_id, seq_member(ev)
        gen_key = k.transaction_generations(station_id)
        latest = gen = 1
        for _ in range(100):
            ref = tx_ref(station_id, txid, gen)
            read_keys = [gen_key, k.transaction(ref), k.transaction_seqnos(ref)]
            if ev.evse_id is not None:
                read_keys.append(k.station_evse(station_id, ev.evse_id))
            raw_fields, raw_seen, stored, evse_ref, raw_latest = await self._read_tx(
                keys=read_keys, args=[txid, member])
            if int(raw_latest) != latest:  # the id was reused: start from its latest generation
                latest = gen = int(raw_latest)
                continue
            current = dict(zip(raw_fields[::2], raw_fields[1::2], strict=True))
            if belongs_to_earlier_generation(current, ev):
                gen -= 1
                continue
            seen, previous = bool(raw_seen), ""
            evse_id = ev.evse_id if ev.evse_id is not None else (
                int(current["evse_id"]) if current.get("evse_id") else None)
            if gen == latest and starts_new_generation(current, seen, ev):  # counter reset: new tx
                previous, ref = ref, tx_ref(station_id, txid, gen + 1)
                current, seen, stored = {}, False, 0
            decision = decide_transaction_event(current, seen, ev)
            if decision.replay:
                return decision
            spec = self._tx_write_spec(station_id, site_id, ev, decision, evse_id, raw, ref)
            if previous:
                spec["generation"] = str(gen + 1)
                spec["fields"]["previous_tx_ref"] = previous
            tx_key = k.transaction(ref)
            evse_key = k.station_evse(station_id, evse_id) if evse_id is not None else tx_key
            stale = as_str(evse_ref)
            superseded_key = tx_key
            if decision.first_seen and not decision.ended_now and evse_id is not None and stale \
                    and stale != ref:
                spec["supersede"] = await self._supersede_spec(station_id, site_id, evse_id, stale, ev, ref)
                superseded_key = k.transaction(stale)
            done = await self._write_tx(
                keys=[tx_key, k.transaction_seqnos(ref), k.transaction_events(ref), k.transaction_meter(ref),
                      k.active_for(station_id), k.by_start_for(station_id), evse_key, k.station(station_id),
                      k.station_events(station_id), superseded_key, gen_key, k.station_active(station_id)],
                args=[str(stored), member, _dumps(spec), txid, str(latest)])
            if done:
                if evse_id is not None and (decision.ended_now or decision.first_seen):
                    self._evse_ref.setdefault(station_id, {})[evse_id] = "" if decision.ended_now else ref
                return decision
        raise RuntimeError(f"transaction {txid} of {station_id}: too many concurrent writers")

    async def _supersede_spec(self, station_id: str, site_id: str, evse_id: int, stale_ref: str,
                              ev: TxEvent, new_ref: str) -> dict[str, Any]:
        """How `_WRITE_TX` ends `stale_ref`, the EVSE's transaction that never got its Ended, when
        `ev` starts a new one there: state Ended, stopped_reason `Other`, `ended_at` the new
        transaction's start time (event time, like every tx time), `superseded_by` (the new
        transactionId; `superseded_by_ref` its ref), and a `tx.ended` event whose data says
        `superseded: true`. The script applies it only if the stale ref is still the EVSE's
        transaction and still in `tx:active`."""
        old = as_str_dict(await self.redis.hgetall(self.keys.transaction(stale_ref)))
        ended_at = iso(ev.timestamp)
        fields = {"state": TxState.ENDED.value, "stopped_reason": SUPERSEDED_REASON, "ended_at": ended_at,
                  "superseded_by": ev.transaction_id, "superseded_by_ref": new_ref}
        data: dict[str, Any] = {
            "event_type": TxState.ENDED.value, "seq_no": None, "trigger_reason": "",
            "offline": False, "timestamp": ended_at, "state": TxState.ENDED.value,
            "charging_state": old.get("charging_state"), "id_token": old.get("id_token"),
            "connector_id": int(old["connector_id"]) if old.get("connector_id") else None,
            "duplicate_end": False, "stopped_reason": SUPERSEDED_REASON, "superseded": True,
            "superseded_by": ev.transaction_id,
        }
        for name in ("energy_wh", "power_w", "current_a", "soc"):
            data[name] = float(old[name]) if old.get(name) else None
        event = event_fields(EventType.TX_ENDED, self.clock.now(), station_id, evse_id, stale_ref, site_id,
                             data)
        return {"ref": stale_ref, "txid": parse_tx_ref(stale_ref).transaction_id, "fields": fields,
                "event": [item for pair in event.items() for item in pair]}

    def _tx_write_spec(self, station_id: str, site_id: str, ev: TxEvent, d: TxDecision,
                       evse_id: int | None, raw: Mapping[str, Any], ref: str) -> dict[str, Any]:
        """Everything `_WRITE_TX` applies (no JSON nulls: cjson turns them into truthy values)."""
        fields = dict(d.fields)
        if d.first_seen:
            fields.update(station_id=station_id, offline_events="0", tx_ref=ref,
                          generation=str(parse_tx_ref(ref).generation))
        spec: dict[str, Any] = {"ref": ref, "txid": ev.transaction_id, "fields": fields, "raw": _dumps(raw),
                                "now": self.clock.now().isoformat(), "maxlen": str(STREAM_MAXLEN),
                                "offline": ev.offline, "first": d.first_seen, "ended": d.ended_now,
                                "activate": d.first_seen and not d.ended_now, "evse": evse_id is not None}
        if d.store_sample and ev.sample is not None:
            spec["sample"] = _dumps(ev.sample.to_dict())
        if d.start_score is not None:
            spec["start_score"] = repr(d.start_score)
        if ev.number_of_phases:
            spec["phases"] = str(ev.number_of_phases)
        data: dict[str, Any] = {
            "event_type": ev.event_type.value, "seq_no": ev.seq_no, "trigger_reason": ev.trigger_reason,
            "offline": ev.offline, "timestamp": ev.timestamp.isoformat(), "state": d.fields.get("state"),
            "charging_state": ev.charging_state, "id_token": ev.id_token,
            "connector_id": ev.connector_id, "duplicate_end": d.duplicate_end,
        }
        if ev.sample is not None:
            data.update({n: getattr(ev.sample, n) for n in ("energy_wh", "power_w", "current_a", "soc")})
        if d.ended_now:
            data["stopped_reason"] = d.fields.get("stopped_reason")
        emits = d.emit or ([EventType.TX_UPDATED] if ev.sample is not None else [])
        now = self.clock.now()
        spec["events"] = [
            [item for pair in event_fields(t, now, station_id, evse_id, ref, site_id, data).items()
             for item in pair] for t in emits]
        return spec

    # --- J: meter values ------------------------------------------------------------
    async def meter_values(self, station_id: str, site_id: str, evse_id: int, sample: MeterSample) -> str:
        """Store MeterValues: appended to the EVSE's active transaction if any. Returns its tx_ref.

        One script (one round trip) reads the EVSE's transaction and writes, given the tx_ref this
        node last saw there; when that guess is stale the script writes nothing and returns the
        EVSE's tx_ref, and the write is repeated with it."""
        if not evse_id:
            return await self._meter_values_without_evse(station_id, site_id, sample)
        k = self.keys
        sample_json = _dumps(sample.to_dict())
        vals = [item for n in ("energy_wh", "power_w", "current_a", "soc") if getattr(sample, n) is not None
                for item in (n, repr(float(getattr(sample, n))))]
        if sample.ts and (sample.energy_wh is not None or sample.power_w is not None):
            vals += ["metered_at", sample.ts]  # when they were read (the optimizer plans from now)
        voltage = repr(float(sample.voltage_v)) if sample.voltage_v is not None else ""
        hint = self._evse_ref.setdefault(station_id, {})
        ref = hint.get(evse_id, "")
        for _ in range(100):
            keys = [k.station_evse(station_id, evse_id), k.station(station_id), k.station_events(station_id)]
            if ref:
                keys += [k.transaction(ref), k.transaction_meter(ref)]
            event = event_fields(EventType.METER_VALUES, self.clock.now(), station_id, evse_id, ref, site_id,
                                 sample.to_dict())
            done, actual = await self._meter_values(keys=keys, args=[
                ref, self.clock.now().isoformat(), str(STREAM_MAXLEN), voltage, sample_json,
                str(len(vals) // 2), *vals, *(item for pair in event.items() for item in pair)])
            ref = hint[evse_id] = as_str(actual)
            if done:
                return ref
        raise RuntimeError(f"EVSE {evse_id} of {station_id}: its transaction keeps changing")

    async def _meter_values_without_evse(self, station_id: str, site_id: str, sample: MeterSample) -> str:
        """MeterValues of the whole station (evseId 0): `last_seen` and the event."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self.keys.station(station_id), "last_seen", self.clock.now().isoformat())
        self._event(pipe, EventType.METER_VALUES, station_id, site_id, None, "", sample.to_dict())
        await pipe.execute()
        return ""

    # --- K: ISO 15118 needs and schedules -------------------------------------------
    async def session_needs(self, station_id: str, evse_id: int, ref: str) -> tuple[dict[str, Any] | None,
                                                                                    float | None]:
        """(needs stored for the session `ref` (its tx_ref) or None, its metered energy in Wh or None)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.get(self.keys.charging_needs(station_id, evse_id))
        pipe.hget(self.keys.transaction(ref), "energy_wh")
        raw, energy = await pipe.execute()
        needs = json.loads(raw) if raw else None
        if needs is not None and needs.get("tx_ref") != ref:
            needs = None
        try:
            meter = float(energy) if energy not in (None, "", b"") else None
        except (TypeError, ValueError):
            meter = None
        return needs, meter

    async def charging_needs(self, station_id: str, site_id: str, evse_id: int, txid: str,
                             record: Mapping[str, Any], repeated: bool = False) -> None:
        """Store an EV's charging needs and emit `ev.charging_needs` (`txid`: the session's tx_ref);
        a repeated request (same as the stored one, see `csms.core.charging_needs.is_repeated_request`)
        is only recorded as an event with status `Repeated`: the stored request and its energy
        accounting stay.

        New needs also set the session's loop fields the optimizer reads (`energy_at_needs_wh`:
        the energy asked is counted from there) and the API shows, here with the needs, not by the
        node acting for the site: needs that came while no node acted for it (a take-over, a
        hand-over) reached no site queue, and the energy asked was counted from the session's start."""
        pipe = self.redis.pipeline(transaction=True)
        if not repeated:
            pipe.set(self.keys.charging_needs(station_id, evse_id), _dumps(record))
            if txid:
                pipe.hset(self.keys.session_loop(txid), mapping=hmap(needs_fields(record, self.clock.now())))
        data = {k: v for k, v in record.items() if k != "raw"}
        self._event(pipe, EventType.EV_CHARGING_NEEDS, station_id, site_id, evse_id, txid, data)
        await pipe.execute()

    async def ev_schedule(self, station_id: str, site_id: str, evse_id: int, txid: str,
                          record: Mapping[str, Any]) -> None:
        """Store an EV's own schedule and emit `ev.charging_schedule` (`txid`: the session's tx_ref)."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.set(self.keys.ev_schedule(station_id, evse_id), _dumps(record))
        self._event(pipe, EventType.EV_CHARGING_SCHEDULE, station_id, site_id, evse_id, txid, dict(record))
        await pipe.execute()

    # --- everything else: event only ----------------------------------------------
    async def record_event(self, event_type: EventType, station_id: str, site_id: str,
                           data: Mapping[str, Any], evse_id: int | None = None,
                           ref: str = "", station_fields: Mapping[str, str] | None = None,
                           ) -> None:
        """Append an event (optionally with station hash fields) atomically (`ref`: a tx_ref); a
        station-generated event over the station's quota is not appended (`csms.store.quota`)."""
        admitted = dict(data) if self.quota is None else await self.quota.admit(station_id, event_type, data)
        pipe = self.redis.pipeline(transaction=True)
        if station_fields:
            pipe.hset(self.keys.station(station_id), mapping=hmap(station_fields))
        if admitted is not None:
            self._event(pipe, event_type, station_id, site_id, evse_id, ref, admitted)
        if station_fields or admitted is not None:
            await pipe.execute()

    async def count_violation(self, station_id: str, action: str) -> None:
        """Count a schema violation accepted in compatibility mode."""
        await self.redis.hincrby(self.keys.station_violations(station_id), action, 1)

    async def protocol_error(self, station_id: str, site_id: str, data: Mapping[str, Any]) -> None:
        """Append a `protocol.error` event (bad input from a station; nothing else is stored),
        within the station's quota."""
        await self.record_event(EventType.PROTOCOL_ERROR, station_id, site_id, data)
