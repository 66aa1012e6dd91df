"""Connecting to Redis. Every csms-side client uses `decode_responses=True` (str in, str out).

Public names: `connect_redis`, `dedicated_client`, `as_str`, `as_str_dict`, `hmap`,
`store_unavailable`, `StoreUnavailable`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from redis import exceptions as rx
from redis.asyncio import BlockingConnectionPool, Redis, RedisCluster

MAX_CONNECTIONS = 1024
"""Connections one client opens at most; more concurrent commands queue for a free one."""
POOL_TIMEOUT_S = 20.0
"""How long a command waits for a free connection before `ConnectionError("No connection available.")`."""


CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")
"""URL schemes of a Redis Cluster (any one node as the start-up node); the keys must then use the
sharded layout (`evfleet.keys.Keys(shards=N)`, setting `redis_shards`)."""


def is_cluster_url(url: str | None) -> bool:
    """Whether `url` names a Redis Cluster (`CLUSTER_SCHEMES`)."""
    return bool(url) and str(url).startswith(CLUSTER_SCHEMES)


def connect_cluster(url: str, *, max_connections: int = MAX_CONNECTIONS, **kwargs: object) -> Redis:
    """An asyncio `RedisCluster` client for a ``redis+cluster://host:port`` URL, typed as `Redis`:
    it takes the same commands, and refuses (CROSSSLOT) a MULTI, script or multi-key command whose
    keys are in several slots, which the sharded key layout avoids. `max_connections` is per node.
    """
    plain = url.replace("+cluster", "", 1)
    kwargs.pop("health_check_interval", None)
    client = RedisCluster.from_url(plain, decode_responses=True, max_connections=max_connections,
                                   **kwargs)
    return cast(Redis, client)


def is_cluster(redis: Any) -> bool:
    """Whether `redis` is a Redis Cluster client."""
    return isinstance(redis, RedisCluster)


def connect_redis(url: str, *, max_connections: int = MAX_CONNECTIONS,
                  pool_timeout_s: float | None = POOL_TIMEOUT_S, **kwargs: object) -> Redis:
    """An asyncio Redis client for `url` that returns `str` values (a cluster client for a
    ``redis+cluster://`` URL, `connect_cluster`).

    Its pool is a `BlockingConnectionPool`: when thousands of station handlers await Redis at
    once (mass connect/disconnect), the excess waits up to `pool_timeout_s` for a connection
    instead of failing with MaxConnectionsError as a plain pool does at its cap (None: wait as
    long as it takes, for clients whose callers bound the wait themselves). Closing the
    client (`aclose()`) closes the pool. The hiredis parser is used when installed.
    """
    if is_cluster_url(url):
        return connect_cluster(url, max_connections=max_connections, **kwargs)
    pool = BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=pool_timeout_s,
                                           decode_responses=True, health_check_interval=30,
                                           **kwargs)
    return Redis.from_pool(pool)


def own_connection(redis: Redis, max_connections: int = 2) -> Redis:
    """A client on the same server and settings as `redis` with a pool of its own (at most
    `max_connections`), for a few commands that must not queue behind the shared pool's thousands
    (a node's smart-charging liveness: in a mass connect or disconnect its refresh waited 4.6-10.9 s
    for the shared pool and the node lost its sites, issue 14). A cluster client is returned as it
    is (its pools are per node). Close it with `aclose()`."""
    if isinstance(redis, RedisCluster):
        return redis
    pool = redis.connection_pool
    own = BlockingConnectionPool(connection_class=pool.connection_class, max_connections=max_connections,
                                 timeout=POOL_TIMEOUT_S, **pool.connection_kwargs)
    return Redis.from_pool(own)


class StoreUnavailable(Exception):
    """Redis cannot take writes now (down, restarting, loading, read-only, out of memory or
    disk): the caller must not answer as if the write happened."""


_UNAVAILABLE = (rx.ConnectionError, rx.TimeoutError, rx.BusyLoadingError, rx.ReadOnlyError,
                rx.OutOfMemoryError, rx.ExecAbortError, rx.MasterDownError, rx.TryAgainError,
                rx.ClusterDownError)
_UNAVAILABLE_REPLIES = ("MISCONF", "OOM", "LOADING", "READONLY", "NOREPLICAS", "MASTERDOWN", "TRYAGAIN",
                        "CLUSTERDOWN", "EXECABORT")


def store_unavailable(err: BaseException) -> bool:
    """Whether `err` (or what it was raised from) says Redis cannot store now, as opposed to a bug
    or a bad command: the condition a TransactionEvent must stay unanswered in."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, (StoreUnavailable, *_UNAVAILABLE)):
            return True
        if isinstance(current, rx.ResponseError) and _unavailable_reply(str(current)):
            return True
        current = current.__cause__ or current.__context__
    return False


def _unavailable_reply(text: str) -> bool:
    """The reply says Redis cannot write now: `OOM ...` as a command's reply, or wrapped inside a
    script's error (`Error running script ...: -OOM command not allowed ...`) when the refused
    write is the script's first write rather than the call itself."""
    return text.startswith(_UNAVAILABLE_REPLIES) or any(f"-{reply} " in text
                                                         for reply in _UNAVAILABLE_REPLIES)


_CLUSTER_OPTIONS = ("username", "password", "socket_timeout", "socket_connect_timeout", "socket_keepalive",
                    "decode_responses", "client_name", "encoding", "encoding_errors")


def dedicated_client(redis: Redis, max_connections: int, **overrides: object) -> Redis:
    """A client to the same server and options as `redis` (connection options replaced by
    `overrides`, e.g. `client_name`) with its own blocking pool and no pool timeout.

    For a path whose concurrency its owner bounds (the handshake gate's one worker, command
    replies): its commands never wait behind thousands of station handlers for a connection of
    the shared pool.
    """
    if is_cluster(redis):
        cluster = cast(Any, redis)
        node = cluster.get_default_node()
        shared_kwargs = cluster.connection_kwargs
        opts: dict[str, Any] = {k: v for k, v in shared_kwargs.items()
                                if k in _CLUSTER_OPTIONS or k.startswith("ssl_")}
        if "SSL" in getattr(shared_kwargs.get("connection_class"), "__name__", ""):
            opts["ssl"] = True
        opts.update(overrides)
        return cast(Redis, RedisCluster(host=node.host, port=node.port, max_connections=max_connections,
                                        **opts))
    shared = redis.connection_pool
    kwargs = {**shared.connection_kwargs, **overrides}
    pool = BlockingConnectionPool(connection_class=shared.connection_class, max_connections=max_connections,
                                  timeout=None, **kwargs)
    return Redis.from_pool(pool)


def as_str(value: str | bytes | None) -> str:
    """A Redis reply value as str ("" for None); our clients already decode, this helps typing."""
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


def as_str_dict(value: Mapping[Any, Any]) -> dict[str, str]:
    """A Redis hash reply as dict[str, str]."""
    return {as_str(k): as_str(v) for k, v in value.items()}


def hmap(mapping: Mapping[str, str]) -> Mapping[Any, Any]:
    """A str mapping typed for redis-py's HSET `mapping=` (its key type is invariant)."""
    return mapping
