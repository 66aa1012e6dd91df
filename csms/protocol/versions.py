"""Which OCPP version a connection speaks, pure: offered subprotocols + station pin -> choice.

Public names: `SUBPROTOCOLS`, `choose_subprotocol`, `PIN_FIELD`, `VERSION_OF`.

`ocpp2.0.1` is preferred when a station offers both. A station whose hash field
`ocpp_pin` (`PIN_FIELD`) is `1.6` or `2.0.1` is held to that version (set with
`evfleet stations add --ocpp`); `auto` or unset lets it choose.
"""

from __future__ import annotations

from collections.abc import Sequence

SUBPROTOCOLS: tuple[str, ...] = ("ocpp2.0.1", "ocpp1.6")
"""Accepted subprotocols, most preferred first."""
VERSION_OF = {"ocpp2.0.1": "2.0.1", "ocpp1.6": "1.6"}
PIN_FIELD = "ocpp_pin"
PIN_VALUES = ("auto", "1.6", "2.0.1")


def choose_subprotocol(offered: Sequence[str], pinned: str | None = None) -> str | None:
    """The subprotocol to answer with (None: nothing acceptable was offered)."""
    allowed = [p for p in SUBPROTOCOLS if pinned in (None, "", "auto") or VERSION_OF[p] == pinned]
    return next((p for p in allowed if p in offered), None)
