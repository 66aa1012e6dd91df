"""Typed records of the shared Redis state, each decoded (and encoded) in exactly this one place.

Public names: `DEFAULT_MAX_POWER_W`, `DEFAULT_RATE_UNIT`, `stored_float`, `EvseRecord`.

Hash fields are strings as Redis stores them (docs/redis-schema.md); a field that is missing, empty or
not a number reads as the documented default, never as an error (one station's bad data must not
stop the site). Defaults, stated once:

- `max_power_w`: `DEFAULT_MAX_POWER_W` (22 kW, a three-phase 32 A AC charger) when the station did not
  report it (0 or missing). The csms budgets an unknown EVSE at this maximum, and the optimizer plans
  with the same figure, so neither under-counts what a plug-in can draw.
- `rate_unit`: `DEFAULT_RATE_UNIT` ("A"). Only OCPP 1.6 stations report their units
  (`csms.protocol.v16.configuration`); every OCPP 2.0.1 AC charger accepts per-phase amperes, so
  that is the unit the csms sends profiles in when the station did not say.
- `phases` 3 and `voltage_v` 230 (`evfleet.profile.DEFAULT_PHASES`, `DEFAULT_VOLTAGE_V`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from evfleet.profile import DEFAULT_PHASES, DEFAULT_VOLTAGE_V

DEFAULT_MAX_POWER_W = 22_000.0
"""Maximum of an EVSE that did not report one (`max_power_w` 0 or missing)."""
DEFAULT_RATE_UNIT: Literal["A", "W"] = "A"
"""Unit of the profiles sent to an EVSE that did not report its units."""


def stored_float(value: Any, default: float) -> float:
    """A stored number as float (`default` when missing, empty or not a number)."""
    try:
        return float(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


def _optional_float(value: Any) -> float | None:
    return stored_float(value, 0.0) if value not in (None, "") else None


@dataclass(frozen=True)
class EvseRecord:
    """The EVSE hash (`Keys.station_evse`), decoded."""

    max_power_w: float = DEFAULT_MAX_POWER_W
    phases: int = DEFAULT_PHASES
    voltage_v: float = DEFAULT_VOLTAGE_V
    rate_unit: Literal["A", "W"] = DEFAULT_RATE_UNIT
    steerable: bool = True
    """False once the station refused profiles (budgeted at its maximum)."""
    transaction_id: str = ""
    """The running transaction's OCPP transactionId ("" if none)."""
    tx_ref: str = ""
    """The running transaction's `tx_ref` ("" if none)."""
    default_limit_w: float | None = None
    """Limit of the TxDefaultProfile the station accepted (None = none)."""
    metered_max_w: float = 0.0
    """Highest power metered on the EVSE."""
    noncompliant_w: float | None = None
    """What the EVSE draws while it ignores its limit (None = compliant)."""
    refusals: int = 0
    retry_after_s: float = 0.0
    """POSIX time from which a refusing EVSE may be tried again."""

    @classmethod
    def decode(cls, fields: Mapping[str, str], default_max_power_w: float = DEFAULT_MAX_POWER_W,
               ) -> EvseRecord:
        """The record of a stored hash (see the module docstring for the defaults)."""
        return cls(
            max_power_w=stored_float(fields.get("max_power_w"), 0.0) or default_max_power_w,
            phases=int(stored_float(fields.get("phases"), DEFAULT_PHASES)),
            voltage_v=stored_float(fields.get("voltage_v"), DEFAULT_VOLTAGE_V),
            rate_unit="W" if fields.get("rate_unit") == "W" else DEFAULT_RATE_UNIT,
            steerable=fields.get("steerable", "1") != "0",
            transaction_id=fields.get("transaction_id", ""),
            tx_ref=fields.get("tx_ref", ""),
            default_limit_w=_optional_float(fields.get("default_limit_w")),
            metered_max_w=stored_float(fields.get("metered_max_w"), 0.0),
            noncompliant_w=_optional_float(fields.get("noncompliant_w")),
            refusals=int(stored_float(fields.get("refusals"), 0)),
            retry_after_s=stored_float(fields.get("retry_after"), 0.0),
        )
