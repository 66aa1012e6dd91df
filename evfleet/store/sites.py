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
an event loop stays responsive while they run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from evfleet.store.slots import slot_groups

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from evfleet.keys import Keys

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
    """Stations of a site: its station set, plus provisioned stations whose hash names the site."""
    members = {str(m) for m in await redis.smembers(keys.site_stations(site_id))}
    all_ids = sorted(str(m) for m in await redis.smembers(keys.stations()))
    script = redis.register_script(_SITE_IDS)
    for group in slot_groups(redis, [keys.station(sid) for sid in all_ids]):  # one script per slot
        ids = [all_ids[i] for i in group]
        for lo in range(0, len(ids), _CHUNK):  # one reply per chunk, not one per station
            part = ids[lo:lo + _CHUNK]
            sites = await script(keys=[keys.station(sid).encode() for sid in part])
            members.update(sid for sid, sid_site in zip(part, sites, strict=True)
                           if (sid_site or default_site) == site_id)
    return sorted(members)


_CHUNK = 2000
_SITE_IDS = """
local out = {}
for i = 1, #KEYS do out[i] = redis.call('HGET', KEYS[i], 'site_id') or '' end
return out
"""
