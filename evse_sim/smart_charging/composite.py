"""Profile stacking and the composite schedule of OCPP 2.0.1 (K01-K10), pure: data in, data out.

`ProfileStore` holds the profiles a station accepted and applies the SetChargingProfile
validation rules; `ProfileStore.composite` computes the composite schedule of an EVSE;
`ProfileStore.limit_w_at` is the limit in force at one instant (what the EVSE obeys).

Rules implemented (K01 unless noted), checked in `ProfileStore.set_profile`:

- ``ChargingStationMaxProfile`` only on evse 0; ``TxProfile`` never on evse 0 and only
  while a transaction is active on that EVSE, with a matching ``transactionId`` if given
  (K01.FR.09, FR.16); ``ChargingStationExternalConstraints`` cannot be set by the CSMS;
  an unknown EVSE id is rejected.
- A profile with the id of an installed one replaces it (FR.05). A ``TxProfile`` with the
  stack level of an installed TxProfile of the same transaction replaces it (FR.39), which
  is how a CSMS updates a running schedule (K16). For the other purposes, a second profile
  with the same purpose, stack level and EVSE whose validity overlaps is ``Rejected``
  (FR.06), and a ``TxDefaultProfile`` on evse 0 and one on an EVSE with the same stack
  level are mutually exclusive (FR.52/53).
- TxProfiles are deleted when their transaction ends.

Composite (K08): at every instant the highest-stack ``TxProfile`` of the running
transaction in force wins, else the highest-stack ``TxDefaultProfile`` (evse 0 or the
EVSE); the result is capped by the highest-stack ``ChargingStationMaxProfile`` in force and
by the EVSE hardware maximum. A profile is in force between validFrom and validTo, from
its schedule start (Absolute: ``startSchedule``; Relative: the transaction start, or the
window start without a transaction; Recurring: ``startSchedule`` repeated daily/weekly)
for ``duration`` seconds (forever, or until the next recurrence, when absent).
Limits are handled in watts internally; amperes convert with ``W = A * V * phases``
(`Electrical`), phases from the period's ``numberPhases`` or the EVSE's.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from evfleet.profile import (
    RECURRENCE_PERIOD_S,
    ChargingProfile,
    Electrical,
    Kind,
    ProfileError,
    Purpose,
    RateUnit,
    format_time,
)

INF = math.inf


@dataclass(frozen=True, slots=True)
class InstalledProfile:
    """A profile the station accepted, with the EVSE it was set on (0 = whole station)."""

    evse_id: int
    profile: ChargingProfile


@dataclass(frozen=True, slots=True)
class Segment:
    """A stretch of time [start_ts, end_ts) where one profile imposes `limit_w`."""

    start_ts: float
    end_ts: float
    limit_w: float
    phases: int
    min_rate_w: float


@dataclass(frozen=True, slots=True)
class CompositePeriod:
    """One period of a composite schedule: from `start_s` (offset from the schedule start)."""

    start_s: int
    limit_w: float
    phases: int
    min_rate_w: float = 0.0


@dataclass(frozen=True, slots=True)
class CompositeSchedule:
    """The composite schedule of an EVSE over a window."""

    evse_id: int
    start: datetime
    duration_s: int
    periods: tuple[CompositePeriod, ...]
    electrical: Electrical

    def limit_w_at(self, offset_s: float) -> float:
        """Limit [W] in force `offset_s` seconds after the start."""
        current = self.periods[0].limit_w
        for period in self.periods:
            if period.start_s > offset_s:
                break
            current = period.limit_w
        return current

    def to_ocpp(self, unit: RateUnit) -> dict[str, Any]:
        """CompositeScheduleType (camelCase) in the requested rate unit."""
        periods = []
        for p in self.periods:
            limit = p.limit_w if unit is RateUnit.W else self.electrical.w_to_a(p.limit_w, p.phases)
            periods.append({"startPeriod": p.start_s, "limit": round(limit, 1), "numberPhases": p.phases})
        return {
            "evseId": self.evse_id,
            "duration": self.duration_s,
            "scheduleStart": format_time(self.start),
            "chargingRateUnit": unit.value,
            "chargingSchedulePeriod": periods,
        }


@dataclass(frozen=True, slots=True)
class SetOutcome:
    """The answer to SetChargingProfile: accepted, or rejected with a reason."""

    accepted: bool
    reason_code: str = ""
    detail: str = ""
    replaced_ids: tuple[int, ...] = ()


def _ts(value: datetime | None, default: float) -> float:
    return default if value is None else value.timestamp()


def profile_segments(
    profile: ChargingProfile,
    electrical: Electrical,
    window_start_ts: float,
    window_end_ts: float,
    tx_start_ts: float | None,
) -> list[Segment]:
    """Stretches of [window_start_ts, window_end_ts) where `profile` is in force, with its limit [W]."""
    sched = profile.schedule
    lo = max(window_start_ts, _ts(profile.valid_from, -INF))
    hi = min(window_end_ts, _ts(profile.valid_to, INF))
    if hi <= lo:
        return []
    occurrences: list[tuple[float, float]] = []  # (anchor, occurrence end)
    if profile.kind is Kind.RECURRING:
        assert profile.recurrency is not None and sched.start_schedule is not None
        period_s = RECURRENCE_PERIOD_S[profile.recurrency]
        base = sched.start_schedule.timestamp()
        k = math.floor((lo - base) / period_s)
        k = max(k, 0)
        anchor = base + k * period_s
        while anchor < hi:
            length = period_s if sched.duration_s is None else min(sched.duration_s, period_s)
            occurrences.append((anchor, anchor + length))
            anchor += period_s
    else:
        if profile.kind is Kind.ABSOLUTE:
            assert sched.start_schedule is not None
            anchor = sched.start_schedule.timestamp()
        else:
            anchor = tx_start_ts if tx_start_ts is not None else window_start_ts
        end = INF if sched.duration_s is None else anchor + sched.duration_s
        occurrences.append((anchor, end))
    segments: list[Segment] = []
    min_rate = sched.min_charging_rate or 0.0
    for anchor, occ_end in occurrences:
        periods = sched.periods
        for i, period in enumerate(periods):
            start = anchor + period.start_period_s
            end = anchor + periods[i + 1].start_period_s if i + 1 < len(periods) else INF
            start, end = max(start, lo), min(end, occ_end, hi)
            if end <= start:
                continue
            phases = period.number_phases or electrical.phases
            if sched.rate_unit is RateUnit.W:
                limit_w, min_w = period.limit, min_rate
            else:
                limit_w = electrical.a_to_w(period.limit, phases)
                min_w = electrical.a_to_w(min_rate, phases)
            segments.append(Segment(start, end, limit_w, phases, min_w))
    return segments


def _top_at(stack: list[tuple[int, list[Segment]]], t: float) -> Segment | None:
    """The segment in force at `t` of the highest-stack profile (stack sorted high to low)."""
    for _level, segments in stack:
        for seg in segments:
            if seg.start_ts <= t < seg.end_ts:
                return seg
    return None


class ProfileStore:
    """Installed charging profiles of one station, with the K01 rules and the composite schedule."""

    __slots__ = ("evse_ids", "max_stack_level", "max_periods", "_profiles")

    def __init__(self, evse_ids: Iterable[int], max_stack_level: int = 100, max_periods: int = 1024) -> None:
        self.evse_ids = frozenset(evse_ids)
        self.max_stack_level = max_stack_level
        self.max_periods = max_periods
        self._profiles: dict[int, InstalledProfile] = {}

    def __len__(self) -> int:
        return len(self._profiles)

    def installed(self) -> list[InstalledProfile]:
        """Every installed profile, by id."""
        return [self._profiles[k] for k in sorted(self._profiles)]

    # --- K01 SetChargingProfile ----------------------------------------------------------------
    def check(
        self, evse_id: int, profile: ChargingProfile, active_tx: Mapping[int, str | None]
    ) -> tuple[int, ...]:
        """Validate `profile` for `evse_id`; return the ids it would replace; raise `ProfileError`."""
        if evse_id != 0 and evse_id not in self.evse_ids:
            raise ProfileError("UnknownEvse", f"no EVSE {evse_id}")
        if profile.stack_level > self.max_stack_level:
            raise ProfileError("InvalidStackLevel", f"stackLevel above {self.max_stack_level}")
        if any(len(s.periods) > self.max_periods for s in profile.schedules):
            raise ProfileError("TooManyPeriods", f"more than {self.max_periods} periods")
        purpose = profile.purpose
        if purpose is Purpose.EXTERNAL:
            raise ProfileError("InvalidProfile", "ChargingStationExternalConstraints cannot be set by a CSMS")
        if purpose is Purpose.STATION_MAX and evse_id != 0:
            raise ProfileError("InvalidEvse", "ChargingStationMaxProfile must be set on evse 0")
        replaced = [pid for pid in self._profiles if pid == profile.id]
        if purpose is Purpose.TX:
            if evse_id == 0:
                raise ProfileError("InvalidEvse", "a TxProfile must be set on an EVSE, not on evse 0")
            running = active_tx.get(evse_id)
            if running is None:
                raise ProfileError("TxNotFound", f"no transaction active on EVSE {evse_id}")
            if profile.transaction_id is not None and profile.transaction_id != running:
                raise ProfileError(
                    "TxNotFound", f"transaction {profile.transaction_id} is not active on EVSE {evse_id}"
                )
            for pid, inst in self._profiles.items():
                p = inst.profile
                if (
                    p.purpose is Purpose.TX
                    and inst.evse_id == evse_id
                    and p.stack_level == profile.stack_level
                    and pid != profile.id
                ):
                    replaced.append(pid)
            return tuple(replaced)
        for pid, inst in self._profiles.items():
            p = inst.profile
            if pid == profile.id or p.purpose is not purpose or p.stack_level != profile.stack_level:
                continue
            if inst.evse_id == evse_id and _overlap(p, profile):
                raise ProfileError(
                    "DuplicateProfile",
                    f"profile {pid} has the same purpose and stack level "
                    f"on EVSE {evse_id} with overlapping validity",
                )
            if purpose is Purpose.TX_DEFAULT and (inst.evse_id == 0) != (evse_id == 0):
                raise ProfileError(
                    "DuplicateProfile",
                    f"TxDefaultProfile {pid} has the same stack level "
                    f"on {'evse 0' if inst.evse_id == 0 else 'an EVSE'}",
                )
        return tuple(replaced)

    def set_profile(
        self, evse_id: int, profile: ChargingProfile, active_tx: Mapping[int, str | None]
    ) -> SetOutcome:
        """Install `profile` on `evse_id` if the K01 rules allow it; no change when rejected."""
        try:
            replaced = self.check(evse_id, profile, active_tx)
        except ProfileError as err:
            return SetOutcome(False, err.reason_code, err.detail)
        for pid in replaced:
            self._profiles.pop(pid, None)
        if profile.purpose is Purpose.TX and profile.transaction_id is None:
            running = active_tx.get(evse_id)
            profile = _with_tx(profile, running)
        self._profiles[profile.id] = InstalledProfile(evse_id, profile)
        return SetOutcome(True, replaced_ids=tuple(replaced))

    # --- K10 ClearChargingProfile, K09 GetChargingProfiles ---------------------------------------
    def clear(
        self,
        profile_id: int | None = None,
        evse_id: int | None = None,
        purpose: Purpose | None = None,
        stack_level: int | None = None,
    ) -> list[int]:
        """Remove matching profiles (an id alone matches only that id); return the removed ids."""
        if profile_id is not None:
            victims = [profile_id] if profile_id in self._profiles else []
        else:
            victims = [
                pid
                for pid, inst in self._profiles.items()
                if (evse_id is None or inst.evse_id == evse_id)
                and (purpose is None or inst.profile.purpose is purpose)
                and (stack_level is None or inst.profile.stack_level == stack_level)
            ]
        for pid in victims:
            del self._profiles[pid]
        return sorted(victims)

    def query(
        self,
        evse_id: int | None = None,
        purpose: Purpose | None = None,
        stack_level: int | None = None,
        ids: Sequence[int] | None = None,
    ) -> list[InstalledProfile]:
        """Profiles matching every given criterion (K09)."""
        return [
            inst
            for inst in self.installed()
            if (evse_id is None or inst.evse_id == evse_id)
            and (purpose is None or inst.profile.purpose is purpose)
            and (stack_level is None or inst.profile.stack_level == stack_level)
            and (not ids or inst.profile.id in ids)
        ]

    def end_transaction(self, evse_id: int) -> list[int]:
        """Delete the TxProfiles of `evse_id` when its transaction ends; return their ids."""
        return self.clear(evse_id=evse_id, purpose=Purpose.TX)

    def drop_expired(self, now: datetime) -> list[int]:
        """Delete profiles whose validTo has passed."""
        victims = [
            pid
            for pid, inst in self._profiles.items()
            if inst.profile.valid_to is not None and inst.profile.valid_to <= now
        ]
        for pid in victims:
            del self._profiles[pid]
        return victims

    # --- K08 composite schedule -------------------------------------------------------------------
    def _stacks(
        self,
        evse_id: int,
        electrical: Electrical,
        lo: float,
        hi: float,
        tx_id: str | None,
        tx_start_ts: float | None,
    ) -> tuple[list[tuple[int, list[Segment]]], ...]:
        tx: list[tuple[int, list[Segment]]] = []
        default: list[tuple[int, list[Segment]]] = []
        cap: list[tuple[int, list[Segment]]] = []
        for inst in self._profiles.values():
            p = inst.profile
            if p.purpose is Purpose.STATION_MAX or p.purpose is Purpose.EXTERNAL:
                if inst.evse_id not in (0, evse_id):
                    continue
                target = cap
            elif p.purpose is Purpose.TX_DEFAULT:
                if inst.evse_id not in (0, evse_id) or evse_id == 0:
                    continue
                target = default
            else:
                if inst.evse_id != evse_id or tx_id is None or p.transaction_id not in (None, tx_id):
                    continue
                target = tx
            # an EVSE-specific TxDefaultProfile sorts above an evse-0 one at equal stack level
            level = 2 * p.stack_level + (1 if inst.evse_id else 0)
            target.append((level, profile_segments(p, electrical, lo, hi, tx_start_ts)))
        for stack in (tx, default, cap):
            stack.sort(key=lambda item: -item[0])
        return tx, default, cap

    def composite(
        self,
        evse_id: int,
        start: datetime,
        duration_s: int,
        electrical: Electrical,
        hw_max_w: float,
        tx_id: str | None = None,
        tx_start: datetime | None = None,
    ) -> CompositeSchedule:
        """Composite schedule of `evse_id` over [start, start + duration_s), never above `hw_max_w`."""
        if duration_s <= 0:
            raise ValueError(f"duration_s must be positive, got {duration_s}")
        lo = start.timestamp()
        hi = lo + duration_s
        tx_start_ts = None if tx_start is None else tx_start.timestamp()
        tx, default, cap = self._stacks(evse_id, electrical, lo, hi, tx_id, tx_start_ts)
        cuts = {lo}
        for stack in (tx, default, cap):
            for _level, segments in stack:
                for seg in segments:
                    cuts.add(seg.start_ts)
                    cuts.add(seg.end_ts)
        points = sorted(c for c in cuts if lo <= c < hi)
        periods: list[CompositePeriod] = []
        for t in points:
            limit_w, phases, min_w = _limit_at(t, tx, default, cap, hw_max_w, electrical.phases)
            offset = int(math.floor(t - lo))
            if periods and (periods[-1].limit_w == limit_w and periods[-1].phases == phases):
                continue
            if periods and periods[-1].start_s == offset:
                periods[-1] = CompositePeriod(offset, limit_w, phases, min_w)
            else:
                periods.append(CompositePeriod(offset, limit_w, phases, min_w))
        return CompositeSchedule(evse_id, start, duration_s, tuple(periods), electrical)

    def limit_w_at(
        self,
        evse_id: int,
        when: datetime,
        electrical: Electrical,
        hw_max_w: float,
        tx_id: str | None = None,
        tx_start: datetime | None = None,
    ) -> tuple[float, float]:
        """(limit [W], minimum charging rate [W]) in force on `evse_id` at `when`."""
        t = when.timestamp()
        tx_start_ts = None if tx_start is None else tx_start.timestamp()
        tx, default, cap = self._stacks(evse_id, electrical, t, t + 1.0, tx_id, tx_start_ts)
        limit_w, _phases, min_w = _limit_at(t, tx, default, cap, hw_max_w, electrical.phases)
        return limit_w, min_w

    def station_cap_w_at(self, when: datetime, electrical: Electrical, hw_max_w: float) -> float:
        """Whole-station limit [W] (ChargingStationMaxProfile) in force at `when`."""
        return self.limit_w_at(0, when, electrical, hw_max_w)[0]


def _limit_at(
    t: float,
    tx: list[tuple[int, list[Segment]]],
    default: list[tuple[int, list[Segment]]],
    cap: list[tuple[int, list[Segment]]],
    hw_max_w: float,
    hw_phases: int,
) -> tuple[float, int, float]:
    limit_w, phases, min_w = hw_max_w, hw_phases, 0.0
    chosen = _top_at(tx, t) or _top_at(default, t)
    if chosen is not None and chosen.limit_w < limit_w:
        limit_w, phases = chosen.limit_w, chosen.phases
    if chosen is not None:
        min_w = chosen.min_rate_w
    capping = _top_at(cap, t)
    if capping is not None and capping.limit_w < limit_w:
        limit_w, phases = capping.limit_w, capping.phases
    return limit_w, phases, min_w


def _overlap(a: ChargingProfile, b: ChargingProfile) -> bool:
    a_lo, a_hi = _ts(a.valid_from, -INF), _ts(a.valid_to, INF)
    b_lo, b_hi = _ts(b.valid_from, -INF), _ts(b.valid_to, INF)
    return a_lo < b_hi and b_lo < a_hi


def _with_tx(profile: ChargingProfile, tx_id: str | None) -> ChargingProfile:
    return replace(profile, transaction_id=tx_id)


def share_station_cap(demands_w: Mapping[int, float], cap_w: float) -> dict[int, float]:
    """Split a whole-station cap [W] over EVSE demands [W] proportionally; never above a demand."""
    total = sum(max(0.0, d) for d in demands_w.values())
    if total <= cap_w or total <= 0:
        return {k: max(0.0, d) for k, d in demands_w.items()}
    scale = max(0.0, cap_w) / total
    return {k: max(0.0, d) * scale for k, d in demands_w.items()}
