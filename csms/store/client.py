"""Moved to `evfleet.store.client`; re-exported here so old imports keep working until they switch."""

from evfleet.store.client import (  # noqa: F401
    MAX_CONNECTIONS,
    POOL_TIMEOUT_S,
    StoreUnavailable,
    as_str,
    as_str_dict,
    connect_redis,
    dedicated_client,
    hmap,
    store_unavailable,
)
