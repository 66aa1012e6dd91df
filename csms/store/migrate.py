"""Move transactions stored by versions before transaction refs (keys `tx:{transactionId}`) to
their refs (`tx:{station}:{transactionId}`, docs/redis-schema.md "Transaction identity").

Public names: `migrate_legacy_transactions`.

Every csms node runs it at start-up, before it serves stations: idempotent, and cheap when there
is nothing to move (one SMEMBERS and one ZRANGE). Each transaction moves in one Lua script (all
or nothing; a transaction another node moved meanwhile is skipped): its hash, events, meter and
loop record are renamed, the replay set is rebuilt as `{seqNo}:{eventType}` from the stored
events, the `tx:active` / `tx:by-start` members and the EVSE hash's `tx_ref` follow, and the
EVSE's needs / profile / schedule records of that transaction get its `tx_ref`.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from redis.asyncio import Redis

from evfleet.keys import Keys, parse_tx_ref, tx_ref
from evfleet.store.client import as_str, as_str_dict

log = logging.getLogger(__name__)

# KEYS: old tx, old seqnos, old events, old meter, old loop, new tx, new seqnos, new events, new meter,
#       new loop, active set, by-start zset, evse hash (= new tx when unknown), the station's active set
# ARGV: old id, ref
_MOVE = """
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('EXISTS', KEYS[6]) == 1 then return 0 end
local old_seqnos = redis.call('SMEMBERS', KEYS[2])
redis.call('RENAME', KEYS[1], KEYS[6])
for i = 3, 5 do
  if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('RENAME', KEYS[i], KEYS[i + 5]) end
end
redis.call('DEL', KEYS[2])
local seen = {}
for _, raw in ipairs(redis.call('LRANGE', KEYS[8], 0, -1)) do
  local ok, ev = pcall(cjson.decode, raw)
  if ok and type(ev) == 'table' and type(ev.seqNo) == 'number' and type(ev.eventType) == 'string' then
    redis.call('SADD', KEYS[7], string.format('%d', ev.seqNo) .. ':' .. ev.eventType)
    seen[string.format('%d', ev.seqNo)] = true
  end
end
local state = redis.call('HGET', KEYS[6], 'state')
local last = redis.call('HGET', KEYS[6], 'last_seq_no')
for _, seq in ipairs(old_seqnos) do  -- payloads without seqNo/eventType (OCPP 1.6 messages)
  if not seen[seq] then
    local kind = 'Updated'
    if seq == '0' then kind = 'Started' elseif state == 'Ended' and seq == last then kind = 'Ended' end
    redis.call('SADD', KEYS[7], seq .. ':' .. kind)
  end
end
redis.call('HSET', KEYS[6], 'tx_ref', ARGV[2], 'generation', '1')
if redis.call('SREM', KEYS[11], ARGV[1]) == 1 then
  redis.call('SADD', KEYS[11], ARGV[2])
  redis.call('SADD', KEYS[14], ARGV[2])
end
local score = redis.call('ZSCORE', KEYS[12], ARGV[1])
if score then
  redis.call('ZREM', KEYS[12], ARGV[1])
  redis.call('ZADD', KEYS[12], score, ARGV[2])
end
if KEYS[13] ~= KEYS[6] then
  if redis.call('HGET', KEYS[13], 'transaction_id') == ARGV[1] then
    redis.call('HSET', KEYS[13], 'tx_ref', ARGV[2])
  end
  if redis.call('HGET', KEYS[13], 'last_transaction_id') == ARGV[1] then
    redis.call('HSET', KEYS[13], 'last_tx_ref', ARGV[2])
  end
end
return 1
"""


def _is_ref(member: str) -> bool:
    try:
        parse_tx_ref(member)
    except ValueError:
        return False
    return True


async def _tag_records(redis: Redis, keys: Keys, station_id: str, evse_id: int, txid: str, ref: str) -> None:
    """Add `tx_ref` to the EVSE's per-session JSON records that belong to the moved transaction."""
    for key in (keys.charging_needs(station_id, evse_id), keys.applied_profile(station_id, evse_id),
                keys.planned_schedule(station_id, evse_id), keys.ev_schedule(station_id, evse_id)):
        raw = await redis.get(key)
        doc: Any = json.loads(raw) if raw else None
        if isinstance(doc, dict) and doc.get("transaction_id") == txid and not doc.get("tx_ref"):
            doc["tx_ref"] = ref
            await redis.set(key, json.dumps(doc, separators=(",", ":"), default=str), keepttl=True)


async def migrate_legacy_transactions(redis: Redis, keys: Keys) -> int:
    """Move every transaction still keyed by its transactionId alone to its ref; returns how many."""
    members = {as_str(m) for m in await redis.smembers(keys.transactions_active())}
    started: list[Any] = await redis.zrange(keys.transactions_by_start(), 0, -1)
    members |= {as_str(m) for m in started}
    legacy = sorted(m for m in members if m and not _is_ref(m))
    if not legacy:
        return 0
    move = redis.register_script(_MOVE)
    moved = 0
    for txid in legacy:
        record = as_str_dict(await redis.hgetall(keys.transaction(txid)))
        station_id = record.get("station_id", "")
        if not station_id:
            log.warning("transaction %r has no station: left under its old key", txid)
            continue
        ref = tx_ref(station_id, txid)
        evse_id = int(record["evse_id"]) if record.get("evse_id", "").isdigit() else None
        new_tx = keys.transaction(ref)
        evse_key = keys.station_evse(station_id, evse_id) if evse_id is not None else new_tx
        done = await move(keys=[
            keys.transaction(txid), keys.transaction_seqnos(txid), keys.transaction_events(txid),
            keys.transaction_meter(txid), keys.session_loop(txid),
            new_tx, keys.transaction_seqnos(ref), keys.transaction_events(ref), keys.transaction_meter(ref),
            keys.session_loop(ref), keys.transactions_active(), keys.transactions_by_start(), evse_key,
            keys.station_active(station_id)],
            args=[txid, ref])
        if not done:
            continue
        moved += 1
        if evse_id is not None:
            await _tag_records(redis, keys, station_id, evse_id, txid, ref)
    log.warning("moved %d transactions stored by an earlier version to per-station keys (tx:{station}:{id})",
                moved)
    return moved
