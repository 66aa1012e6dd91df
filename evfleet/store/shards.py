"""Reads of the per-shard indexes (`tx:active`, `tx:by-start`) of the Redis Cluster layout
(`evfleet.keys`): one command per shard in one pipeline, merged. Unsharded there is one shard,
so each is the one command it always was.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from evfleet.keys import Keys, ref_station
from evfleet.store.active_index import site_active_refs


def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def active_refs(redis: Any, keys: Keys) -> list[str]:
    """Refs of every transaction not yet Ended (members of every shard's `tx:active`)."""
    pipe = redis.pipeline(transaction=False)
    for key in keys.shard_keys("transactions_active"):
        pipe.smembers(key)
    return [_str(m) for members in await pipe.execute() for m in members]


async def active_refs_of(redis: Any, keys: Keys, station_ids: Iterable[str]) -> list[str]:
    """Refs of the transactions not yet Ended of `station_ids` only: the union of their stations'
    active sets (`evfleet.store.active_index.site_active_refs`), not the fleet's `tx:active`. A
    site's read needs its own sessions, not the fleet's."""
    return await site_active_refs(redis, keys, station_ids)


async def is_active(redis: Any, keys: Keys, ref: str) -> bool:
    """Whether the transaction `ref` is in its shard's `tx:active`."""
    return bool(await redis.sismember(keys.active_for(ref_station(ref)), ref))


async def refs_by_start(redis: Any, keys: Keys, low: float | str = "-inf", high: float | str = "+inf",
                        ) -> list[tuple[str, float]]:
    """(ref, start POSIX time) of every transaction started in [low, high], oldest first."""
    pipe = redis.pipeline(transaction=False)
    for key in keys.shard_keys("transactions_by_start"):
        pipe.zrangebyscore(key, low, high, withscores=True)
    merged = [(_str(m), float(score)) for rows in await pipe.execute() for m, score in rows]
    return sorted(merged, key=lambda item: (item[1], item[0]))
