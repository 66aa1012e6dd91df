"""Id-token authorization (block C), pure: stored token record -> AuthorizationStatus.

Public names: `authorization_status`, `KNOWN_STATUSES`.

The token *type* is deliberately not compared: real chargers send one type in Authorize and
another in TransactionEvent for the same card.
"""

from __future__ import annotations

from collections.abc import Mapping

KNOWN_STATUSES = frozenset({
    "Accepted", "Blocked", "ConcurrentTx", "Expired", "Invalid", "NoCredit", "NotAllowedTypeEVSE",
    "NotAtThisLocation", "NotAtThisTime", "Unknown",
})


def authorization_status(record: Mapping[str, str], accept_all: bool) -> str:
    """Status for a token whose stored record is `record` (empty if unknown)."""
    if not record:
        return "Accepted" if accept_all else "Unknown"
    status = record.get("status", "Accepted")
    return status if status in KNOWN_STATUSES else "Invalid"
