"""OCPP 2.0.1 charging profiles as plain, typed values, and the A <-> W conversion (no I/O).

The one `ChargingProfile` value type of evfleet. `ChargingProfile.from_ocpp` parses the snake_case
payload the `ocpp` library hands to a handler (or a camelCase one, both are accepted) and `to_ocpp`
renders the camelCase JSON object of the spec. Invalid shapes raise `ProfileError` with the reason,
which a station turns into a `Rejected` answer with a `statusInfo`.

Unit conversion (one formula for every package): a limit in ``A`` is a per-phase current, so
``W = A x voltage_v x phases`` and ``A = W / (voltage_v x phases)``; ``phases`` below 1 counts as 1.
`Electrical` carries an EVSE's voltage and phases; `limit_to_w` / `w_to_limit` convert a limit in
either unit. The defaults (`DEFAULT_VOLTAGE_V` 230 V per phase, `DEFAULT_PHASES` 3) are the ones every
package used before they shared this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from evfleet.isotime import IsoTimeError, format_iso_z, parse_iso

DEFAULT_VOLTAGE_V = 230.0
"""Nominal per-phase voltage when an EVSE did not report one."""
DEFAULT_PHASES = 3
"""Phases when neither the period nor the EVSE says."""


class ProfileError(ValueError):
    """A charging profile is malformed or breaks a K01 rule; `reason_code` goes into statusInfo."""

    def __init__(self, reason_code: str, detail: str) -> None:
        super().__init__(f"{reason_code}: {detail}")
        self.reason_code = reason_code
        self.detail = detail


class Purpose(StrEnum):
    """chargingProfilePurpose."""

    STATION_MAX = "ChargingStationMaxProfile"
    TX_DEFAULT = "TxDefaultProfile"
    TX = "TxProfile"
    EXTERNAL = "ChargingStationExternalConstraints"


class Kind(StrEnum):
    """chargingProfileKind."""

    ABSOLUTE = "Absolute"
    RECURRING = "Recurring"
    RELATIVE = "Relative"


class Recurrency(StrEnum):
    """recurrencyKind."""

    DAILY = "Daily"
    WEEKLY = "Weekly"


class RateUnit(StrEnum):
    """chargingRateUnit: amperes per phase or watts."""

    A = "A"
    W = "W"


RECURRENCE_PERIOD_S = {Recurrency.DAILY: 86_400, Recurrency.WEEKLY: 7 * 86_400}


def parse_time(value: str | datetime | None) -> datetime | None:
    """ISO 8601 (``Z`` allowed) to an aware UTC datetime; None stays None."""
    if value is None or isinstance(value, datetime):
        if isinstance(value, datetime) and value.tzinfo is None:
            raise ProfileError("InvalidValue", f"naive datetime {value!r}")
        return value
    try:
        return parse_iso(value)
    except IsoTimeError as err:
        raise ProfileError("InvalidValue", f"not an ISO 8601 time: {value!r}") from err


def format_time(value: datetime) -> str:
    """Aware datetime to the ISO 8601 form used on the wire (UTC, ``Z``)."""
    return format_iso_z(value)


def a_to_w(current_a: float, phases: int | None = None, voltage_v: float = DEFAULT_VOLTAGE_V) -> float:
    """Per-phase current [A] to power [W]: ``A x voltage_v x phases`` (None: `DEFAULT_PHASES`)."""
    return current_a * voltage_v * max(1, DEFAULT_PHASES if phases is None else phases)


def w_to_a(power_w: float, phases: int | None = None, voltage_v: float = DEFAULT_VOLTAGE_V) -> float:
    """Power [W] to per-phase current [A]: ``W / (voltage_v x phases)`` (None: `DEFAULT_PHASES`)."""
    return power_w / (voltage_v * max(1, DEFAULT_PHASES if phases is None else phases))


def limit_to_w(limit: float, unit: str, phases: int | None = None,
               voltage_v: float = DEFAULT_VOLTAGE_V) -> float:
    """A limit in `unit` (``A`` per phase or ``W``) in watts."""
    return a_to_w(limit, phases, voltage_v) if unit == RateUnit.A else float(limit)


def w_to_limit(power_w: float, unit: str, phases: int | None = None,
               voltage_v: float = DEFAULT_VOLTAGE_V) -> float:
    """A power in watts as a limit in `unit` (``A`` per phase or ``W``), unrounded."""
    return w_to_a(power_w, phases, voltage_v) if unit == RateUnit.A else float(power_w)


@dataclass(frozen=True, slots=True)
class Electrical:
    """How an EVSE converts amperes to watts: per-phase voltage and the phases it uses."""

    voltage_v: float = DEFAULT_VOLTAGE_V
    phases: int = DEFAULT_PHASES

    def w_per_a(self) -> float:
        """Watts per ampere of per-phase current limit."""
        return self.voltage_v * max(1, self.phases)

    def a_to_w(self, current_a: float, phases: int | None = None) -> float:
        """Per-phase current [A] to power [W] (a period's `phases`, else the EVSE's)."""
        return a_to_w(current_a, phases or self.phases, self.voltage_v)

    def w_to_a(self, power_w: float, phases: int | None = None) -> float:
        """Power [W] to per-phase current [A] (a period's `phases`, else the EVSE's)."""
        return w_to_a(power_w, phases or self.phases, self.voltage_v)

    def limit_to_w(self, limit: float, unit: str, phases: int | None = None) -> float:
        """A limit in `unit` in watts (a period's `phases`, else the EVSE's)."""
        return limit_to_w(limit, unit, phases or self.phases, self.voltage_v)


def _get(data: dict[str, Any], snake: str, camel: str, default: Any = None) -> Any:
    if snake in data:
        return data[snake]
    return data.get(camel, default)


@dataclass(frozen=True, slots=True)
class SchedulePeriod:
    """chargingSchedulePeriod: `limit` in the schedule's unit from `start_period_s`."""

    start_period_s: int
    limit: float
    number_phases: int | None = None

    def to_ocpp(self) -> dict[str, Any]:
        """camelCase JSON object."""
        out: dict[str, Any] = {"startPeriod": self.start_period_s, "limit": round(self.limit, 1)}
        if self.number_phases is not None:
            out["numberPhases"] = self.number_phases
        return out


@dataclass(frozen=True, slots=True)
class ChargingSchedule:
    """chargingSchedule: periods in `rate_unit`, an optional start and duration."""

    id: int
    rate_unit: RateUnit
    periods: tuple[SchedulePeriod, ...]
    start_schedule: datetime | None = None
    duration_s: int | None = None
    min_charging_rate: float | None = None
    sales_tariff: dict[str, Any] | None = field(default=None, compare=False)  # kept for ISO 15118 (K15)

    @classmethod
    def from_ocpp(cls, data: dict[str, Any]) -> ChargingSchedule:
        """Parse a chargingSchedule object (snake_case or camelCase)."""
        raw_periods = _get(data, "charging_schedule_period", "chargingSchedulePeriod") or []
        if not raw_periods:
            raise ProfileError("InvalidSchedule", "chargingSchedulePeriod is empty")
        periods = tuple(
            SchedulePeriod(
                start_period_s=int(_get(p, "start_period", "startPeriod")),
                limit=float(p["limit"]),
                number_phases=_get(p, "number_phases", "numberPhases"),
            )
            for p in raw_periods
        )
        if periods[0].start_period_s != 0:
            raise ProfileError("InvalidSchedule", "the first period must start at 0")
        starts = [p.start_period_s for p in periods]
        if any(b <= a for a, b in zip(starts, starts[1:], strict=False)):
            raise ProfileError("InvalidSchedule", "startPeriod values must be strictly increasing")
        if any(p.limit < 0 for p in periods):
            raise ProfileError("InvalidSchedule", "limits must be >= 0")
        if any(p.number_phases is not None and p.number_phases not in (1, 2, 3) for p in periods):
            raise ProfileError("InvalidSchedule", "numberPhases must be 1, 2 or 3")
        try:
            unit = RateUnit(_get(data, "charging_rate_unit", "chargingRateUnit"))
        except ValueError as err:
            raise ProfileError("InvalidValue", "chargingRateUnit must be A or W") from err
        duration = _get(data, "duration", "duration")
        if duration is not None and int(duration) <= 0:
            raise ProfileError("InvalidSchedule", "duration must be positive")
        min_rate = _get(data, "min_charging_rate", "minChargingRate")
        return cls(
            id=int(data.get("id", 0)),
            rate_unit=unit,
            periods=periods,
            start_schedule=parse_time(_get(data, "start_schedule", "startSchedule")),
            duration_s=None if duration is None else int(duration),
            min_charging_rate=None if min_rate is None else float(min_rate),
            sales_tariff=_camel_tariff(_get(data, "sales_tariff", "salesTariff")),
        )

    def to_ocpp(self) -> dict[str, Any]:
        """camelCase JSON object."""
        out: dict[str, Any] = {
            "id": self.id,
            "chargingRateUnit": self.rate_unit.value,
            "chargingSchedulePeriod": [p.to_ocpp() for p in self.periods],
        }
        if self.start_schedule is not None:
            out["startSchedule"] = format_time(self.start_schedule)
        if self.duration_s is not None:
            out["duration"] = self.duration_s
        if self.min_charging_rate is not None:
            out["minChargingRate"] = round(self.min_charging_rate, 1)
        if self.sales_tariff is not None:
            out["salesTariff"] = self.sales_tariff
        return out


@dataclass(frozen=True, slots=True)
class ChargingProfile:
    """chargingProfile (the first chargingSchedule is the one applied; OCPP allows up to 3 for 15118)."""

    id: int
    stack_level: int
    purpose: Purpose
    kind: Kind
    schedules: tuple[ChargingSchedule, ...]
    recurrency: Recurrency | None = None
    valid_from: datetime | None = None
    valid_to: datetime | None = None
    transaction_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def schedule(self) -> ChargingSchedule:
        """The schedule the station applies."""
        return self.schedules[0]

    @classmethod
    def from_ocpp(cls, data: dict[str, Any]) -> ChargingProfile:
        """Parse and check a chargingProfile object; raises `ProfileError`."""
        try:
            purpose = Purpose(_get(data, "charging_profile_purpose", "chargingProfilePurpose"))
            kind = Kind(_get(data, "charging_profile_kind", "chargingProfileKind"))
            rec_raw = _get(data, "recurrency_kind", "recurrencyKind")
            recurrency = None if rec_raw is None else Recurrency(rec_raw)
        except ValueError as err:
            raise ProfileError("InvalidValue", str(err)) from err
        raw_schedules = _get(data, "charging_schedule", "chargingSchedule") or []
        if isinstance(raw_schedules, dict):
            raw_schedules = [raw_schedules]
        if not raw_schedules or len(raw_schedules) > 3:
            raise ProfileError("InvalidSchedule", "a profile needs 1 to 3 chargingSchedule entries")
        schedules = tuple(ChargingSchedule.from_ocpp(s) for s in raw_schedules)
        stack_level = int(_get(data, "stack_level", "stackLevel"))
        if stack_level < 0:
            raise ProfileError("InvalidValue", "stackLevel must be >= 0")
        profile = cls(
            id=int(data["id"]),
            stack_level=stack_level,
            purpose=purpose,
            kind=kind,
            schedules=schedules,
            recurrency=recurrency,
            valid_from=parse_time(_get(data, "valid_from", "validFrom")),
            valid_to=parse_time(_get(data, "valid_to", "validTo")),
            transaction_id=_get(data, "transaction_id", "transactionId"),
        )
        profile.check_shape()
        return profile

    def check_shape(self) -> None:
        """Rules that depend on the profile alone (kind, recurrency, validity, transactionId)."""
        sched = self.schedule
        if self.kind is Kind.RECURRING:
            if self.recurrency is None:
                raise ProfileError("InvalidSchedule", "a Recurring profile needs recurrencyKind")
            if sched.start_schedule is None:
                raise ProfileError("InvalidSchedule", "a Recurring profile needs startSchedule")
            period = RECURRENCE_PERIOD_S[self.recurrency]
            if sched.duration_s is not None and sched.duration_s > period:
                raise ProfileError("InvalidSchedule", "duration exceeds the recurrence period")
        elif self.recurrency is not None:
            raise ProfileError("InvalidSchedule", "recurrencyKind is only allowed on Recurring profiles")
        if self.kind is Kind.ABSOLUTE and sched.start_schedule is None:
            raise ProfileError("InvalidSchedule", "an Absolute profile needs startSchedule")
        if self.kind is Kind.RELATIVE and sched.start_schedule is not None:
            raise ProfileError("InvalidSchedule", "a Relative profile must not have startSchedule")
        if self.valid_from and self.valid_to and self.valid_to <= self.valid_from:
            raise ProfileError("InvalidValue", "validTo must be after validFrom")
        if self.transaction_id is not None and self.purpose is not Purpose.TX:
            raise ProfileError("InvalidValue", "transactionId is only allowed on a TxProfile")
        if self.purpose is Purpose.TX and self.kind is Kind.RECURRING:
            raise ProfileError("InvalidSchedule", "a TxProfile cannot be Recurring")

    def to_ocpp(self) -> dict[str, Any]:
        """camelCase JSON object, as sent in ReportChargingProfiles."""
        out: dict[str, Any] = {
            "id": self.id,
            "stackLevel": self.stack_level,
            "chargingProfilePurpose": self.purpose.value,
            "chargingProfileKind": self.kind.value,
            "chargingSchedule": [s.to_ocpp() for s in self.schedules],
        }
        if self.recurrency is not None:
            out["recurrencyKind"] = self.recurrency.value
        if self.valid_from is not None:
            out["validFrom"] = format_time(self.valid_from)
        if self.valid_to is not None:
            out["validTo"] = format_time(self.valid_to)
        if self.transaction_id is not None:
            out["transactionId"] = self.transaction_id
        return out


def _camel_tariff(raw: Any) -> dict[str, Any] | None:
    """salesTariff as camelCase JSON (the ocpp library hands handlers snake_case keys)."""
    if not raw:
        return None
    from ocpp.charge_point import snake_to_camel_case

    converted: dict[str, Any] = snake_to_camel_case(raw)
    return converted
