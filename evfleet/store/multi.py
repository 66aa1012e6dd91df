"""MULTI/EXEC per hash slot: `SlotMulti`.

On one Redis server every command queued goes into one MULTI, as a plain transactional pipeline
would. On a Redis Cluster a MULTI may touch one slot only, so the commands are grouped by their
key's slot and each group is one MULTI, executed in the order the groups were first used. Each
group is all-or-nothing; the groups together are not. Writers queue the part that must be whole
(an entity and its event, which the sharded key layout puts in one slot) in one group and
registry updates (sets of ids, in the `{g}` slot) after it, so a crash in between leaves an
entity that re-running the same idempotent write registers.
"""

from __future__ import annotations

from typing import Any

from redis.crc import key_slot

from evfleet.store.client import is_cluster


class SlotMulti:
    """Transactional pipelines, one per hash slot on a cluster (one in all on a single server)."""

    def __init__(self, redis: Any) -> None:
        self._redis = redis
        self._cluster = is_cluster(redis)
        self._phases: list[dict[int, Any]] = [{}]

    @property
    def cluster(self) -> bool:
        """Whether the client is a Redis Cluster client."""
        return self._cluster

    def on(self, key: str) -> Any:
        """The pipeline to queue a command on `key` (and on keys of the same slot) in."""
        slot = key_slot(key.encode()) if self._cluster else 0
        pipes = self._phases[-1] if self._cluster else self._phases[0]
        pipe = pipes.get(slot)
        if pipe is None:
            pipe = pipes[slot] = self._redis.pipeline(transaction=True)
        return pipe

    def grouped(self, keys: list[str]) -> list[tuple[Any, list[str]]]:
        """(pipeline, its keys) for `keys` split by slot, for a multi-key command per slot (DEL, MSET):
        one group of all `keys` on a single server."""
        groups: dict[int, tuple[Any, list[str]]] = {}
        for key in keys:
            pipe = self.on(key)
            groups.setdefault(id(pipe), (pipe, []))[1].append(key)
        return list(groups.values())

    def then(self) -> None:
        """On a cluster, what is queued from now on is executed after everything queued before (e.g.
        an event after the records it announces); on a single server it is all one MULTI anyway."""
        if self._cluster and self._phases[-1]:
            self._phases.append({})

    async def execute(self) -> list[list[Any]]:
        """EXEC each group in order; the replies of each group."""
        return [await pipe.execute() for pipes in self._phases for pipe in pipes.values()]
