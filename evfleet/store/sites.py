"""Sites read from the shared Redis state (one reader for every package): which stations belong to a
site, and the site limit in force.

The limit of a site without one of its own is the deployment's `default_site_limit_kw`. It is set
in one place, the csms configuration: every csms node publishes it at start-up in
`Keys.site_defaults()` (`publish_default_limit`), and the csms budget, the optimizer and the API all
read the limit in force through `site_limit`, so they cannot disagree. `DEFAULT_SITE_LIMIT_KW` is
the configuration's default, and what a reader uses while no csms has published one.

The site margin (`site_margin_kw`, docs/smart-charging.md "Site margin") is published the same way,
beside the default limit: the csms and the optimizer hand out at most `budget_kw(limit, margin)`
= limit - margin, so the margin stays unallocated and absorbs a draw nobody allowed (a station
that ignores its limits) until the csms has found it and lowered the others.

`pipelined` sends reads that grow with the fleet in round trips of `PIPELINE_CHUNK` commands, so
an event loop stays responsive while they run; `hash_fields` reads a few fields of many hashes with
one script per chunk of `HASH_FIELDS_CHUNK` keys (one reply each, not one per hash).
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from evfleet.store.now_and_then import Checks, new_checks, now_and_then
from evfleet.store.slots import slot_groups

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from evfleet.keys import Keys

log = logging.getLogger(__name__)

DEFAULT_SITE_LIMIT_KW = 100.0
"""`default_site_limit_kw` when not configured, and the default while none is published."""


class SiteLimit(NamedTuple):
    """The limit in force at a site."""

    limit_kw: float
    own: bool
    """True: the site's own `limit_kw`; False: the deployment default (`default_kw`)."""
    default_kw: float
    """The deployment default that applies to sites without a limit of their own."""


def positive_kw(value: Any) -> float | None:
    """A stored limit as a positive finite float, None when missing or not one."""
    try:
        kw = float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None
    return kw if kw is not None and math.isfinite(kw) and kw > 0 else None


def own_limit_kw(value: Any) -> float | None:
    """A site's own stored `limit_kw` (finite, >= 0: a limit of 0 holds every EVSE), None when unset."""
    try:
        kw = float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None
    return kw if kw is not None and math.isfinite(kw) and kw >= 0 else None


def limit_in_force(own: Any, published: Any, fallback_kw: float = DEFAULT_SITE_LIMIT_KW) -> SiteLimit:
    """The site's own limit, else the published default, else `fallback_kw` (pure)."""
    default_kw = positive_kw(published) or fallback_kw
    own_kw = own_limit_kw(own)
    if own_kw is None:
        return SiteLimit(default_kw, False, default_kw)
    return SiteLimit(own_kw, True, default_kw)


def margin_kw(value: Any) -> float:
    """A published `site_margin_kw` as a finite float >= 0 (0 when missing or not one)."""
    try:
        kw = float(value) if value not in (None, "") else 0.0
    except (TypeError, ValueError):
        return 0.0
    return kw if math.isfinite(kw) and kw > 0 else 0.0


def budget_kw(limit_kw: float, margin: float) -> float:
    """What may be handed out at a site: the limit in force minus the margin, never negative (pure)."""
    return max(0.0, limit_kw - max(0.0, margin))


async def published_margin_kw(redis: Redis, keys: Keys) -> float:
    """The `site_margin_kw` a csms node published (0 if none did)."""
    return margin_kw(await redis.hget(keys.site_defaults(), "site_margin_kw"))


async def published_default_limit(redis: Redis, keys: Keys) -> float | None:
    """The `default_site_limit_kw` a csms node published (None if none did)."""
    return positive_kw(await redis.hget(keys.site_defaults(), "site_limit_kw"))


async def site_limit(redis: Redis, keys: Keys, site_id: str,
                     fallback_kw: float = DEFAULT_SITE_LIMIT_KW) -> SiteLimit:
    """The limit in force at `site_id` (one round trip)."""
    pipe = redis.pipeline(transaction=False)
    pipe.hget(keys.site(site_id), "limit_kw")
    pipe.hget(keys.site_defaults(), "site_limit_kw")
    own, published = await pipe.execute()
    return limit_in_force(own, published, fallback_kw)


async def publish_default_limit(redis: Redis, keys: Keys, limit_kw: float, node: str,
                                updated_at: str) -> float | None:
    """Publish a csms node's `default_site_limit_kw`; returns the value published before (None: none)."""
    if positive_kw(limit_kw) is None:
        raise ValueError(f"default site limit must be > 0 kW (finite), got {limit_kw}")
    pipe = redis.pipeline(transaction=True)
    pipe.hget(keys.site_defaults(), "site_limit_kw")
    pipe.hset(keys.site_defaults(), mapping={"site_limit_kw": repr(float(limit_kw)), "node": node,
                                             "updated_at": updated_at})
    before, _ = await pipe.execute()
    return positive_kw(before)


PIPELINE_CHUNK = 150
"""Commands per round trip in reads that grow with the fleet (`pipelined`): packing a chunk and
parsing its reply is one event-loop callback, 3-5 ms here at 150 commands (13-15 ms at 600, a
stall each that a node answering 800 msg/s turns into a tail: issue 14)."""

HASH_FIELDS_CHUNK = 500
"""Hashes per script of `hash_fields`: its reply parsed and the caller's sum of it are one event-loop
callback, about 4 ms here at 500 keys and two fields (15 ms at 2,000)."""

T = TypeVar("T")


async def pipelined(redis: Redis, items: Sequence[T], add: Callable[[Any, T], object],
                    chunk: int = PIPELINE_CHUNK) -> list[Any]:
    """The replies of the commands `add(pipe, item)` queues for each item, in order, sent as
    non-transactional pipelines of about `chunk` commands.

    One pipeline of 60,000 commands is packed, and its reply parsed, in one event-loop callback
    (a stall of every station message meanwhile); in chunks, the loop serves other callbacks
    while Redis answers each round trip. Like one big non-transactional pipeline, the reads are
    not one snapshot.
    """
    replies: list[Any] = []
    pipe = redis.pipeline(transaction=False)
    for item in items:
        add(pipe, item)
        if len(pipe) >= chunk:
            replies += await pipe.execute()
            pipe = redis.pipeline(transaction=False)
    if len(pipe):
        replies += await pipe.execute()
    return replies


async def site_station_ids(redis: Redis, keys: Keys, site_id: str,
                           default_site: str = "default") -> list[str]:
    """Stations of a site: the members of its index (`Keys.site_stations`) whose hash names the site
    (an empty `site_id` names `default_site`); a stale member (moved away, removed) is left out.

    Reads the site's own stations only, not the fleet's. Every writer keeps the index
    (`evfleet.store.site_index`); at most every `INDEX_CHECK_S` per client, the first call checks it
    against a scan of the fleet and adds what is missing (`check_site_index`), so a station written
    by something that bypassed the index is counted within that bound, and logged.
    """
    return [sid for sid, _online in await site_stations_online(redis, keys, site_id, default_site)]


async def site_stations_online(redis: Redis, keys: Keys, site_id: str,
                               default_site: str = "default") -> list[tuple[str, str | None]]:
    """`site_station_ids`, each with its station hash's `online` field (None when unset), read in
    the same script call that checks the member's `site_id` (a whole-site pass reads both)."""
    await _check_now_and_then(redis, keys, default_site)
    members = sorted({str(m) for m in await redis.smembers(keys.site_stations(site_id))})
    sites = await _station_fields(redis, keys, members, _SITE_IDS_ONLINE)
    return [(sid, None if got[1] is None else str(got[1])) for sid, got in zip(members, sites, strict=True)
            if got is not None and (str(got[0] or "") or default_site) == site_id]


async def station_sites(redis: Redis, keys: Keys, station_ids: Sequence[str]) -> list[str | None]:
    """The `site_id` of each station ('' when unset, None when its hash does not exist), read by
    one script per chunk of keys of one slot."""
    return [None if site is None else str(site)
            for site in await _station_fields(redis, keys, station_ids, _SITE_IDS)]


async def _station_fields(redis: Redis, keys: Keys, station_ids: Sequence[str], text: str) -> list[Any]:
    """Each station's reply to the script `text` (one per chunk of keys of one slot)."""
    out: list[Any] = [None] * len(station_ids)
    if not station_ids:
        return out
    script = redis.register_script(text)
    station_keys = [keys.station(sid).encode() for sid in station_ids]
    for group in slot_groups(redis, station_keys):  # one script per slot
        for lo in range(0, len(group), _CHUNK):  # one reply per chunk, not one per station
            part = group[lo:lo + _CHUNK]
            replies = await script(keys=[station_keys[i] for i in part])
            for i, reply in zip(part, replies, strict=True):
                out[i] = reply
    return out


async def hash_fields(redis: Redis, hash_keys: Sequence[str], fields: Sequence[str],
                      chunk: int = HASH_FIELDS_CHUNK) -> AsyncIterator[tuple[list[int], list[Any]]]:
    """The `fields` of each hash of `hash_keys`, one script per `chunk` keys of one slot:
    per chunk, the indexes of its keys and their values, flat (`len(fields)` per key, None when unset
    or the hash does not exist).

    Yielded chunk by chunk so a caller sums as it goes and keeps no row per hash: a whole-fleet read
    (20,000 sessions' power for the site-power history and /metrics) as 20,000 pipelined HMGETs cost
    a node about 4 ms of packing and parsing per 150 commands and one long callback building 20,000
    rows (issue 14); one reply of `chunk` x `len(fields)` strings per chunk is parsed by hiredis."""
    if not hash_keys:
        return
    script = redis.register_script(_HASH_FIELDS)
    for group in slot_groups(redis, hash_keys):  # one script per slot
        for lo in range(0, len(group), chunk):
            part = group[lo:lo + chunk]
            yield part, await script(keys=[hash_keys[i] for i in part], args=list(fields))


async def check_site_index(redis: Redis, keys: Keys, default_site: str = "default") -> dict[str, list[str]]:
    """Compare every site's index with a scan of the provisioned stations' hashes and add each
    station missing from the index of the site its hash names (logged as a warning). Rebuilds the
    index of a Redis written before it existed. Stale members are left: readers skip them, and
    removing one could race a site change. Returns the stations added, by site."""
    all_ids = sorted(str(m) for m in await redis.smembers(keys.stations()))
    want: dict[str, set[str]] = {}
    for sid, site in zip(all_ids, await station_sites(redis, keys, all_ids), strict=True):
        if site is not None:
            want.setdefault(site or default_site, set()).add(sid)
    site_ids = sorted(want)
    indexed = await pipelined(redis, site_ids, lambda p, site: p.smembers(keys.site_stations(site)))
    added: dict[str, list[str]] = {}
    for site, members in zip(site_ids, indexed, strict=True):
        missing = sorted(want[site] - {str(m) for m in members})
        if missing:
            await redis.sadd(keys.site_stations(site), *missing)
            added[site] = missing
    if added:
        log.warning("site index: added %d station(s) missing from their site's index (a writer that "
                    "bypassed it, or data from before it): %s", sum(map(len, added.values())),
                    {site: sids[:10] for site, sids in added.items()})
    return added


INDEX_CHECK_S = 60.0
"""How often (per Redis client, key prefix and default site) `site_station_ids` checks the indexes."""
_checked: Checks = new_checks()


async def _check_now_and_then(redis: Redis, keys: Keys, default_site: str) -> None:
    """`check_site_index` on the first call for a client, then at most every `INDEX_CHECK_S`; a call
    while a check runs waits for it (the first check of a Redis without the index builds it)."""
    await now_and_then(_checked, redis, (keys.prefix, keys.shards, default_site), INDEX_CHECK_S,
                       lambda: check_site_index(redis, keys, default_site))


_CHUNK = 2000
_SITE_IDS = """
local out = {}
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    out[i] = redis.call('HGET', KEYS[i], 'site_id') or ''
  else
    out[i] = false
  end
end
return out
"""
_HASH_FIELDS = """
local out, n = {}, #ARGV
for i = 1, #KEYS do
  local got = redis.call('HMGET', KEYS[i], unpack(ARGV))
  for j = 1, n do out[(i - 1) * n + j] = got[j] end
end
return out
"""
_SITE_IDS_ONLINE = """
local out = {}
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    out[i] = redis.call('HMGET', KEYS[i], 'site_id', 'online')
  else
    out[i] = false
  end
end
return out
"""
