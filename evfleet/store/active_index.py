"""The per-station sets of active transaction refs (`Keys.station_active`): what a site's read takes
instead of the fleet's `tx:active`, and their check against it.

Invariant: **a station's set holds exactly the members of `tx:active` (its shard's, `Keys.active_for`)
that name the station** (`evfleet.keys.ref_station`). Every writer changes both in one Lua script,
in one slot (the station's hash tag: `csms.store.state` `_WRITE_TX` adds a started transaction and
removes an ended or superseded one; `csms.store.migrate` moves a legacy member), so no reader ever
sees one without the other. A site's read (`site_active_refs`) is then the union of its stations'
sets: every active session of the site, and only the site's, at the cost of the site, not the fleet.

A Redis written by a version before the sets has `tx:active` only, and a node of such a version
still running during an upgrade writes `tx:active` only. So `site_active_refs` runs
`check_active_index` on its first call for a client (and waits for it: the first read of such a
Redis builds the sets), then at most every `INDEX_CHECK_S`: one script per chunk of stations of one
slot compares their sets with `tx:active` atomically and adds each missing member (and drops each
member `tx:active` no longer has), logged as a warning. `tx:active` stays the fleet-wide index
(`evfleet.store.shards.active_refs`: API, metrics, demo).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from evfleet.keys import Keys, ref_station
from evfleet.store.now_and_then import Checks, new_checks, now_and_then
from evfleet.store.slots import slot_groups

log = logging.getLogger(__name__)

INDEX_CHECK_S = 60.0
"""How often (per Redis client and key layout) `site_active_refs` checks the sets against `tx:active`."""
UNION_CHUNK = 2000
"""Station sets per SUNION (one command, one reply; a site of 20,000 stations is ten)."""
CHECK_CHUNK = 500
"""Station sets per `_CHECK` script (each reads its shard's `tx:active` once)."""

# KEYS: the shard's tx:active, then the active sets of the stations ARGV[1..] (all in one slot)
# returns: {added, removed, station ids whose set changed}
_CHECK = """
local want = {}
for _, ref in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local sid = string.match(ref, '^[^:]*')
  local t = want[sid]
  if not t then t = {}; want[sid] = t end
  t[ref] = true
end
local added, removed, fixed = 0, 0, {}
for i = 2, #KEYS do
  local w, have, changed = want[ARGV[i - 1]] or {}, {}, false
  for _, ref in ipairs(redis.call('SMEMBERS', KEYS[i])) do
    have[ref] = true
    if not w[ref] then redis.call('SREM', KEYS[i], ref); removed = removed + 1; changed = true end
  end
  for ref in pairs(w) do
    if not have[ref] then redis.call('SADD', KEYS[i], ref); added = added + 1; changed = true end
  end
  if changed then fixed[#fixed + 1] = ARGV[i - 1] end
end
return {added, removed, fixed}
"""


def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def site_active_refs(redis: Any, keys: Keys, station_ids: Iterable[str]) -> list[str]:
    """Refs of the active transactions of `station_ids` (sorted): the union of their sets, one SUNION
    per slot and `UNION_CHUNK` stations, concurrent; after the check (module docstring)."""
    ids = sorted(set(station_ids))
    if not ids:
        return []
    await _check_now_and_then(redis, keys)
    set_keys = [keys.station_active(sid) for sid in ids]
    # one SUNION each, not a pipeline: a cluster client's pipeline refuses multi-key commands
    unions = [redis.sunion([set_keys[i] for i in group[lo:lo + UNION_CHUNK]])
              for group in slot_groups(redis, set_keys) for lo in range(0, len(group), UNION_CHUNK)]
    members = [await unions[0]] if len(unions) == 1 else await asyncio.gather(*unions)
    return sorted({_str(ref) for union in members for ref in union})


async def check_active_index(redis: Any, keys: Keys) -> dict[str, list[str]]:
    """Make every station's set equal to its members of `tx:active` (module docstring): each
    provisioned station and each station a `tx:active` member names, one atomic script per chunk of
    one slot. Logs what it changed; returns the stations whose set changed, by `tx:active` key."""
    pipe = redis.pipeline(transaction=False)
    pipe.smembers(keys.stations())
    for key in keys.shard_keys("transactions_active"):
        pipe.smembers(key)
    registry, *active = await pipe.execute()
    ids = {_str(m) for m in registry} | {ref_station(_str(ref)) for refs in active for ref in refs}
    by_shard: dict[str, list[str]] = {}
    for sid in sorted(ids):
        by_shard.setdefault(keys.active_for(sid), []).append(sid)
    script = redis.register_script(_CHECK)
    fixed: dict[str, list[str]] = {}
    added = removed = 0
    for active_key, sids in by_shard.items():
        for lo in range(0, len(sids), CHECK_CHUNK):
            part = sids[lo:lo + CHECK_CHUNK]
            n_added, n_removed, changed = await script(
                keys=[active_key, *(keys.station_active(sid) for sid in part)], args=part)
            added, removed = added + int(n_added), removed + int(n_removed)
            if changed:
                fixed.setdefault(active_key, []).extend(_str(sid) for sid in changed)
    if fixed:
        log.warning("active index: %d ref(s) added to and %d removed from the stations' active sets to match "
                    "tx:active (a writer of an earlier version, or data from before the sets): %s",
                    added, removed, {key: sids[:10] for key, sids in fixed.items()})
    return fixed


_checked: Checks = new_checks()


async def _check_now_and_then(redis: Any, keys: Keys) -> None:
    """`check_active_index` on the first call for a client, then at most every `INDEX_CHECK_S`; a call
    while a check runs waits for it (the first check of a Redis without the sets builds them)."""
    await now_and_then(_checked, redis, (keys.prefix, keys.shards), INDEX_CHECK_S,
                       lambda: check_active_index(redis, keys))
