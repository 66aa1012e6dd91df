"""Store writes only OCPP 1.6J needs: the CSMS-assigned integer transactionId.

Public names: `assign_transaction_id`, `set_ocpp_version`, `START_DEDUP_TTL_S`.

`assign_transaction_id` is one Lua script: if this StartTransaction (same digest, see
`csms.protocol.v16.mapping.start_digest`) was seen, its id again; else INCR of the
station's counter `station:{sid}:tx-counter` (never reset, also kept when the station is
removed, so an id is never reused) and the digest remembered for `START_DEDUP_TTL_S`.
"""

from __future__ import annotations

from redis.asyncio import Redis

from csms.protocol.versions import PIN_FIELD, PIN_VALUES
from csms.store.provisioning import ProvisioningError
from evfleet.keys import Keys

START_DEDUP_TTL_S = 30 * 24 * 3600
"""How long a resent StartTransaction still gets its first id (a station's offline queue)."""

_ASSIGN = """
local got = redis.call('GET', KEYS[2])
if got then return {tonumber(got), 0} end
local id = redis.call('INCR', KEYS[1])
redis.call('SET', KEYS[2], id, 'EX', ARGV[1])
return {id, 1}
"""


async def assign_transaction_id(redis: Redis, keys: Keys, station_id: str, digest: str) -> tuple[int, bool]:
    """(transactionId, new) for a StartTransaction of `station_id` with `digest`."""
    script = redis.register_script(_ASSIGN)
    txid, new = await script(keys=[keys.station_tx_counter(station_id),
                                   keys.station_tx_start(station_id, digest)],
                             args=[str(START_DEDUP_TTL_S)])
    return int(txid), bool(int(new))


async def set_ocpp_version(redis: Redis, keys: Keys, station_id: str, version: str) -> None:
    """Pin a station to OCPP `1.6` or `2.0.1` at the handshake (`auto`: the station chooses)."""
    if version not in PIN_VALUES:
        raise ProvisioningError(f"OCPP version must be one of {', '.join(PIN_VALUES)}, got {version!r}")
    if not await redis.sismember(keys.stations(), station_id):
        raise ProvisioningError(f"unknown station {station_id!r}")
    await redis.hset(keys.station(station_id), PIN_FIELD, version)
