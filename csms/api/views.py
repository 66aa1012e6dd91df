"""Pure views: raw Redis hash/JSON values (strings) in, API documents out. No I/O here."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from evfleet.isotime import parse_iso_or_none
from evfleet.jsonsafe import load_stored
from evfleet.keys import parse_tx_ref
from evfleet.records import SitePlan

# Overall station status, worst first: the grid colour of a station.
STATUS_ORDER = ("Offline", "Faulted", "Charging", "Occupied", "Reserved", "Unavailable", "Available",
                "Unknown")


def to_float(value: str | None) -> float | None:
    """Float from a Redis string field, None when empty, not a number or not finite."""
    if value is None or value == "":
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def to_int(value: str | None) -> int | None:
    """Int from a Redis string field, None when empty or not an integer."""
    number = to_float(value)
    return None if number is None else int(number)


def load_json(value: str | bytes | None) -> Any:
    """Parsed JSON of a STRING key, None when absent or corrupt."""
    return load_stored(value)


def parse_time(value: str | None) -> datetime | None:
    """Timezone-aware datetime from ISO 8601, None when absent or invalid."""
    if not value:
        return None
    return parse_iso_or_none(value)  # naive is read as UTC (evfleet.isotime)


def connectors_view(raw: dict[str, str]) -> dict[int, list[dict[str, Any]]]:
    """Connector hash (field ``eid/cid`` -> JSON) grouped per EVSE id, sorted."""
    per_evse: dict[int, list[dict[str, Any]]] = {}
    for field, value in raw.items():
        try:
            eid_s, cid_s = field.split("/", 1)
            eid, cid = int(eid_s), int(cid_s)
        except ValueError:
            continue
        doc = load_json(value) or {}
        per_evse.setdefault(eid, []).append(
            {"connector_id": cid, "status": doc.get("status", "Unknown"),
             "updated_at": doc.get("updated_at")})
    for conns in per_evse.values():
        conns.sort(key=lambda c: c["connector_id"])
    return dict(sorted(per_evse.items()))


def evse_view(evse_id: int, raw: dict[str, str], connectors: list[dict[str, Any]]) -> dict[str, Any]:
    """One EVSE: limits, rate unit, active transaction and its connectors."""
    return {
        "evse_id": evse_id,
        "transaction_id": raw.get("transaction_id") or None,
        "tx_ref": raw.get("tx_ref") or None,
        "max_power_w": to_float(raw.get("max_power_w")),
        "phases": to_int(raw.get("phases")),
        "voltage_v": to_float(raw.get("voltage_v")),
        "rate_unit": raw.get("rate_unit") or None,
        "applied_limit_w": to_float(raw.get("applied_limit_w")),
        "steerable": raw.get("steerable", "1") != "0",
        "noncompliant_w": to_float(raw.get("noncompliant_w")),
        "default_limit_w": to_float(raw.get("default_limit_w")),
        "connectors": connectors,
    }


def station_status(online: bool, evses: list[dict[str, Any]]) -> str:
    """Overall status for the grid: Offline, Faulted, Charging, Occupied, ..., Available."""
    if not online:
        return "Offline"
    statuses = {c["status"] for e in evses for c in e["connectors"]}
    if "Faulted" in statuses:
        return "Faulted"
    if any(e["transaction_id"] for e in evses):
        return "Charging"
    for status in ("Occupied", "Reserved"):
        if status in statuses:
            return status
    if statuses and statuses <= {"Unavailable"}:
        return "Unavailable"
    if "Available" in statuses:
        return "Available"
    return "Unknown"


def station_view(station_id: str, raw: dict[str, str], evses: list[dict[str, Any]],
                 default_site: str) -> dict[str, Any]:
    """A station document: identity, firmware, connection, EVSEs and overall status."""
    online = raw.get("online") == "1"
    return {
        "station_id": station_id,
        "site_id": raw.get("site_id") or default_site,
        "status": station_status(online, evses),
        "online": online,
        "node": raw.get("node") or None,
        "vendor": raw.get("vendor") or None,
        "model": raw.get("model") or None,
        "serial_number": raw.get("serial_number") or None,
        "firmware_version": raw.get("firmware_version") or None,
        "boot_reason": raw.get("boot_reason") or None,
        "registered_at": raw.get("registered_at") or None,
        "last_boot": raw.get("last_boot") or None,
        "last_seen": raw.get("last_seen") or None,
        "connected_at": raw.get("connected_at") or None,
        "heartbeat_interval_s": to_int(raw.get("heartbeat_interval_s")),
        "ocpp_version": raw.get("ocpp_version") or None,
        "power_kw": round(sum(e.get("power_kw") or 0.0 for e in evses), 3),
        "evses": evses,
    }


def _for_tx(doc: Any, ref: str) -> dict[str, Any] | None:
    """The JSON document if it belongs to the transaction `ref` (keys per EVSE are overwritten)."""
    if not isinstance(doc, dict):
        return None
    owner = doc.get("tx_ref")
    if owner not in (None, "", ref):
        return None
    return doc


def _applied_view(record: dict[str, Any] | None) -> dict[str, Any] | None:
    """The applied-profile record without the watchdog's encoded memory of held profiles (`held`:
    internal to csms.smart_charging.metered, not part of the API)."""
    return None if record is None else {k: v for k, v in record.items() if k != "held"}


def tx_identity(ref: str, record: dict[str, str] | None = None) -> dict[str, Any]:
    """`station_id`, `transaction_id` (the station's own id), `generation` and `tx_ref` of a ref
    (a member left by a version before refs is shown with its stored station)."""
    try:
        r = parse_tx_ref(ref)
    except ValueError:
        return {"station_id": (record or {}).get("station_id") or None, "transaction_id": ref,
                "generation": 1, "tx_ref": ref}
    return {"station_id": r.station_id, "transaction_id": r.transaction_id, "generation": r.generation,
            "tx_ref": ref}


def session_view(ref: str, tx: dict[str, str], live: bool, site_id: str,
                 needs: Any = None, planned: Any = None, profile: Any = None,
                 ev_schedule: Any = None) -> dict[str, Any]:
    """A charging session (`ref`: its tx_ref): the transaction plus the EV's needs, the plan and
    the applied profile."""
    energy_wh = to_float(tx.get("energy_wh"))
    power_w = to_float(tx.get("power_w"))
    needs_doc = _for_tx(needs, ref)
    needed_wh = to_float(str(needs_doc.get("energy_amount_wh"))) if needs_doc else None
    progress = None
    if needed_wh and needed_wh > 0 and energy_wh is not None:
        progress = round(min(energy_wh / needed_wh, 1.0), 4)
    evse_id = to_int(tx.get("evse_id"))
    return {
        **tx_identity(ref, tx),
        "evse_id": evse_id,
        "connector_id": to_int(tx.get("connector_id")),
        "site_id": site_id,
        "id_token": tx.get("id_token") or None,
        "live": live,
        "state": tx.get("state") or None,
        "charging_state": tx.get("charging_state") or None,
        "started_at": tx.get("started_at") or None,
        "updated_at": tx.get("updated_at") or None,
        "ended_at": tx.get("ended_at") or None,
        "stopped_reason": tx.get("stopped_reason") or None,
        "energy_kwh": None if energy_wh is None else round(energy_wh / 1000.0, 4),
        "power_kw": None if power_w is None else round(power_w / 1000.0, 4),
        "current_a": to_float(tx.get("current_a")),
        "soc": to_float(tx.get("soc")),
        "energy_needed_kwh": None if needed_wh is None else round(needed_wh / 1000.0, 4),
        "departure_time": needs_doc.get("departure_time") if needs_doc else None,
        "progress": progress,
        "charging_needs": needs_doc,
        "planned_schedule": _for_tx(planned, ref) if live else None,
        "applied_profile": _applied_view(_for_tx(profile, ref)) if live else None,
        "ev_schedule": _for_tx(ev_schedule, ref) if live else None,
    }


def loop_view(loop: dict[str, str]) -> dict[str, Any]:
    """What the K15-K17 loop did for a session (`tx:{ref}:loop`, see docs/smart-charging.md)."""
    counts = ("needs_received", "schedules_sent", "interim_sent", "renegotiations", "replans_skipped",
              "ev_plans_received", "k17_violations", "k17_resent")
    out: dict[str, Any] = {k: int(loop.get(k) or 0) for k in counts}
    within = loop.get("ev_plan_within_limits")
    out["ev_plan_within_limits"] = None if within is None else within == "1"
    for k in ("needs_received_at", "last_schedule_sent_at", "last_schedule_status", "last_plan_id",
              "ev_plan_received_at"):
        out[k] = loop.get(k) or None
    return out


def planned_kw_at(plan: Any, now_ts: float) -> float | None:
    """The optimizer's planned site load (kW) for the step containing `now_ts`, if any."""
    decoded = SitePlan.decode(plan) if isinstance(plan, dict) else None
    return decoded.planned_kw_at(now_ts) if decoded is not None else None


def site_view(site_id: str, raw: dict[str, str], power_kw: float, active_sessions: int,
              station_count: int, plan: Any, prices: Any, now_ts: float,
              default_limit_kw: float | None = None) -> dict[str, Any]:
    """A site: limit, current load (sum of live session power), planned load and optimizer state.
    A site without a limit of its own shows the default limit it is planned with."""
    own_limit = to_float(raw.get("limit_kw"))
    limit_kw = default_limit_kw if own_limit is None else own_limit
    plan_doc = plan if isinstance(plan, dict) else None
    return {
        "site_id": site_id,
        "name": raw.get("name") or site_id,
        "limit_kw": limit_kw,
        "limit_set": own_limit is not None,
        "default_limit_kw": default_limit_kw,
        "limit_note": limit_note(own_limit, default_limit_kw),
        "limit_updated_at": raw.get("updated_at") or None,
        "power_kw": round(power_kw, 3),
        "headroom_kw": None if limit_kw is None else round(limit_kw - power_kw, 3),
        "active_sessions": active_sessions,
        "stations": station_count,
        "over_limit": raw.get("over_limit") == "1",
        "over_limit_metered_kw": to_float(raw.get("metered_kw")) if raw.get("over_limit") == "1" else None,
        "over_limit_changed_at": raw.get("over_limit_changed_at") or None,
        "planned_kw_now": planned_kw_at(plan_doc, now_ts),
        "optimizer": None if plan_doc is None else {
            "plan_id": plan_doc.get("plan_id"),
            "strategy": plan_doc.get("strategy"),
            "status": plan_doc.get("status"),
            "objective": plan_doc.get("objective"),
            "solve_s": plan_doc.get("solve_s"),
            "computed_at": plan_doc.get("computed_at"),
        },
        "plan": None if plan_doc is None else {
            "start": plan_doc.get("start"), "step_s": plan_doc.get("step_s"),
            "planned_kw": plan_doc.get("planned_kw"), "limit_kw": plan_doc.get("limit_kw"),
        },
        "prices": prices if isinstance(prices, dict) else None,
    }


def _kw(value: float) -> str:
    return f"{value:g}"


def limit_note(own_limit_kw: float | None, default_limit_kw: float | None) -> str:
    """How the dashboard and the API state a site's limit."""
    if own_limit_kw is not None:
        return f"{_kw(own_limit_kw)} kW"
    if default_limit_kw is None:
        return "no limit set"
    return f"no limit set (planned with default {_kw(default_limit_kw)} kW)"


def paginate(items: list[Any], limit: int, offset: int) -> dict[str, Any]:
    """The page envelope every list endpoint returns."""
    return {"items": items[offset:offset + limit], "total": len(items), "limit": limit, "offset": offset}


def resumes_at(plan: Any, now_ts: float) -> str | None:
    """When a per-EVSE plan (`{start, step_s, limits_kw}`) next gives the EVSE power: the start of
    its first step from `now_ts` on with a limit above 0 (ISO, at least `now_ts`); None if none."""
    if not isinstance(plan, dict):
        return None
    start, step_s, limits = parse_iso_or_none(plan.get("start")), plan.get("step_s"), plan.get("limits_kw")
    if start is None or not isinstance(step_s, int | float) or step_s <= 0 or not isinstance(limits, list):
        return None
    t0 = start.timestamp()
    for i in range(max(0, int((now_ts - t0) // step_s)), len(limits)):
        if isinstance(limits[i], int | float) and limits[i] > 0:
            return datetime.fromtimestamp(max(t0 + i * step_s, now_ts), UTC).isoformat()
    return None


def session_summary(doc: dict[str, Any], now_ts: float | None = None) -> dict[str, Any]:
    """A session without its large nested documents (for tables and live deltas). With `now_ts`, a
    session held at 0 kW by its applied limit says when its plan gives it power again (`resumes_at`)."""
    out = {k: v for k, v in doc.items()
           if k not in ("charging_needs", "planned_schedule", "applied_profile", "ev_schedule", "meter")}
    profile = doc.get("applied_profile") or {}
    plan = doc.get("planned_schedule") or {}
    limit_w = profile.get("limit_w") if isinstance(profile, dict) else None
    out["applied_limit_kw"] = round(float(limit_w) / 1000.0, 3) if isinstance(limit_w, int | float) else None
    out["profile_status"] = profile.get("status") if isinstance(profile, dict) else None
    out["plan_status"] = plan.get("status") if isinstance(plan, dict) else None
    held = out["applied_limit_kw"] == 0
    out["resumes_at"] = resumes_at(plan, now_ts) if held and now_ts is not None else None
    return out
