"""Station credentials: salted password hashes and HTTP Basic parsing.

Public names: `hash_password`, `verify_password`, `needs_rehash`, `PasswordHash`,
`parse_basic_auth`, `BasicAuthError`, `DEFAULT_ITERATIONS`, `FAST_SCHEME`, `SCHEME`,
`FAST_MIN_CHARS`, `UNKNOWN_STATION_HASH`.

Two schemes (the stored `scheme` field says which):

- `hmac_sha256` (FAST_SCHEME), for passwords of at least `FAST_MIN_CHARS` (16) characters:
  HMAC-SHA256 keyed with a random 16-byte per-station salt, about 2 microseconds. OCPP
  station passwords are machine-generated secrets of 16-40 characters (OCPP 2.0.1
  `BasicAuthPassword`); for them key stretching buys nothing: 16 random characters of the
  printable alphabet are over 90 bits, out of reach of an offline search even at 10^10
  guesses per second, and a stretched hash would cost the csms 20+ ms of CPU per login,
  which is what turned a reconnect storm into minutes.
- `pbkdf2_sha256` (SCHEME, `DEFAULT_ITERATIONS`), for shorter (human-chosen) passwords, and
  every hash stored before the fast scheme existed. `needs_rehash` tells the csms to
  replace such a hash with the fast scheme after a successful login when the password is
  long enough (migration on login).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from dataclasses import dataclass

SCHEME = "pbkdf2_sha256"
FAST_SCHEME = "hmac_sha256"
DEFAULT_ITERATIONS = 100_000
FAST_MIN_CHARS = 16
"""Passwords at least this long are stored with FAST_SCHEME (a machine-generated secret)."""
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


def _keyed(password: str, salt: bytes) -> bytes:
    return hmac.new(salt, password.encode("utf-8"), hashlib.sha256).digest()


def hash_password(password: str, iterations: int = DEFAULT_ITERATIONS,
                  salt: bytes | None = None, scheme: str | None = None) -> PasswordHash:
    """A new salted hash of `password`.

    `scheme` None picks FAST_SCHEME for passwords of at least FAST_MIN_CHARS characters and
    PBKDF2 with `iterations` for shorter ones (see the module docstring).
    """
    if iterations < 1:
        raise ValueError("iterations must be >= 1")
    if scheme is None:
        scheme = FAST_SCHEME if len(password) >= FAST_MIN_CHARS else SCHEME
    salt = salt if salt is not None else secrets.token_bytes(16)
    if scheme == FAST_SCHEME:
        return PasswordHash(salt_hex=salt.hex(), hash_hex=_keyed(password, salt).hex(), iterations=1,
                            scheme=FAST_SCHEME)
    if scheme != SCHEME:
        raise ValueError(f"unknown password scheme {scheme!r}")
    return PasswordHash(salt_hex=salt.hex(), hash_hex=_derive(password, salt, iterations).hex(),
                        iterations=iterations)


def verify_password(password: str, stored: PasswordHash) -> bool:
    """True if `password` matches `stored` (constant-time comparison)."""
    try:
        salt = bytes.fromhex(stored.salt_hex)
        expected = bytes.fromhex(stored.hash_hex)
    except ValueError:
        return False
    if stored.scheme == FAST_SCHEME:
        return hmac.compare_digest(_keyed(password, salt), expected)
    if stored.scheme != SCHEME:
        return False
    return hmac.compare_digest(_derive(password, salt, stored.iterations), expected)


def is_expensive(stored: PasswordHash) -> bool:
    """True when verifying `stored` costs real CPU (PBKDF2): run it off the event loop."""
    return stored.scheme == SCHEME and stored.iterations > 100


def needs_rehash(password: str, stored: PasswordHash) -> bool:
    """True when `stored` (already verified against `password`) should be replaced by a
    FAST_SCHEME hash: a PBKDF2 hash of a password long enough for the fast scheme."""
    return stored.scheme == SCHEME and len(password) >= FAST_MIN_CHARS


UNKNOWN_STATION_HASH = hash_password("x" * FAST_MIN_CHARS, salt=bytes(16))
"""Checked for an unknown station id so that its refusal costs what a wrong password does."""


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
