"""What request handlers share (one `ApiDeps` per app) and the bearer-token auth dependencies."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from csms.api.calls import StationCaller
from csms.api.errors import Forbidden, InvalidInput, Unauthorized
from csms.api.live import LiveHub
from csms.api.power_history import PowerHistory
from csms.api.reader import StateReader
from csms.api.site_inputs import SiteInputWriter
from csms.api.tokens import ROLE_RANK, Role, TokenInfo, TokenStore
from evfleet.clock import Clock
from evfleet.keys import Keys

bearer = HTTPBearer(auto_error=False, description="API token from `evfleet tokens create`")

ANONYMOUS = TokenInfo(token_hash="", name="anonymous (auth disabled)", role=Role.OPERATOR, created_at="")


@dataclass
class ApiDeps:
    """Handles of one API app."""

    redis: Any
    keys: Keys
    clock: Clock
    reader: StateReader
    writer: SiteInputWriter
    tokens: TokenStore
    caller: StationCaller
    hub: LiveHub
    power: PowerHistory
    auth: bool = True
    call_timeout_s: float = 30.0


def deps_of(request: Request) -> ApiDeps:
    """The app's `ApiDeps`."""
    deps: ApiDeps = request.app.state.deps
    return deps


async def authenticate(deps: ApiDeps, token: str | None, needed: Role) -> TokenInfo:
    """The token's identity if it may act with `needed`; Unauthorized/Forbidden otherwise."""
    if not deps.auth:
        return ANONYMOUS
    if not token:
        raise Unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")
    info = await deps.tokens.lookup(token)
    if info is None:
        raise Unauthorized("unknown or revoked API token")
    if ROLE_RANK[info.role] < ROLE_RANK[needed]:
        raise Forbidden(f"token {info.name!r} has role {info.role.value}; this needs {needed.value}",
                        {"role": info.role.value, "required": needed.value})
    return info


def _declared_query(route: Any) -> frozenset[str]:
    cached: frozenset[str] | None = getattr(route, "_evfleet_query_names", None)
    if cached is not None:
        return cached
    names: set[str] = set()
    stack = [route.dependant]
    while stack:
        dependant = stack.pop()
        names.update(p.alias for p in dependant.query_params)
        stack.extend(dependant.dependencies)
    route._evfleet_query_names = frozenset(names)
    return route._evfleet_query_names


async def reject_unknown_query(request: Request) -> None:
    """Refuse query parameters the operation does not declare, or that come twice (422), so a typo
    such as `?limt=5` or `?station=CS1` is an error instead of a silently unfiltered answer."""
    route = request.scope.get("route")
    if route is None or not hasattr(route, "dependant"):
        return
    unknown = sorted(set(request.query_params) - _declared_query(route))
    if unknown:
        raise InvalidInput(f"unknown query parameter(s): {', '.join(unknown)[:200]}",
                           {"unknown": unknown[:20], "allowed": sorted(_declared_query(route))})
    keys = [key for key, _ in request.query_params.multi_items()]
    repeated = sorted({key for key in keys if keys.count(key) > 1})
    if repeated:  # every parameter takes one value: `?station_id=A&station_id=B` is not a filter
        raise InvalidInput(f"query parameter(s) given more than once: {', '.join(repeated)[:200]}",
                           {"repeated": repeated[:20]})


def require(role: Role) -> Callable[..., Awaitable[TokenInfo]]:
    """A dependency that admits tokens with at least `role`."""

    async def dependency(request: Request,
                         credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> TokenInfo:
        token = credentials.credentials if credentials else None
        info = await authenticate(deps_of(request), token, role)
        request.state.token = info
        return info

    return dependency


def require_stream(role: Role) -> Callable[..., Awaitable[TokenInfo]]:
    """Like `require`, but also accepts `?access_token=` (EventSource cannot send headers)."""

    async def dependency(request: Request,
                         credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> TokenInfo:
        token = credentials.credentials if credentials else request.query_params.get("access_token")
        info = await authenticate(deps_of(request), token, role)
        if deps_of(request).auth:
            request.state.stream_token = token  # the feed re-checks it, so revocation ends it
        return info

    return dependency
