"""One EVSE as the smart-charging service sees it (`EvseInfo`), decoded from the store in one
place (`decode_evse`), and the EV's own plan (K17) as a series. Pure, no I/O."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from csms.smart_charging import budget, planner
from csms.smart_charging.planner import Series
from evfleet.profile import a_to_w, limit_to_w
from evfleet.records import ChargingNeeds, EvseRecord
from evfleet.store.port import StoredEvse
from evfleet.txprofile import EvLimits, EvseElectrical, parse_ts


@dataclass(slots=True)
class EvseInfo:
    """What the service needs to know about one EVSE right now.

    Slotted: a whole-site pass holds one per EVSE (20,000 on the load harness's site), and each
    instance with a `__dict__` was two objects for a young garbage collection to walk, not one
    (issue 14). `record` and `needs` are the store's parsed documents, shared with the store's
    read memo and every other read of the same stored text: read-only (a caller that changes
    what an EVSE holds assigns a new document, as `sending.send` does)."""

    station_id: str
    evse_id: int
    online: bool
    steerable: bool
    electrical: EvseElectrical
    transaction_id: str
    """The running transaction's OCPP transactionId ("" if none): what profiles carry."""
    record: dict[str, Any] | None
    needs: dict[str, Any] | None
    default_w: float | None = None
    """Limit of the TxDefaultProfile the station accepted (None = none installed)."""
    tx_ref: str = ""
    """The running transaction's `tx_ref` ("" if none): its identity in plans and records."""
    metered_max_w: float = 0.0
    """Highest power metered on the EVSE (`metered_max_w`)."""
    noncompliant_w: float | None = None
    """What the EVSE draws while it is non-compliant (`noncompliant_w`; None = compliant)."""
    refusals: int = 0
    retry_after_s: float = 0.0
    """Unix time from which a refusing (steerable=0) EVSE may be tried again."""
    caps_w: tuple[float, float] | None = field(default=None, repr=False, compare=False)
    """`ev_caps_w`, once computed: a function of `electrical`, `needs` and `tx_ref`, which are set
    when the record is decoded and never changed after (a decode memo hit carries it)."""
    default_at_s: float | None = None
    """When the station accepted its TxDefaultProfile (`default_at`, unix s; None if unknown)."""
    booted_at_s: float | None = None
    """When the station last booted (`booted_at`, unix s, written with its BootNotification; None
    if it never booted since it reported this EVSE)."""
    out_series: Series | None = None
    """A single-EVSE call to it was out when it was read (`aside`): it counts at least this,
    max(before, the profile), until the answer is recorded."""

    parsed: list[Any] = field(init=False, repr=False, compare=False)
    """[a record document, its `applied_series_w` as a series] (`_record_series`: parsed once per
    document, which is held, so compared by identity); shared by a decode and its clones
    (`clone`), so the decode memo's clones of the next passes find it parsed."""

    key: str = field(init=False, repr=False, compare=False)
    """`sid/eid` (set once from the ids, which never change; a decode memo's clone carries it)."""
    ident: tuple[str, int] = field(init=False, repr=False, compare=False)
    """(station id, EVSE id): its key in the store (built once: a whole-site pass asks it of every
    EVSE several times)."""

    def __post_init__(self) -> None:
        self.key = f"{self.station_id}/{self.evse_id}"
        self.ident = (self.station_id, self.evse_id)
        self.parsed = [None, None]

    def clone(self) -> EvseInfo:
        """A shallow copy (what `copy.copy` makes, without its generic protocol: a whole-site read
        clones every EVSE from its decode memo). Every slot is listed here (a test checks it)."""
        new = object.__new__(EvseInfo)
        new.station_id, new.evse_id, new.online, new.steerable = (
            self.station_id, self.evse_id, self.online, self.steerable)
        new.electrical, new.transaction_id, new.record, new.needs = (
            self.electrical, self.transaction_id, self.record, self.needs)
        new.default_w, new.tx_ref, new.metered_max_w, new.noncompliant_w = (
            self.default_w, self.tx_ref, self.metered_max_w, self.noncompliant_w)
        new.refusals, new.retry_after_s, new.caps_w, new.default_at_s = (
            self.refusals, self.retry_after_s, self.caps_w, self.default_at_s)
        new.booted_at_s = self.booted_at_s
        new.out_series, new.parsed = self.out_series, self.parsed
        new.key, new.ident = self.key, self.ident
        return new

    def applied(self, now_s: float) -> Series:
        """The series counted against the site limit now (`budget.counted_series`; at least
        `out_series` while a call to it is out)."""
        return self._with_out(budget.counted_series(self._budget_state(self.noncompliant_w), now_s), now_s)

    def allowed(self, now_s: float) -> Series:
        """What the EVSE is allowed to draw (as `applied`, ignoring its non-compliance)."""
        return self._with_out(budget.counted_series(self._budget_state(None), now_s), now_s)

    def _with_out(self, series: Series, now_s: float) -> Series:
        if self.out_series is None:
            return series
        return planner.pointwise(series, self.out_series, now_s, "max")

    def _budget_state(self, noncompliant_w: float | None) -> budget.EvseBudgetState:
        rec = self.record or {}
        record_tx = str(rec.get("tx_ref") or "")
        # the record's series counts only for this session (`budget.counted_series`): parsed then only
        series = self._record_series() if record_tx == self.tx_ref else None
        return budget.EvseBudgetState(
            transaction_id=self.tx_ref, online=self.online, steerable=self.steerable,
            max_power_w=self.electrical.max_power_w, metered_max_w=self.metered_max_w,
            record_tx=record_tx, record_series=series,
            default_w=self.default_w, noncompliant_w=noncompliant_w)

    def _record_series(self) -> Series | None:
        """`record`'s `applied_series_w` as a series (None if none), parsed once per record document
        and carried by the decode memo's clones: a whole-site pass asks it of every EVSE, and the
        document is read-only (class doc). Callers never change a series in place
        (`budget.counted_series` hands this one out)."""
        rec = self.record
        if not rec:
            return None
        parsed = self.parsed
        if rec is parsed[0]:
            series: Series | None = parsed[1]
            return series
        raw = rec.get("applied_series_w")
        series = [(float(t), float(v)) for t, v in raw] if raw else None
        if parsed[0] is None:  # this decode's first: its clones share it
            parsed[0], parsed[1] = rec, series
        else:  # another document (assigned after an answer): this EVSE's own from now on
            self.parsed = [rec, series]
        return series

    def limit_since_s(self) -> float | None:
        """When the limit it is allowed now was answered (its TxProfile's answer, else its accepted
        default's while a session runs); None when unknown or at its maximum. A metered reading
        stored before then shows nothing about that limit (`watchdog.tick`)."""
        if self.has_profile():
            answered = (self.record or {}).get("answered_at")
            try:
                return parse_ts(str(answered)).timestamp() if answered else None
            except ValueError:
                return None
        return self.default_at_s if self.tx_ref and self.default_w is not None else None

    def booted_since_default(self) -> bool:
        """The station booted after it last accepted its TxDefaultProfile (or it has none known to
        be accepted since): it may have lost it, so it gets it again (`defaults.needs_default`).
        Read from the stored EVSE, so the node that takes a site over finds boots it never saw."""
        booted = self.booted_at_s
        return booted is not None and (self.default_at_s is None or self.default_at_s <= booted)

    def has_profile(self) -> bool:
        """An accepted profile for the running transaction exists."""
        rec = self.record
        return bool(rec and rec.get("tx_ref") == self.tx_ref and rec.get("applied_series_w"))

    def ev_limits(self) -> EvLimits:
        """The EV's limits from its charging needs (this session's only)."""
        needs = ChargingNeeds.decode(self.needs) if self.needs else None
        return needs.ev_limits() if needs is not None and needs.tx_ref == self.tx_ref else EvLimits()


def _finite(value: Any, default: float = 0.0) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return default
    return v if math.isfinite(v) else default


def ev_caps_w(info: EvseInfo) -> tuple[float, float]:
    """(cap, minimum) power of a session from the EVSE and the EV's needs (garbage ignored);
    computed once per decode (`EvseInfo.caps_w`: a whole-site share asks it of every session)."""
    if info.caps_w is not None:
        return info.caps_w
    ev = info.ev_limits()
    w_per_a = a_to_w(1.0, info.electrical.phases, info.electrical.voltage_v)
    cap = info.electrical.max_power_w
    if ev.max_current_a and _finite(ev.max_current_a) > 0:
        cap = min(cap, _finite(ev.max_current_a) * w_per_a)
    if ev.max_power_w and _finite(ev.max_power_w) > 0:
        cap = min(cap, _finite(ev.max_power_w))
    low = 0.0
    if ev.min_current_a:
        low = _finite(ev.min_current_a) * w_per_a
    elif ev.min_power_w:
        low = _finite(ev.min_power_w)
    info.caps_w = (max(0.0, cap), max(0.0, low))
    return info.caps_w


def dc_session(needs_doc: Any, tx_ref: str) -> bool:
    """The running session's EV asked for DC (NotifyEVChargingNeeds requestedEnergyTransfer "DC").

    Its profiles then go in W whatever the EVSE record says: amperes of a DC EVSE depend on the
    battery voltage, and an EVSE whose device model the csms has not read yet reads as 230 V AC
    (a 400 V DC EVSE would then draw 1.74x the power counted against the site limit)."""
    needs = ChargingNeeds.decode(needs_doc) if needs_doc else None
    if needs is None or not tx_ref or needs.tx_ref != tx_ref:
        return False
    return str((needs.raw or {}).get("requested_energy_transfer") or "") == "DC"


def decode_evse(rec: StoredEvse) -> EvseInfo:
    """The store's record of one EVSE -> `EvseInfo` (the EVSE hash through `evfleet.records`, the one
    decoder with the documented defaults)."""
    h = EvseRecord.decode(rec.evse)
    rate_unit = "W" if dc_session(rec.needs, h.tx_ref) else h.rate_unit
    return EvseInfo(
        station_id=rec.station_id, evse_id=rec.evse_id, online=rec.station.get("online") == "1",
        steerable=h.steerable,
        electrical=EvseElectrical(rate_unit=rate_unit, phases=h.phases, voltage_v=h.voltage_v,
                                  max_power_w=h.max_power_w),
        transaction_id=h.transaction_id, record=rec.profile, needs=rec.needs, default_w=h.default_limit_w,
        tx_ref=h.tx_ref, metered_max_w=h.metered_max_w, noncompliant_w=h.noncompliant_w,
        refusals=h.refusals, retry_after_s=h.retry_after_s,
        default_at_s=_float_or_none(rec.evse.get("default_at")),
        booted_at_s=_float_or_none(rec.evse.get("booted_at")))


def _float_or_none(raw: str | None) -> float | None:
    try:
        value = float(raw) if raw else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def planned_before(data: Mapping[str, Any], sent_at: Any) -> bool:
    """The EV's plan (its time base: when the station offered the schedule) predates our profile."""
    base = data.get("time_base") or (data.get("schedule") or {}).get("startSchedule")
    if not base or not sent_at:
        return False
    try:
        return parse_ts(str(base)).timestamp() < parse_ts(str(sent_at)).timestamp()
    except ValueError:
        return False


def planned_in_flight(data: Mapping[str, Any], sent_at: Any, answered_at: Any) -> bool:
    """The EV's plan (time base) was made while our profile was on its way: sent, not yet answered.

    The station may then still have offered the previous profile's schedule (it applies ours only
    when the SetChargingProfile reaches it, and renegotiates onto it then)."""
    base = data.get("time_base") or (data.get("schedule") or {}).get("startSchedule")
    if not base or not sent_at or not answered_at:
        return False
    try:
        t = parse_ts(str(base)).timestamp()
        return parse_ts(str(sent_at)).timestamp() <= t <= parse_ts(str(answered_at)).timestamp()
    except ValueError:
        return False


def ev_plan_series(data: Mapping[str, Any], evse: EvseElectrical) -> Series | None:
    """The EV's own plan (NotifyEVChargingSchedule record) as an absolute series in W."""
    schedule = data.get("schedule") or {}
    periods = schedule.get("chargingSchedulePeriod") or []
    if not periods:
        return None
    base = schedule.get("startSchedule") or data.get("time_base")
    if not base:
        return None
    t0 = parse_ts(str(base)).timestamp()
    unit = schedule.get("chargingRateUnit", "W")
    out: Series = []
    for p in periods:
        limit = float(p["limit"])
        watts = limit_to_w(limit, unit, p.get("numberPhases") or evse.phases, evse.voltage_v)
        out.append((t0 + int(p["startPeriod"]), watts))
    return sorted(out)
