"""Which key layout a deployment uses (`evfleet.keys.Keys`): unsharded names on one Redis server,
or the sharded Redis Cluster layout with N shards.

The layout is data, not only configuration: the first process that starts with the sharded
layout records `shards` in the untagged hash ``{prefix}:layout``, and every process then reads it
there, so a csms node and an optimizer worker can never disagree on where a key lives. A node
configured with another shard count refuses to start (`LayoutMismatch`); changing the layout of a
deployment that has data is `evfleet redis migrate-keys` (`csms.store.reshard`).
"""

from __future__ import annotations

from typing import Any

from evfleet.keys import Keys
from evfleet.store.client import is_cluster

DEFAULT_CLUSTER_SHARDS = 16
"""Shards of a Redis Cluster deployment whose settings name none: 16 per-shard streams spread
over the masters (each shard is one hash slot)."""


class LayoutMismatch(Exception):
    """The configured shard count differs from the one recorded in Redis."""


def layout_key(prefix: str) -> str:
    """HASH {shards}: the deployment's key layout (absent: unsharded)."""
    return f"{prefix}:layout"


async def recorded_shards(redis: Any, prefix: str) -> int | None:
    """The shard count recorded in Redis (None: nothing recorded, i.e. the unsharded layout or a
    new deployment)."""
    raw = await redis.hget(layout_key(prefix), "shards")
    return int(raw) if raw not in (None, "") else None


async def resolve_keys(redis: Any, prefix: str, shards: int | None = None, *, record: bool = True) -> Keys:
    """The `Keys` of this deployment.

    `shards`: the configured count (None: not configured). The recorded count wins when nothing is
    configured; a configured count that differs from the recorded one raises `LayoutMismatch`.
    With nothing recorded: the configured count, else `DEFAULT_CLUSTER_SHARDS` on a cluster client
    and 0 (unsharded) on a single server. A sharded layout is recorded (`record`), first writer wins.
    """
    recorded = await recorded_shards(redis, prefix)
    if recorded is not None:
        if shards is not None and shards != recorded:
            raise LayoutMismatch(
                f"Redis holds the key layout with {recorded} shards but redis_shards is {shards}; "
                f"run `evfleet redis migrate-keys --shards {shards}` or drop the setting")
        return Keys(prefix, recorded)
    chosen = shards if shards is not None else (DEFAULT_CLUSTER_SHARDS if is_cluster(redis) else 0)
    if is_cluster(redis) and chosen < 1:
        raise LayoutMismatch("a Redis Cluster needs the sharded key layout: redis_shards >= 1")
    if chosen > 0 and record:
        legacy = Keys(prefix)
        if await redis.exists(legacy.stations()) or await redis.exists(legacy.events()):
            raise LayoutMismatch(
                f"Redis holds unsharded keys under {prefix!r}; run `evfleet redis migrate-keys "
                f"--shards {chosen}` first (docs/redis-schema.md, \"Redis Cluster\")")
        await redis.hsetnx(layout_key(prefix), "shards", str(chosen))
        return await resolve_keys(redis, prefix, shards, record=False)
    return Keys(prefix, chosen)
