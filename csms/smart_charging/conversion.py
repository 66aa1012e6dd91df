"""Limits -> SetChargingProfile payloads and station answers -> what counts (pure, no I/O).

- `build`: a TxProfile for one EVSE from kW steps; never fails because of the EV's data (it
  falls back to the EVSE's safe minimum);
- `step_payload`: an intermediate (decreasing) step never above its series at any instant;
- `default_payload`: the TxDefaultProfile of the reservation;
- `abs_series`: a payload as the absolute series (W) it allows;
- `outcome`: (accepted, steerable, series to count) for the station's answer.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from prometheus_client import Counter

from csms.command_types import CommandReply, Outcome
from csms.smart_charging import planner
from csms.smart_charging.evse import EvseInfo
from csms.smart_charging.planner import Series
from evfleet.txprofile import (
    EvLimits,
    EvseElectrical,
    ProfileError,
    build_tx_profile,
    floor1,
    iso_z,
    parse_ts,
    power_to_unit,
    profile_series_w,
    stable_profile_id,
)

log = logging.getLogger(__name__)

PROFILE_BUILD_FAILURES = Counter(
    "evfleet_smart_charging_profile_build_failures_total",
    "Profiles that could not be built from an EV's charging needs (the EVSE got its safe minimum)")

TX_RACE_REASONS = {"TxNotFound", "UnknownTransaction"}
"""Rejection reasons that mean "that transaction is gone", not "this station refuses profiles"."""
DEFAULT_PROFILE_ID_OFFSET = 0x40000000
"""TxDefaultProfile ids are the EVSE's stable id + this (never equal to its TxProfile id)."""


def abs_series(payload: Mapping[str, Any], electrical: EvseElectrical) -> Series:
    """The absolute series (posix s, W) a SetChargingProfile payload allows."""
    start, periods = profile_series_w(dict(payload), electrical.voltage_v, electrical.phases)
    t0 = start.timestamp()
    return [(t0 + s, w) for s, w in periods]


def build(info: EvseInfo, txid: str, start: datetime, step_s: int, limits_kw: list[float],
          profile_id: int | None = None, prices: list[float] | None = None,
          now: datetime | None = None) -> dict[str, Any]:
    """A TxProfile for one EVSE; never fails because of the EV's data.

    If the EV's charging needs make the profile impossible to build (e.g. maxScheduleTuples
    -1, evMinCurrent 1e308), the EVSE gets its safe minimum instead: the lowest of the
    limits, without the EV's parameters, logged with the reason. Only a missing transaction
    id raises (ProfileError).
    """
    pid = profile_id if profile_id is not None else stable_profile_id(info.station_id, info.evse_id)
    try:
        return build_tx_profile(evse_id=info.evse_id, transaction_id=txid, start=start, step_s=step_s,
                                limits_kw=limits_kw, evse=info.electrical, ev=info.ev_limits(),
                                profile_id=pid, prices=prices, now=now)
    except ProfileError:
        if not txid:
            raise
        reason = "profile error"
    except (ValueError, OverflowError, TypeError, ArithmeticError) as err:
        reason = repr(err)
    safe_kw = max(0.0, min([float(v) for v in limits_kw if v == v] or [0.0]))
    log.warning("%s tx %s: cannot build a profile from the EV's charging needs (%s); "
                "sending its safe minimum %.1f kW without them", info.key, txid, reason, safe_kw)
    PROFILE_BUILD_FAILURES.inc()
    return build_tx_profile(evse_id=info.evse_id, transaction_id=txid, start=start, step_s=step_s,
                            limits_kw=[safe_kw], evse=info.electrical, ev=EvLimits(), profile_id=pid)


def step_payload(info: EvseInfo, series: Series, final_payload: dict[str, Any],
                 now_s: float) -> dict[str, Any]:
    """A TxProfile for an intermediate (decreasing) step, never above `series` at any instant."""
    profile = final_payload["chargingProfile"]
    start = parse_ts(profile["chargingSchedule"][0]["startSchedule"])
    step_s = 60
    end_s = max([t for t, _ in series] + [now_s]) + step_s
    limits_kw = [w / 1000.0 for w in planner.series_to_steps(series, start.timestamp(), step_s, end_s)]
    now = datetime.fromtimestamp(now_s, start.tzinfo)
    payload = build(info, profile["transactionId"], start, step_s, limits_kw, profile_id=profile["id"],
                    now=now)
    if planner.is_below(abs_series(payload, info.electrical), series, now_s):
        return payload
    # compression to maxScheduleTuples may raise periods (it keeps energy): a step must not
    low_kw = min(planner.sample(series, planner.grid([series], now_s))) / 1000.0
    log.warning("%s: the stepped profile exceeds its series after compression; sending %.1f kW flat",
                info.key, low_kw)
    return build(info, profile["transactionId"], now, 900, [low_kw], profile_id=profile["id"])


def default_payload(info: EvseInfo, limit_w: float, now: datetime) -> dict[str, Any]:
    """The EVSE's TxDefaultProfile (stack level 0, one period at `limit_w`)."""
    unit_limit = power_to_unit(limit_w, info.electrical, EvLimits())
    pid = stable_profile_id(info.station_id, info.evse_id) + DEFAULT_PROFILE_ID_OFFSET
    period: dict[str, Any] = {"startPeriod": 0, "limit": floor1(unit_limit)}
    if info.electrical.rate_unit == "A":
        period["numberPhases"] = info.electrical.phases
    return {"evseId": info.evse_id, "chargingProfile": {
        "id": pid, "stackLevel": 0, "chargingProfilePurpose": "TxDefaultProfile",
        "chargingProfileKind": "Absolute", "chargingSchedule": [{
            "id": pid, "startSchedule": iso_z(now),
            "chargingRateUnit": info.electrical.rate_unit, "chargingSchedulePeriod": [period]}]}}


def outcome(reply: CommandReply, old: Series, new: Series, now_s: float) -> tuple[bool, bool, Series]:
    """(accepted, steerable, series to count) for a station's answer.

    Rejected (other than for a transaction that just ended), NotImplemented, NotSupported
    or any other CALLERROR: the station does not obey profiles (steerable=False; budgeted at
    its metered maximum, tried again after a backoff or a reboot). A timeout counts
    max(old, new): the station may have applied it.
    """
    if reply.ok:
        payload = reply.payload or {}
        if payload.get("status") == "Accepted":
            return True, True, new
        reason = str((payload.get("statusInfo") or {}).get("reasonCode") or "")
        return False, reason in TX_RACE_REASONS, old
    if reply.outcome is Outcome.CALL_ERROR:
        return False, False, old
    if reply.outcome is Outcome.TIMEOUT:  # unknown whether it applied: count the higher one
        return False, True, planner.pointwise(old, new, now_s, "max")
    return False, True, old


def answer_status(reply: CommandReply) -> Any:
    """The station's status (as it sent it), or the outcome when it did not answer."""
    return (reply.payload or {}).get("status") if reply.ok else reply.outcome.value
