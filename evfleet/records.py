"""Typed records of the shared Redis state, each decoded (and encoded) in exactly this one place.

Public names: `DEFAULT_MAX_POWER_W`, `DEFAULT_RATE_UNIT`, `stored_float`, `StationRecord`,
`EvseRecord`, `TransactionRecord`, `ChargingNeeds`, `AppliedProfile`, `SitePlan`, `EvsePlan`.

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

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from evfleet.isotime import parse_iso_or_none
from evfleet.jsonsafe import load_stored
from evfleet.profile import DEFAULT_PHASES, DEFAULT_VOLTAGE_V
from evfleet.txprofile import EvLimits

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


EVSE_DECODED_FIELDS: tuple[str, ...] = (
    "max_power_w", "phases", "voltage_v", "rate_unit", "steerable", "transaction_id", "tx_ref",
    "default_limit_w", "metered_max_w", "noncompliant_w", "refusals", "retry_after", "default_at",
    "booted_at")
"""Every field of the EVSE hash the smart-charging service decodes (`EvseRecord.decode`, and
`default_at` and `booted_at` in `csms.smart_charging.evse.decode_evse`): a whole-site read fetches these only
(HMGET), not the whole hash. A field added to either decoder must be added here (a test checks)."""


def _number_or_none(value: Any) -> float | None:
    """A finite number, else None (a stored needs document may hold anything)."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


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
    metered_at: datetime | None = None
    """When the stored `energy_wh` / `power_w` were read at the station (None: unknown)."""

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
            metered_at=parse_iso_or_none(fields.get("metered_at")),
        )


@dataclass(frozen=True)
class ChargingNeeds:
    """The EV's last NotifyEVChargingNeeds on an EVSE (`Keys.charging_needs`, a JSON document written
    by `csms.core.charging_needs`); `raw` keeps the whole document. A value that is not a finite
    number reads as None (not announced)."""

    tx_ref: str | None = None
    """The session the needs belong to (needs of an earlier session on the EVSE do not count);
    None when the document names none."""
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
            tx_ref=doc["tx_ref"] if isinstance(doc.get("tx_ref"), str) else None,
            departure_time=parse_iso_or_none(doc.get("departure_time") or None),
            energy_amount_wh=_number_or_none(doc.get("energy_amount_wh")),
            ev_min_current_a=_number_or_none(doc.get("ev_min_current_a")),
            ev_max_current_a=_number_or_none(doc.get("ev_max_current_a")),
            ev_min_power_w=_number_or_none(doc.get("ev_min_power_w")),
            ev_max_power_w=_number_or_none(doc.get("ev_max_power_w")),
            max_schedule_tuples=int(tuples) if isinstance(tuples, int | float) and tuples > 0 else None,
            raw=doc,
        )

    def ev_limits(self) -> EvLimits:
        """What the EV's needs cap a profile with (`evfleet.txprofile.EvLimits`)."""
        return EvLimits(min_current_a=self.ev_min_current_a, max_current_a=self.ev_max_current_a,
                        min_power_w=self.ev_min_power_w, max_power_w=self.ev_max_power_w,
                        max_schedule_tuples=self.max_schedule_tuples)


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


def _step_index(start: datetime, step_s: float, at_s: float) -> int:
    return int((at_s - start.timestamp()) // step_s)


@dataclass(frozen=True)
class SitePlan:
    """The optimizer's site plan (`Keys.site_plan`, docs/redis-schema.md): written by the optimizer
    worker (`encode`), read by the csms and the API (`decode`)."""

    plan_id: str
    site_id: str
    start: datetime
    step_s: int
    planned_kw: list[float]
    """Planned site load per step (fixed load included)."""
    limit_kw: float
    fixed_load_kw: float = 0.0
    strategy: str = ""
    status: str = ""
    message: str = ""
    objective: float | None = None
    computed_at: datetime | None = None
    solve_s: float = 0.0
    evses: dict[str, list[float]] = field(default_factory=dict)
    """`sid/eid` -> limit per step (kW)."""
    transactions: dict[str, str] = field(default_factory=dict)
    """`sid/eid` -> the tx_ref the limits are for."""
    prices: list[float] | None = None
    notes: dict[str, list[Any]] = field(default_factory=dict)
    """`sid/eid` -> [the snapshot's note, unmet kWh] (kept so an unchanged re-plan can keep the plan)."""

    def encode(self) -> dict[str, Any]:
        """The stored JSON document (the worker adds `inputs` and `kept`, optimizer/standing.py)."""
        return {
            "plan_id": self.plan_id, "site_id": self.site_id, "start": self.start.isoformat(),
            "step_s": self.step_s, "planned_kw": self.planned_kw, "limit_kw": self.limit_kw,
            "fixed_load_kw": self.fixed_load_kw, "strategy": self.strategy, "status": self.status,
            "message": self.message, "objective": self.objective,
            "computed_at": self.computed_at.isoformat() if self.computed_at else None,
            "solve_s": self.solve_s, "evses": self.evses, "transactions": self.transactions,
            "prices": self.prices, "notes": self.notes,
        }

    @classmethod
    def decode(cls, doc: Mapping[str, Any] | str | bytes | None) -> SitePlan | None:
        """The plan of a stored document; None when absent or without a readable start and step."""
        if isinstance(doc, str | bytes) or doc is None:
            doc = load_stored(doc)
        if not isinstance(doc, Mapping):
            return None
        start = parse_iso_or_none(doc.get("start") if isinstance(doc.get("start"), str) else None)
        step_s = doc.get("step_s")
        if start is None or not isinstance(step_s, int | float) or step_s <= 0:
            return None
        planned = doc.get("planned_kw")
        evses = doc.get("evses")
        txs = doc.get("transactions")
        prices = doc.get("prices")
        objective = doc.get("objective")
        notes = doc.get("notes")
        return cls(
            plan_id=str(doc.get("plan_id") or ""), site_id=str(doc.get("site_id") or ""), start=start,
            step_s=int(step_s),
            planned_kw=[float(v) if isinstance(v, int | float) else 0.0 for v in planned]
            if isinstance(planned, list) else [],
            limit_kw=stored_float(doc.get("limit_kw"), 0.0),
            fixed_load_kw=stored_float(doc.get("fixed_load_kw"), 0.0),
            strategy=str(doc.get("strategy") or ""), status=str(doc.get("status") or ""),
            message=str(doc.get("message") or ""),
            objective=float(objective) if isinstance(objective, int | float) else None,
            computed_at=parse_iso_or_none(doc.get("computed_at") if isinstance(doc.get("computed_at"), str)
                                          else None),
            solve_s=stored_float(doc.get("solve_s"), 0.0),
            evses={str(k): list(v) for k, v in evses.items() if isinstance(v, list)}
            if isinstance(evses, Mapping) else {},
            transactions={str(k): str(v) for k, v in txs.items()} if isinstance(txs, Mapping) else {},
            prices=list(prices) if isinstance(prices, list) else None,
            notes={str(k): list(v) for k, v in notes.items() if isinstance(v, list)}
            if isinstance(notes, Mapping) else {},
        )

    def planned_kw_at(self, at_s: float) -> float | None:
        """Planned site load (kW) in the step containing POSIX time `at_s` (None outside the plan)."""
        i = _step_index(self.start, self.step_s, at_s)
        return self.planned_kw[i] if 0 <= i < len(self.planned_kw) else None

    def evse_kw_at(self, key: str, at_s: float) -> float | None:
        """The plan's limit (kW) for EVSE `key` at `at_s`, the first/last step outside the horizon
        (None if the EVSE is not in the plan)."""
        limits = self.evses.get(key)
        if not limits:
            return None
        i = _step_index(self.start, self.step_s, at_s)
        return float(limits[min(max(i, 0), len(limits) - 1)])


@dataclass(frozen=True)
class EvsePlan:
    """One EVSE's part of a plan (`Keys.planned_schedule`), for the running transaction `tx_ref`."""

    plan_id: str
    site_id: str
    tx_ref: str
    start: datetime
    step_s: int
    limits_kw: list[float]
    strategy: str = ""
    status: str = ""
    computed_at: datetime | None = None
    note: str = ""
    unmet_kwh: float = 0.0

    def encode(self) -> dict[str, Any]:
        """The stored JSON document."""
        return {
            "plan_id": self.plan_id, "site_id": self.site_id, "tx_ref": self.tx_ref,
            "start": self.start.isoformat(), "step_s": self.step_s, "limits_kw": self.limits_kw,
            "strategy": self.strategy, "status": self.status,
            "computed_at": self.computed_at.isoformat() if self.computed_at else None,
            "note": self.note, "unmet_kwh": self.unmet_kwh,
        }
