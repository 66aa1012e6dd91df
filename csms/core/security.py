"""Station credentials: salted PBKDF2-SHA256 password hashes and HTTP Basic parsing.

Public names: `hash_password`, `verify_password`, `PasswordHash`, `parse_basic_auth`,
`BasicAuthError`, `DEFAULT_ITERATIONS`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass

SCHEME = "pbkdf2_sha256"
DEFAULT_ITERATIONS = 100_000
MIN_PASSWORD_CHARS = 8
MAX_PASSWORD_CHARS = 40  # OCPP 2.0.1 BasicAuthPassword: passwordString(40)


class BasicAuthError(ValueError):
    """The Authorization header is missing or not valid HTTP Basic."""


@dataclass(frozen=True)
class PasswordHash:
    """A stored credential (the `station:{sid}:cred` hash, without the profile)."""

    salt_hex: str
    hash_hex: str
    iterations: int = DEFAULT_ITERATIONS
    scheme: str = SCHEME

    def to_fields(self) -> dict[str, str]:
        """Flat string fields for the Redis hash."""
        return {"scheme": self.scheme, "iterations": str(self.iterations),
                "salt": self.salt_hex, "hash": self.hash_hex}

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> PasswordHash:
        """Inverse of `to_fields` (raises KeyError/ValueError on a damaged record)."""
        return cls(salt_hex=fields["salt"], hash_hex=fields["hash"],
                   iterations=int(fields["iterations"]), scheme=fields.get("scheme", SCHEME))


def _derive(password: str, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)


def hash_password(password: str, iterations: int = DEFAULT_ITERATIONS,
                  salt: bytes | None = None) -> PasswordHash:
    """A new salted hash of `password`."""
    if iterations < 1:
        raise ValueError("iterations must be >= 1")
    salt = salt if salt is not None else secrets.token_bytes(16)
    return PasswordHash(salt_hex=salt.hex(), hash_hex=_derive(password, salt, iterations).hex(),
                        iterations=iterations)


def verify_password(password: str, stored: PasswordHash) -> bool:
    """True if `password` matches `stored` (constant-time comparison)."""
    if stored.scheme != SCHEME:
        return False
    try:
        salt = bytes.fromhex(stored.salt_hex)
        expected = bytes.fromhex(stored.hash_hex)
    except ValueError:
        return False
    return hmac.compare_digest(_derive(password, salt, stored.iterations), expected)


def check_password_policy(password: str) -> None:
    """Raise ValueError if `password` is not acceptable for a station (OCPP: 8..40 chars)."""
    if not MIN_PASSWORD_CHARS <= len(password) <= MAX_PASSWORD_CHARS:
        raise ValueError(
            f"password must be {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters, got {len(password)}")


def parse_basic_auth(header: str | None) -> tuple[str, str]:
    """(username, password) from an `Authorization: Basic ...` header value."""
    if not header:
        raise BasicAuthError("missing Authorization header")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic" or not token:
        raise BasicAuthError("Authorization is not HTTP Basic")
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as err:
        raise BasicAuthError("Basic credentials are not valid base64 UTF-8") from err
    user, sep, password = decoded.partition(":")
    if not sep:
        raise BasicAuthError("Basic credentials have no ':'")
    return user, password


def basic_auth_header(username: str, password: str) -> str:
    """The `Authorization` header value a station sends (used by clients and tests)."""
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return f"Basic {token}"
