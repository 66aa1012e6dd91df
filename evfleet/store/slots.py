"""Grouping keys by Redis Cluster hash slot, without importing redis (`evfleet.store.sites` is read by
pure modules): a cluster client is recognised by its `keyslot` method."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def slot_groups(redis: Any, keys: Sequence[str | bytes]) -> list[list[int]]:
    """Indexes of `keys` grouped by hash slot on a Redis Cluster client, for one script or multi-key
    command per slot (one group of all of them on a single server)."""
    keyslot = getattr(redis, "keyslot", None)
    if keyslot is None:
        return [list(range(len(keys)))] if keys else []
    groups: dict[int, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(int(keyslot(key)), []).append(i)
    return list(groups.values())
