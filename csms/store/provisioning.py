"""Station and site provisioning in Redis (used by `evfleet stations ...`, the API and tests).

Public names: `provision_station`, `remove_station`, `list_stations`, `get_credentials`,
`set_station_compat`, `move_station`, `set_site_limit`, `publish_site_defaults`, `add_site`, `add_id_token`,
`validate_station_id`, `validate_site_id`,
`rehash_credentials`, `ProvisioningError`, `StationIdError`.

Each write is one MULTI on a single Redis server. In the Redis Cluster layout it is one MULTI per
hash slot (`evfleet.store.multi.SlotMulti`): the station's keys, then its site's, then the id
registries (`stations`, `sites`), so a crash in between leaves an entity that re-running the same
idempotent command registers. Every write of a station's site (provision, move, remove) goes through
`evfleet.store.site_index`, which keeps the site's station index with it.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis

from csms.core.security import (
    DEFAULT_ITERATIONS,
    PasswordHash,
    check_password_policy,
    hash_password,
)
from evfleet.keys import Keys
from evfleet.store.client import as_str, as_str_dict, hmap
from evfleet.store.multi import SlotMulti
from evfleet.store.site_index import UnknownStation, change_site, unregister_station

SITE_EVENTS_MAXLEN = 100_000
"""Approximate length cap of the event stream when appending `site.limit`."""

STATION_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-]{0,47}\Z")


class ProvisioningError(ValueError):
    """A provisioning request is invalid (bad id, bad password, unknown station...)."""


class ProvisioningConflict(ProvisioningError):
    """A well-formed request that the stored state refuses (unknown station/site/id token, site in use)."""


class StationIdError(ProvisioningError):
    """A station id is not acceptable (1-48 chars of A-Z a-z 0-9 . _ -, starting alphanumeric)."""


def validate_station_id(station_id: str) -> str:
    """Return `station_id` or raise StationIdError."""
    if not STATION_ID_RE.match(station_id or ""):
        raise StationIdError(
            f"invalid station id {station_id!r}: use 1-48 characters A-Z a-z 0-9 . _ - "
            "(starting with a letter or digit)")
    return station_id


def validate_site_id(site_id: str) -> str:
    """Return `site_id` or raise ProvisioningError (the station-id alphabet, up to 48 characters)."""
    if not STATION_ID_RE.match(site_id or ""):
        raise ProvisioningError(
            f"invalid site id {site_id!r}: use 1-48 characters A-Z a-z 0-9 . _ - "
            "(starting with a letter or digit)")
    return site_id


def _now_iso(now: datetime | None) -> str:
    return (now or datetime.now(UTC)).isoformat()


async def provision_station(redis: Redis, keys: Keys, station_id: str, password: str,
                            site_id: str | None = None, *, compat: bool = False,
                            security_profile: int = 1, iterations: int = DEFAULT_ITERATIONS,
                            now: datetime | None = None,
                            default_site_limit_kw: float | None = None) -> None:
    """Create or update a station with a salted password hash (idempotent; keeps its state).

    `site_id` None keeps the current site (new stations go to `default`). Passwords of 16+
    characters are stored with the fast keyed hash, shorter ones with PBKDF2 at `iterations`
    (see `csms.core.security`).
    """
    validate_station_id(station_id)
    try:
        check_password_policy(password)
    except ValueError as err:
        raise ProvisioningError(str(err)) from err
    if security_profile not in (1, 2, 3):
        raise ProvisioningError(f"security profile must be 1, 2 or 3, got {security_profile}")
    cred = hash_password(password, iterations=iterations)
    if site_id is not None:
        validate_site_id(site_id)

    def station(pipe: Any) -> None:
        pipe.hset(keys.station_credentials(station_id),
                  mapping=hmap({**cred.to_fields(), "security_profile": str(security_profile)}))
        pipe.hset(keys.station(station_id), mapping={"compat": "1" if compat else "0"})
        pipe.hsetnx(keys.station(station_id), "registered_at", _now_iso(now))
        pipe.hsetnx(keys.station(station_id), "online", "0")

    def after(on: Any, site: str) -> None:  # the site's hash, then the registries (module docstring)
        on(keys.site(site)).hsetnx(keys.site(site), "name", site)
        if default_site_limit_kw is not None:
            on(keys.site(site)).hsetnx(keys.site(site), "limit_kw", repr(float(default_site_limit_kw)))
        on(keys.stations()).sadd(keys.stations(), station_id)
        on(keys.sites()).sadd(keys.sites(), site)

    await change_site(redis, keys, station_id, site_id, station=station, after=after)


async def remove_station(redis: Redis, keys: Keys, station_id: str) -> bool:
    """Delete a station's provisioning and live state (transactions are kept). False if unknown."""
    if not await redis.sismember(keys.stations(), station_id):
        return False
    evse_keys = [k async for k in redis.scan_iter(match=f"{keys.station(station_id)}:evse:*")]
    await unregister_station(redis, keys, station_id, lambda pipe: pipe.delete(
        keys.station(station_id), keys.station_credentials(station_id), keys.station_connectors(station_id),
        keys.station_violations(station_id), *evse_keys))
    return True


async def get_credentials(redis: Redis, keys: Keys, station_id: str) -> tuple[PasswordHash, int] | None:
    """(stored hash, security profile) of a provisioned station, or None."""
    fields = as_str_dict(await redis.hgetall(keys.station_credentials(station_id)))
    if not fields:
        return None
    try:
        return PasswordHash.from_fields(fields), int(fields.get("security_profile", "1"))
    except (KeyError, ValueError):
        return None


_REHASH = """
if redis.call('HGET', KEYS[1], 'hash') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'scheme', ARGV[2], 'iterations', ARGV[3], 'salt', ARGV[4], 'hash', ARGV[5])
return 1
"""


async def rehash_credentials(redis: Redis, keys: Keys, station_id: str, old: PasswordHash,
                             new: PasswordHash) -> bool:
    """Replace a station's stored hash `old` by `new` unless it changed meanwhile (a password
    change between the login and this write wins). True if replaced."""
    done = await redis.eval(_REHASH, 1, keys.station_credentials(station_id), old.hash_hex, new.scheme,
                            str(new.iterations), new.salt_hex, new.hash_hex)
    return bool(done)


async def list_stations(redis: Redis, keys: Keys) -> list[dict[str, Any]]:
    """Every provisioned station with its station hash (sorted by id), without credentials."""
    ids = sorted(as_str(s) for s in await redis.smembers(keys.stations()))
    pipe = redis.pipeline(transaction=False)
    for sid in ids:
        pipe.hgetall(keys.station(sid))
    rows = await pipe.execute()
    return [{"station_id": sid, **as_str_dict(row)} for sid, row in zip(ids, rows, strict=True)]


async def set_station_compat(redis: Redis, keys: Keys, station_id: str, compat: bool) -> None:
    """Switch a station's schema-compatibility mode (takes effect on its next message)."""
    if not await redis.sismember(keys.stations(), station_id):
        raise ProvisioningConflict(f"unknown station {station_id!r}")
    await redis.hset(keys.station(station_id), "compat", "1" if compat else "0")


async def move_station(redis: Redis, keys: Keys, station_id: str, site_id: str) -> None:
    """Put a provisioned station on another (existing or new) site, keeping its credentials.

    The smart-charging service learns a station's site when it connects: move offline stations
    (the API refuses to move a connected one).
    """
    validate_site_id(site_id)
    if not await redis.sismember(keys.stations(), station_id):
        raise ProvisioningConflict(f"unknown station {station_id!r}")

    def after(on: Any, site: str) -> None:
        on(keys.site(site)).hsetnx(keys.site(site), "name", site)
        on(keys.sites()).sadd(keys.sites(), site)

    try:
        await change_site(redis, keys, station_id, site_id, after=after, existing=True)
    except UnknownStation as err:
        raise ProvisioningConflict(f"unknown station {station_id!r}") from err


async def add_site(redis: Redis, keys: Keys, site_id: str, name: str | None = None) -> None:
    """Register a site (or rename it) without touching its limit (see `set_site_limit`)."""
    validate_site_id(site_id)
    multi = SlotMulti(redis)
    if name:
        multi.on(keys.site(site_id)).hset(keys.site(site_id), "name", name)
    else:
        multi.on(keys.site(site_id)).hsetnx(keys.site(site_id), "name", site_id)
    multi.on(keys.sites()).sadd(keys.sites(), site_id)
    await multi.execute()


async def set_site_limit(redis: Redis, keys: Keys, site_id: str, limit_kw: float,
                         name: str | None = None, now: datetime | None = None,
                         source: str = "cli") -> dict[str, Any]:
    """THE way a site's grid limit (kW) changes: hash + `site.limit` event in one MULTI.

    Every path (CLI, HTTP API, MQTT, configuration, demo) calls this, so the smart-charging
    service sees every change on the stream and lowers the stations within a second, with or
    without the optimizer. Returns the event data.
    """
    from evfleet.events import Event, EventType

    validate_site_id(site_id)
    if not (limit_kw > 0 and limit_kw < float("inf")):
        raise ProvisioningError(f"site limit must be > 0 kW (finite), got {limit_kw}")
    ts = now or datetime.now(UTC)
    data: dict[str, Any] = {"limit_kw": float(limit_kw), "source": source}
    event = Event(type=EventType.SITE_LIMIT, site_id=site_id, ts=ts, data=data)
    multi = SlotMulti(redis)  # the site's hash and event in one MULTI (one slot), then the registry
    mapping = {"limit_kw": repr(float(limit_kw)), "updated_at": ts.isoformat()}
    if name:
        mapping["name"] = name
    site = multi.on(keys.site(site_id))
    site.hset(keys.site(site_id), mapping=hmap(mapping))
    site.hsetnx(keys.site(site_id), "name", site_id)
    site.xadd(keys.site_events(site_id), event.to_fields(), maxlen=SITE_EVENTS_MAXLEN, approximate=True)
    multi.on(keys.sites()).sadd(keys.sites(), site_id)
    await multi.execute()
    return data


async def publish_site_defaults(redis: Redis, keys: Keys, default_limit_kw: float, node_id: str,
                                now: datetime | None = None, margin_kw: float = 0.0,
                                ) -> tuple[float | None, list[str]]:
    """Publish the node's `default_site_limit_kw` and `site_margin_kw` (csms start-up), so that the
    csms budget, the optimizer and the API plan every site without a limit of its own with this one
    value, and every site with this margin (`evfleet.store.sites`). When it changes what a site is
    held to, a `site.limit` event per site (source `default`, or `margin` for a changed margin)
    re-budgets and re-plans it at once. Returns the limit published before (None: none) and those
    sites."""
    from evfleet.events import Event, EventType
    from evfleet.store.sites import (
        DEFAULT_SITE_LIMIT_KW,
        positive_kw,
        publish_default_limit,
        published_margin_kw,
    )

    if positive_kw(default_limit_kw) is None:
        raise ValueError(f"default site limit must be > 0 kW (finite), got {default_limit_kw}")
    if not math.isfinite(margin_kw) or margin_kw < 0:
        raise ValueError(f"site margin must be >= 0 kW (finite), got {margin_kw}")
    ts = now or datetime.now(UTC)
    margin_before = await published_margin_kw(redis, keys)
    await redis.hset(keys.site_defaults(), mapping={"site_margin_kw": repr(float(margin_kw))})
    before = await publish_default_limit(redis, keys, default_limit_kw, node_id, ts.isoformat())
    limit_changed = (before or DEFAULT_SITE_LIMIT_KW) != float(default_limit_kw)
    margin_changed = margin_before != float(margin_kw)
    if not limit_changed and not margin_changed:
        return before, []
    site_ids = sorted(as_str(m) or "" for m in await redis.smembers(keys.sites()))
    pipe = redis.pipeline(transaction=False)
    for site_id in site_ids:
        pipe.hget(keys.site(site_id), "limit_kw")
    owns = await pipe.execute()
    unset = {sid for sid, own in zip(site_ids, owns, strict=True) if sid and own in (None, "")}
    changed = [sid for sid in site_ids if sid and (margin_changed or sid in unset)]
    multi = SlotMulti(redis)
    for site_id in changed:
        data: dict[str, Any] = {"source": "margin" if margin_changed else "default"}
        if margin_changed:
            data["margin_kw"] = float(margin_kw)
        if site_id in unset:
            data["limit_kw"] = float(default_limit_kw)
        event = Event(type=EventType.SITE_LIMIT, site_id=site_id, ts=ts, data=data)
        stream = keys.site_events(site_id)
        multi.on(stream).xadd(stream, event.to_fields(), maxlen=SITE_EVENTS_MAXLEN, approximate=True)
    await multi.execute()
    return before, changed


async def add_id_token(redis: Redis, keys: Keys, id_token: str, status: str = "Accepted",
                       token_type: str = "ISO14443", group_id: str | None = None) -> None:
    """Store an id token for Authorize (status Accepted, Blocked, Expired, Invalid, ...)."""
    if not id_token or len(id_token) > 36:
        raise ProvisioningError("id token must be 1-36 characters")
    pipe = redis.pipeline(transaction=True)
    pipe.sadd(keys.id_tokens(), id_token)
    mapping = {"type": token_type, "status": status}
    if group_id:
        mapping["group_id"] = group_id
    pipe.hset(keys.id_token(id_token), mapping=hmap(mapping))
    await pipe.execute()


async def list_sites(redis: Redis, keys: Keys) -> list[dict[str, Any]]:
    """Every site (sorted by id) with its hash and the number of stations on it."""
    ids = sorted(as_str(s) for s in await redis.smembers(keys.sites()))
    pipe = redis.pipeline(transaction=False)
    for site_id in ids:
        pipe.hgetall(keys.site(site_id))
        pipe.scard(keys.site_stations(site_id))
    replies = await pipe.execute()
    return [{"site_id": site_id, **as_str_dict(replies[2 * i]), "stations": int(replies[2 * i + 1])}
            for i, site_id in enumerate(ids)]


async def remove_site(redis: Redis, keys: Keys, site_id: str) -> None:
    """Remove an empty site (its limit, name and prices); refused while stations are on it."""
    if not await redis.sismember(keys.sites(), site_id):
        raise ProvisioningConflict(f"unknown site {site_id!r}")
    on_site = await redis.scard(keys.site_stations(site_id))
    if on_site:
        raise ProvisioningConflict(f"site {site_id!r} still has {on_site} station(s): move or remove them")
    multi = SlotMulti(redis)  # registry first: a crash leaves an unlisted site, not a listed empty one
    multi.on(keys.sites()).srem(keys.sites(), site_id)
    multi.on(keys.site(site_id)).delete(keys.site(site_id), keys.site_prices(site_id))
    await multi.execute()


async def list_id_tokens(redis: Redis, keys: Keys) -> list[dict[str, str]]:
    """Every known id token (sorted) with its type, status and group."""
    tokens = sorted(as_str(t) for t in await redis.smembers(keys.id_tokens()))
    pipe = redis.pipeline(transaction=False)
    for token in tokens:
        pipe.hgetall(keys.id_token(token))
    rows = await pipe.execute()
    return [{"id_token": token, **as_str_dict(row)} for token, row in zip(tokens, rows, strict=True)]


async def remove_id_token(redis: Redis, keys: Keys, id_token: str) -> None:
    """Forget an id token: Authorize answers it Unknown from now on."""
    pipe = redis.pipeline(transaction=True)
    pipe.srem(keys.id_tokens(), id_token)
    pipe.delete(keys.id_token(id_token))
    removed, _ = await pipe.execute()
    if not removed:
        raise ProvisioningConflict(f"unknown id token {id_token!r}")
