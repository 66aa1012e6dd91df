"""Operator API bearer tokens: generated once, stored only as SHA-256 hashes in Redis.

Keys (docs/redis-schema.md): ``{prefix}:api-tokens`` SET of hashes and
``{prefix}:api-token:{sha256}`` HASH ``{name, role, created_at}``.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from evfleet.clock import Clock
from evfleet.keys import Keys


class Role(StrEnum):
    """What a token may do: viewers read, operators also act."""

    VIEWER = "viewer"
    OPERATOR = "operator"


ROLE_RANK = {Role.VIEWER: 1, Role.OPERATOR: 2}
TOKEN_PREFIX = "evf_"


class TokenError(ValueError):
    """A token command cannot be done (duplicate name, unknown token, bad role)."""


@dataclass(frozen=True)
class TokenInfo:
    """A stored token, without the secret."""

    token_hash: str
    name: str
    role: Role
    created_at: str

    def to_dict(self) -> dict[str, str]:
        """JSON-friendly view (hash shortened to an id prefix)."""
        return {"id": self.token_hash[:12], "name": self.name, "role": self.role.value,
                "created_at": self.created_at}


def hash_token(token: str) -> str:
    """Hex SHA-256 of a bearer token (the only form that is stored)."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh random bearer token (shown once)."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def _decode(raw: dict[Any, Any]) -> dict[str, str]:
    return {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in raw.items()}


class TokenStore:
    """Create, look up, list and revoke API tokens in Redis (async client)."""

    def __init__(self, redis: Any, keys: Keys, clock: Clock) -> None:
        self._redis = redis
        self._keys = keys
        self._clock = clock

    async def create(self, name: str, role: Role | str) -> tuple[str, TokenInfo]:
        """Store a new token for `name` with `role`; returns (secret, info)."""
        name = name.strip()
        if not name:
            raise TokenError("token name must not be empty")
        try:
            role = Role(role)
        except ValueError as err:
            raise TokenError(f"unknown role {role!r}; use viewer or operator") from err
        if any(t.name == name for t in await self.list()):
            raise TokenError(f"a token named {name!r} exists; revoke it first")
        token = new_token()
        digest = hash_token(token)
        info = TokenInfo(digest, name, role, self._clock.now().isoformat())
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(self._keys.api_token(digest), mapping={"name": name, "role": role.value,
                                                         "created_at": info.created_at})
        pipe.sadd(self._keys.api_tokens(), digest)
        await pipe.execute()
        return token, info

    async def lookup(self, token: str) -> TokenInfo | None:
        """The stored token matching the secret `token`, or None."""
        digest = hash_token(token)
        raw = _decode(await self._redis.hgetall(self._keys.api_token(digest)))
        if not raw or raw.get("role") not in {r.value for r in Role}:
            return None
        return TokenInfo(digest, raw.get("name", ""), Role(raw["role"]), raw.get("created_at", ""))

    async def list(self) -> list[TokenInfo]:
        """All tokens, sorted by name."""
        digests = sorted(d.decode() if isinstance(d, bytes) else d
                         for d in await self._redis.smembers(self._keys.api_tokens()))
        pipe = self._redis.pipeline(transaction=False)
        for d in digests:
            pipe.hgetall(self._keys.api_token(d))
        out = []
        for d, raw in zip(digests, await pipe.execute(), strict=True):
            fields = _decode(raw)
            if fields.get("role") in {r.value for r in Role}:
                out.append(TokenInfo(d, fields.get("name", ""), Role(fields["role"]),
                                     fields.get("created_at", "")))
        return sorted(out, key=lambda t: t.name)

    async def revoke(self, name_or_id: str) -> TokenInfo:
        """Delete the token with that name or id (hash prefix, at least 6 characters)."""
        tokens = await self.list()
        matches = [t for t in tokens if t.name == name_or_id]
        if not matches and len(name_or_id) >= 6:
            matches = [t for t in tokens if t.token_hash.startswith(name_or_id)]
        if not matches:
            raise TokenError(f"no token named or with id {name_or_id!r}")
        if len(matches) > 1:
            raise TokenError(f"{name_or_id!r} matches {len(matches)} tokens; use a longer id")
        info = matches[0]
        pipe = self._redis.pipeline(transaction=True)
        pipe.delete(self._keys.api_token(info.token_hash))
        pipe.srem(self._keys.api_tokens(), info.token_hash)
        await pipe.execute()
        return info
