"""Typed records of the shared Redis state, each decoded (and encoded) in exactly this one place.

Public names: `DEFAULT_MAX_POWER_W`, `DEFAULT_RATE_UNIT`, `stored_float`, `StationRecord`,
`EvseRecord`, `TransactionRecord`, `ChargingNeeds`, `AppliedProfile`.

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
- timestamps: `evfleet.isotime.parse_iso_or_none` (naive is UTC; unreadable is None).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from evfleet.isotime import parse_iso_or_none
from evfleet.jsonsafe import load_stored
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


def _optional_int(value: Any) -> int | None:
    text = str(value if value is not None else "")
    return int(text) if text.isdigit() else None


@dataclass(frozen=True)
class StationRecord:
    """The station hash (`Keys.station`), the fields other packages read."""

    site_id: str = ""
    """"" when the station names no site (it belongs to the deployment's default site)."""
    online: bool = False
    node: str = ""
    """The csms node that holds its connection."""
    last_seen: datetime | None = None

    @classmethod
    def decode(cls, fields: Mapping[str, str]) -> StationRecord:
        """The record of a stored hash."""
        return cls(site_id=fields.get("site_id") or "", online=fields.get("online", "0") == "1",
                   node=fields.get("node") or "", last_seen=parse_iso_or_none(fields.get("last_seen")))


@dataclass(frozen=True)
class TransactionRecord:
    """The transaction hash (`Keys.transaction(tx_ref)`), the fields other packages read."""

    station_id: str = ""
    evse_id: int | None = None
    """None when the stored value is missing or not a number."""
    state: str = ""
    """`Started`, `Updated` or `Ended` (`csms.core.transactions.TxState`)."""
    id_token: str = ""
    started_at: datetime | None = None
    updated_at: datetime | None = None
    ended_at: datetime | None = None
    energy_wh: float = 0.0
    power_w: float = 0.0
    soc: float | None = None
    charging_state: str = ""

    @property
    def ended(self) -> bool:
        """The transaction is over."""
        return self.state == "Ended"

    @classmethod
    def decode(cls, fields: Mapping[str, str]) -> TransactionRecord:
        """The record of a stored hash."""
        return cls(
            station_id=fields.get("station_id") or "", evse_id=_optional_int(fields.get("evse_id")),
            state=fields.get("state") or "", id_token=fields.get("id_token") or "",
            started_at=parse_iso_or_none(fields.get("started_at")),
            updated_at=parse_iso_or_none(fields.get("updated_at")),
            ended_at=parse_iso_or_none(fields.get("ended_at")),
            energy_wh=stored_float(fields.get("energy_wh"), 0.0),
            power_w=stored_float(fields.get("power_w"), 0.0),
            soc=_optional_float(fields.get("soc")),
            charging_state=str(fields.get("charging_state") or ""),
        )


@dataclass(frozen=True)
class ChargingNeeds:
    """The EV's last NotifyEVChargingNeeds on an EVSE (`Keys.charging_needs`, a JSON document written
    by `csms.core.charging_needs`); `raw` keeps the whole document."""

    tx_ref: str = ""
    """The session the needs belong to (needs of an earlier session on the EVSE do not count)."""
    departure_time: datetime | None = None
    energy_amount_wh: float | None = None
    ev_min_current_a: float | None = None
    ev_max_current_a: float | None = None
    ev_min_power_w: float | None = None
    ev_max_power_w: float | None = None
    max_schedule_tuples: int | None = None
    raw: Mapping[str, Any] | None = None

    @classmethod
    def decode(cls, doc: Mapping[str, Any] | str | bytes | None) -> ChargingNeeds | None:
        """The needs of a stored document (JSON text or already parsed); None when absent or not
        an object."""
        if isinstance(doc, str | bytes) or doc is None:
            doc = load_stored(doc)
        if not isinstance(doc, Mapping):
            return None
        tuples = doc.get("max_schedule_tuples")
        return cls(
            tx_ref=str(doc.get("tx_ref") or ""),
            departure_time=parse_iso_or_none(doc.get("departure_time") or None),
            energy_amount_wh=_optional_float(doc.get("energy_amount_wh")),
            ev_min_current_a=_optional_float(doc.get("ev_min_current_a")),
            ev_max_current_a=_optional_float(doc.get("ev_max_current_a")),
            ev_min_power_w=_optional_float(doc.get("ev_min_power_w")),
            ev_max_power_w=_optional_float(doc.get("ev_max_power_w")),
            max_schedule_tuples=int(tuples) if isinstance(tuples, int | float) and tuples > 0 else None,
            raw=doc,
        )


@dataclass(frozen=True)
class AppliedProfile:
    """The last profile sent to an EVSE and the station's answer (`Keys.applied_profile`), the part
    other packages read: the accepted limits as a step series ``[(posix_s, watts), ...]``."""

    tx_ref: str = ""
    """The session the profile was for ("" for a TxDefaultProfile)."""
    applied_series_w: tuple[tuple[float, float], ...] = ()
    """Empty when the station has not accepted it (or it has no limits)."""
    raw: Mapping[str, Any] | None = None

    @classmethod
    def decode(cls, doc: Mapping[str, Any] | str | bytes | None) -> AppliedProfile | None:
        """The record of a stored document; None when absent or not an object."""
        if isinstance(doc, str | bytes) or doc is None:
            doc = load_stored(doc)
        if not isinstance(doc, Mapping):
            return None
        series = doc.get("applied_series_w") or ()
        return cls(tx_ref=str(doc.get("tx_ref") or ""),
                   applied_series_w=tuple((float(t), float(v)) for t, v in series), raw=doc)

    def max_from(self, now_s: float) -> float | None:
        """Highest accepted limit in force at `now_s` or later (None without a series)."""
        if not self.applied_series_w:
            return None
        current = self.applied_series_w[0][1]
        peak: float | None = None
        for t, v in self.applied_series_w:
            if t <= now_s:
                current = v
            else:
                peak = v if peak is None else max(peak, v)
        return current if peak is None else max(current, peak)
