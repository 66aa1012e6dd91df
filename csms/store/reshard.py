"""`evfleet redis migrate-keys`: move a deployment's data from the unsharded key names to the Redis
Cluster layout (`evfleet.keys`, docs/redis-schema.md "Redis Cluster").

Public names: `sharded_name`, `migrate_keys`, `MigrationRefused`, `MigrationReport`.

Run it with every csms node and optimizer worker stopped (it refuses while a node heartbeat is
live). It reads the unsharded keys of the source Redis and writes the sharded layout either in
place (same server: RENAME) or into another Redis, typically the new cluster (`--to`: DUMP and
RESTORE, TTLs kept; the source is left as it was). Keys of one station, transaction or site get
their shard's hash tag; the registries get `{g}`; the event stream and `tx:active` /
`tx:by-start` are split by shard (stream entries keep their ids and order within each shard,
and the optimizer's consumer group is created on each shard stream at the group's old
position). Deployment-wide keys (nodes, leases, clock, site defaults, driver history) keep their
names. Last, the layout hash records the shard count, so nodes start with it. It is idempotent:
a key already moved is not found under its old name again. Transactions stored before refs
(`csms.store.migrate`) are first moved to their refs in the source, as a node start would.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from csms.store.migrate import migrate_legacy_transactions
from evfleet.keys import Keys
from evfleet.store.layout import layout_key, recorded_shards

log = logging.getLogger(__name__)

_STATION_KINDS = ("needs", "ev-schedule", "schedule", "profile")
_REGISTRIES = ("stations", "sites", "idtokens", "api-tokens")
_REGISTRY_ITEMS = ("idtoken", "api-token")
_SPLIT = ("events", "tx:active", "tx:by-start")
GROUP = "optimizer"  # the optimizer worker's consumer group (optimizer.worker.GROUP)


class MigrationRefused(Exception):
    """The migration cannot run now (a node is live, or the target holds another layout)."""


@dataclass
class MigrationReport:
    """What `migrate_keys` moved."""

    shards: int
    renamed: int = 0
    events: int = 0
    active: int = 0
    by_start: int = 0
    kept: int = 0
    skipped: list[str] = field(default_factory=list)


def sharded_name(key: str, new: Keys) -> str | None:
    """The name of the unsharded `key` in the layout of `new` (None: it keeps its name).

    The per-shard keys (`events`, `tx:active`, `tx:by-start`) are split, not renamed: None too.
    """
    p = new.prefix + ":"
    if not key.startswith(p):
        return None
    rest = key[len(p):]
    if rest in _REGISTRIES or rest in _SPLIT:
        return None if rest in _SPLIT else f"{new.prefix}:{{g}}:{rest}"
    kind, _, tail = rest.partition(":")
    if not tail:
        return None
    if kind in _REGISTRY_ITEMS:
        return f"{new.prefix}:{{g}}:{rest}"
    owner = tail.split(":", 1)[0]
    if kind in ("station", "tx", *_STATION_KINDS):
        return f"{new.shard_prefix(new.shard_of_station(owner))}:{rest}"
    if kind == "site":
        return f"{new.shard_prefix(new.shard_of_site(owner))}:{rest}"
    return None


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def migrate_keys(source: Any, target: Any, prefix: str, shards: int, *, force: bool = False,
                       ) -> MigrationReport:
    """Move the unsharded keys under `prefix` in `source` to the layout with `shards` shards in
    `target` (the same client: in place). See the module docstring."""
    if shards < 1:
        raise MigrationRefused("--shards must be at least 1")
    new, old = Keys(prefix, shards), Keys(prefix)
    live = [k async for k in source.scan_iter(match=f"{prefix}:node:*", count=1000)
            if not _s(k).endswith(":commands")]
    if live and not force:
        raise MigrationRefused(f"{len(live)} csms node(s) are live ({_s(live[0])}): stop every node and "
                               "worker first")
    recorded = await recorded_shards(target, prefix)
    if recorded not in (None, shards):
        raise MigrationRefused(f"the target already holds the layout with {recorded} shards")
    in_place = source is target
    await migrate_legacy_transactions(source, old)  # pre-ref transactions first, as a node start does
    report = MigrationReport(shards)
    async for raw in source.scan_iter(match=f"{prefix}:*", count=1000):
        key = _s(raw)
        name = sharded_name(key, new)
        if name is None:
            if not in_place and key[len(prefix) + 1:] not in _SPLIT and key != layout_key(prefix):
                await _copy(source, target, key, key)
                report.kept += 1
            continue
        if in_place:
            await source.rename(key, name)
        else:
            await _copy(source, target, key, name)
        report.renamed += 1
    report.active = await _split_set(source, target, old.transactions_active(), new, in_place)
    report.by_start = await _split_zset(source, target, old.transactions_by_start(), new, in_place)
    report.events = await _split_stream(source, target, old.events(), new, in_place)
    await target.hset(layout_key(prefix), "shards", str(shards))
    log.info("migrated %s to %d shards: %s", prefix, shards, report)
    return report


async def _copy(source: Any, target: Any, key: str, name: str) -> None:
    dumped = await source.dump(key)
    if dumped is None:
        return
    ttl = await source.pttl(key)
    await target.restore(name, max(int(ttl), 0), dumped, replace=True)


async def _split_set(source: Any, target: Any, key: str, new: Keys, in_place: bool) -> int:
    members = [_s(m) for m in await source.smembers(key)]
    for ref in members:
        await target.sadd(new.active_for(ref.split(":", 1)[0]), ref)
    if in_place and members:
        await source.delete(key)
    return len(members)


async def _split_zset(source: Any, target: Any, key: str, new: Keys, in_place: bool) -> int:
    rows = await source.zrange(key, 0, -1, withscores=True)
    for ref, score in rows:
        await target.zadd(new.by_start_for(_s(ref).split(":", 1)[0]), {_s(ref): float(score)})
    if in_place and rows:
        await source.delete(key)
    return len(rows)


async def _split_stream(source: Any, target: Any, key: str, new: Keys, in_place: bool) -> int:
    """Each entry to its shard's stream (same id), then the consumer group at its old position."""
    if not await source.exists(key):
        return 0
    groups = {_s(g["name"]): _s(g["last-delivered-id"]) for g in await source.xinfo_groups(key)}
    moved, after = 0, "-"
    while True:
        batch = await source.xrange(key, min=after, max="+", count=1000)
        for entry_id, fields in batch:
            shard = new.shard_of_event(_s(fields.get("station_id", "")), _s(fields.get("site_id", "")))
            await target.xadd(new.events(shard), fields, id=_s(entry_id))
            moved += 1
        if len(batch) < 1000:
            break
        after = "(" + _s(batch[-1][0])
    for name, last in groups.items():
        for stream in new.event_streams():
            try:
                await target.xgroup_create(stream, name, id=last, mkstream=True)
            except Exception as err:  # BUSYGROUP: a re-run
                if "BUSYGROUP" not in str(err):
                    raise
    if in_place:
        await source.delete(key)
    return moved
