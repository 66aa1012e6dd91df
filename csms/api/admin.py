"""Provisioning through the API (operator role): create, update and delete stations and sites.

Stations get a generated password shown once in the answer and stored only as a hash
(`csms.store.provisioning.provision_station`). A site's limit changes only through
`csms.store.provisioning.set_site_limit` (via `SiteInputWriter.set_limit`), which writes the
limit and the `site.limit` event together. Id tokens live in `csms.api.routes`.
"""

from __future__ import annotations

import secrets
import string
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import Field

from csms.api.deps import ApiDeps, deps_of, reject_unknown_query, require
from csms.api.errors import ACT_ERRORS, Conflict, InvalidInput, NotFound
from csms.api.models import Site
from csms.api.reader import s, sdict
from csms.api.routes import SiteIdPath, StationIdPath
from csms.api.schemas import Strict
from csms.api.site_inputs import SiteLimitInput
from csms.api.tokens import Role
from csms.store.provisioning import (
    ProvisioningConflict,
    ProvisioningError,
    add_site,
    move_station,
    provision_station,
    remove_site,
    remove_station,
    set_station_compat,
)

admin = APIRouter(prefix="/api/v1", responses=ACT_ERRORS,
                  dependencies=[Depends(require(Role.OPERATOR)), Depends(reject_unknown_query)])

PASSWORD_CHARS = 24
PASSWORD_ALPHABET = string.ascii_letters + string.digits
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,47}$"


def new_station_password() -> str:
    """A random 24-character password (letters and digits: about 143 bits)."""
    return "".join(secrets.choice(PASSWORD_ALPHABET) for _ in range(PASSWORD_CHARS))


class StationCreate(Strict):
    """A new station: its id, site and security profile (the password is generated)."""

    station_id: str = Field(..., pattern=ID_PATTERN, description="letters, digits, `._-`, up to 48")
    site_id: str | None = Field(None, pattern=ID_PATTERN, description="an existing site (default: `default`)")
    security_profile: int = Field(1, ge=1, le=3, description="1: ws + password, 2: wss + password, "
                                                             "3: wss + client certificate")
    compat: bool = Field(False, description="accept schema deviations of known chargers")


class StationUpdate(Strict):
    """Changes to a station; omitted fields stay as they are."""

    site_id: str | None = Field(None, pattern=ID_PATTERN, description="move to this existing site "
                                                                      "(only while the station is offline)")
    compat: bool | None = None
    new_password: bool = Field(False, description="generate a new password (shown once in the answer)")


class StationProvisioned(Strict):
    """A station's provisioning; `password` is shown only when it was just generated."""

    station_id: str
    site_id: str
    security_profile: int
    compat: bool
    online: bool
    password: str | None = Field(None, description="the new HTTP Basic password: shown once, stored "
                                                   "only as a hash")


class SiteCreate(Strict):
    """A new site, optionally with its import limit."""

    site_id: str = Field(..., pattern=ID_PATTERN, description="letters, digits, `._-`, up to 48")
    name: str | None = Field(None, min_length=1, max_length=200)
    limit_kw: float | None = Field(None, gt=0, le=1_000_000, description="site import limit in kW")


class SiteUpdate(Strict):
    """A new name and/or limit for a site."""

    name: str | None = Field(None, min_length=1, max_length=200)
    limit_kw: float | None = Field(None, gt=0, le=1_000_000, description="site import limit in kW")


async def _provisioning(deps: ApiDeps, station_id: str, password: str | None) -> StationProvisioned:
    raw = sdict(await deps.redis.hgetall(deps.keys.station(station_id)))
    cred = s(await deps.redis.hget(deps.keys.station_credentials(station_id), "security_profile"))
    return StationProvisioned(station_id=station_id, site_id=raw.get("site_id") or deps.reader.default_site,
                              security_profile=int(cred) if cred.isdigit() else 1,
                              compat=raw.get("compat") == "1", online=raw.get("online") == "1",
                              password=password)


async def _known_site(deps: ApiDeps, site_id: str) -> str:
    if not await deps.reader.site_exists(site_id):
        raise InvalidInput(f"unknown site {site_id!r}: create it first (POST /api/v1/sites)",
                           {"site_id": site_id})
    return site_id


async def _known_station(deps: ApiDeps, station_id: str) -> dict[str, str]:
    if not await deps.redis.sismember(deps.keys.stations(), station_id):
        raise NotFound(f"unknown station {station_id!r}", {"station_id": station_id})
    return sdict(await deps.redis.hgetall(deps.keys.station(station_id)))


@admin.post("/stations", tags=["provisioning"], status_code=201, response_model=StationProvisioned,
            summary="Create a station (its generated password is shown once)")
async def create_station(request: Request, body: StationCreate) -> StationProvisioned:
    """Provision a station on an existing site; 409 if it exists. The answer's `password` is the
    only time the password is shown: the csms keeps a salted hash."""
    deps = deps_of(request)
    if await deps.reader.station_exists(body.station_id):
        raise Conflict(f"station {body.station_id!r} exists; PATCH it to change it",
                       {"station_id": body.station_id})
    site = await _known_site(deps, body.site_id or deps.reader.default_site)
    password = new_station_password()
    try:
        await provision_station(deps.redis, deps.keys, body.station_id, password, site, compat=body.compat,
                                security_profile=body.security_profile, now=deps.clock.now())
    except ProvisioningError as err:
        raise InvalidInput(str(err), {"station_id": body.station_id}) from err
    return await _provisioning(deps, body.station_id, password)


@admin.patch("/stations/{station_id}", tags=["provisioning"], response_model=StationProvisioned,
             summary="Change a station's site, compat mode or password")
async def update_station(request: Request, station_id: StationIdPath, body: StationUpdate
                         ) -> StationProvisioned:
    """Move an offline station to another site, switch compat mode, or generate a new password
    (shown once; the old one stops working at the station's next connection)."""
    deps = deps_of(request)
    raw = await _known_station(deps, station_id)
    if body.site_id is not None and body.site_id != (raw.get("site_id") or deps.reader.default_site):
        await _known_site(deps, body.site_id)
        if raw.get("online") == "1":
            raise Conflict(f"station {station_id!r} is connected: a station changes site only while "
                           "offline (its site's budget is fixed while it is connected)",
                           {"station_id": station_id, "site_id": raw.get("site_id")})
    password = new_station_password() if body.new_password else None
    try:
        if body.site_id is not None:
            await move_station(deps.redis, deps.keys, station_id, body.site_id)
        if body.compat is not None:
            await set_station_compat(deps.redis, deps.keys, station_id, body.compat)
        if password is not None:
            current = await _provisioning(deps, station_id, None)
            await provision_station(deps.redis, deps.keys, station_id, password,
                                    security_profile=current.security_profile, compat=current.compat,
                                    now=deps.clock.now())
    except ProvisioningError as err:
        raise InvalidInput(str(err), {"station_id": station_id}) from err
    return await _provisioning(deps, station_id, password)


@admin.delete("/stations/{station_id}", tags=["provisioning"], status_code=204,
              summary="Delete an offline station (its transactions are kept)")
async def delete_station(request: Request, station_id: StationIdPath) -> Response:
    """Remove the station's credentials and state; 409 while it is connected."""
    deps = deps_of(request)
    raw = await _known_station(deps, station_id)
    if raw.get("online") == "1":
        raise Conflict(f"station {station_id!r} is connected: disconnect it (or make it Inoperative) first",
                       {"station_id": station_id})
    await remove_station(deps.redis, deps.keys, station_id)
    return Response(status_code=204)


async def _site_doc(deps: ApiDeps, site_id: str) -> dict[str, Any]:
    doc: dict[str, Any] = (await deps.reader.sites([site_id]))[0]
    return doc


@admin.post("/sites", tags=["provisioning"], status_code=201, response_model=Site, summary="Create a site")
async def create_site(request: Request, body: SiteCreate) -> dict[str, Any]:
    """Register a site with a name and, optionally, its limit (stored with a `site.limit` event,
    like every limit change); 409 if it exists."""
    deps = deps_of(request)
    if await deps.reader.site_exists(body.site_id):
        raise Conflict(f"site {body.site_id!r} exists; PATCH it to change it", {"site_id": body.site_id})
    await _write_site(deps, body.site_id, body.name, body.limit_kw)
    return await _site_doc(deps, body.site_id)


async def _write_site(deps: ApiDeps, site_id: str, name: str | None, limit_kw: float | None) -> None:
    try:
        if limit_kw is not None:  # the one path for limits: hash + site.limit event in one MULTI
            await deps.writer.set_limit(site_id, SiteLimitInput(limit_kw=limit_kw, name=name), source="api")
        else:
            await add_site(deps.redis, deps.keys, site_id, name)
    except (ProvisioningError, ValueError) as err:
        raise InvalidInput(str(err), {"site_id": site_id}) from err


@admin.patch("/sites/{site_id}", tags=["provisioning"], response_model=Site,
              summary="Rename a site or change its limit")
async def update_site(request: Request, site_id: SiteIdPath, body: SiteUpdate) -> dict[str, Any]:
    """A new name and/or limit (the limit through `set_site_limit`: the csms enforces it within a
    second and the optimizer re-plans)."""
    deps = deps_of(request)
    if not await deps.reader.site_exists(site_id):
        raise NotFound(f"unknown site {site_id!r}", {"site_id": site_id})
    await _write_site(deps, site_id, body.name, body.limit_kw)
    return await _site_doc(deps, site_id)


@admin.delete("/sites/{site_id}", tags=["provisioning"], status_code=204, summary="Delete an empty site")
async def delete_site(request: Request, site_id: SiteIdPath) -> Response:
    """Remove a site with no stations (its limit, name and prices); 409 while stations are on it."""
    deps = deps_of(request)
    if not await deps.reader.site_exists(site_id):
        raise NotFound(f"unknown site {site_id!r}", {"site_id": site_id})
    if site_id == deps.reader.default_site:
        raise Conflict(f"{site_id!r} is the default site (new stations go there); it cannot be deleted",
                       {"site_id": site_id})
    try:
        await remove_site(deps.redis, deps.keys, site_id)
    except ProvisioningConflict as err:
        raise Conflict(str(err), {"site_id": site_id}) from err
    return Response(status_code=204)
