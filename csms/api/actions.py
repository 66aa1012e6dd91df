"""Operator actions that call a station (`/api/v1/stations/{id}/...`, operator role): remote
start/stop, reset, availability, trigger, unlock, and set/get/clear charging profiles.

Each sends one OCPP CALL through the command protocol (`csms.api.calls`) and answers with the
station's reply (`ActionResult`); a station that is offline is 409, one that does not answer in
time 504, one that answers with a CALLERROR 502, a request the node refuses 422. Bad input is
422 with the one error body (`csms.api.errors`).
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request

from csms.api.calls import call_or_raise
from csms.api.deps import ApiDeps, deps_of, reject_unknown_query, require
from csms.api.errors import ACT_ERRORS, Conflict, InvalidInput
from csms.api.models import ActionResult, ProfileReport
from csms.api.reader import read_new_events, stream_tail_id
from csms.api.routes import StationIdPath, TransactionIdPath, station_or_404, tx_or_404
from csms.api.schemas import (
    AvailabilityIn,
    RemoteStartIn,
    RemoteStopIn,
    ResetIn,
    SetProfileIn,
    TriggerIn,
    UnlockIn,
)
from csms.api.tokens import Role
from evfleet.events import EventType
from evfleet.store.shards import is_active

actions = APIRouter(prefix="/api/v1", responses=ACT_ERRORS,
                    dependencies=[Depends(require(Role.OPERATOR)), Depends(reject_unknown_query)])

OK_STATUSES = frozenset({"Accepted", "Scheduled", "Unlocked", None})
"""Answer statuses that mean the station does what was asked (`accepted`)."""
ProfilePurposeQ = Literal["ChargingStationExternalConstraints", "ChargingStationMaxProfile",
                          "TxDefaultProfile", "TxProfile"]


TimeoutQ = Query(None, gt=0, le=300, description="seconds to wait for the station (default: settings)")


async def _call(request: Request, station_id: StationIdPath, action: str, payload: dict[str, Any],
                timeout_s: float | None) -> dict[str, Any]:
    deps = deps_of(request)
    await station_or_404(deps, station_id)
    reply = await call_or_raise(deps.caller, station_id, action, payload, timeout_s or deps.call_timeout_s)
    status = (reply.payload or {}).get("status")
    return {**reply.to_dict(), "status": status, "accepted": status in OK_STATUSES}


@actions.post("/stations/{station_id}/remote-start", tags=["actions"], response_model=ActionResult,
          summary="RequestStartTransaction")
async def remote_start(request: Request, station_id: StationIdPath, body: RemoteStartIn,
                       timeout_s: float | None = TimeoutQ) -> dict[str, Any]:
    """Ask the station to start a transaction for an id token."""
    payload: dict[str, Any] = {"idToken": {"idToken": body.id_token, "type": body.id_token_type},
                               "remoteStartId": body.remote_start_id if body.remote_start_id is not None
                               else secrets.randbelow(2**31 - 1) + 1}
    if body.evse_id is not None:
        payload["evseId"] = body.evse_id
    if body.charging_profile is not None:
        payload["chargingProfile"] = body.charging_profile.to_ocpp()
    return await _call(request, station_id, "RequestStartTransaction", payload, timeout_s)


@actions.post("/stations/{station_id}/remote-stop", tags=["actions"], response_model=ActionResult,
          summary="RequestStopTransaction")
async def remote_stop(request: Request, station_id: StationIdPath, body: RemoteStopIn,
                      timeout_s: float | None = TimeoutQ) -> dict[str, Any]:
    """Ask the station to stop a transaction."""
    return await _call(request, station_id, "RequestStopTransaction",
                       {"transactionId": body.transaction_id}, timeout_s)


@actions.post("/sessions/{station_id}/{transaction_id}/stop", tags=["actions"], response_model=ActionResult,
          summary="Stop a live session")
async def stop_session(request: Request, station_id: StationIdPath, transaction_id: TransactionIdPath,
                       timeout_s: float | None = TimeoutQ) -> dict[str, Any]:
    """RequestStopTransaction to the station the session runs on (its latest use of the id)."""
    deps = deps_of(request)
    ref = await tx_or_404(deps, station_id, transaction_id, None, "session")
    if not await is_active(deps.redis, deps.keys, ref):
        raise Conflict(f"session {transaction_id} of station {station_id} has already ended",
                       {"station_id": station_id, "transaction_id": transaction_id})
    return await _call(request, station_id, "RequestStopTransaction", {"transactionId": transaction_id},
                       timeout_s)


@actions.post("/stations/{station_id}/reset", tags=["actions"], response_model=ActionResult, summary="Reset")
async def reset(request: Request, station_id: StationIdPath, body: ResetIn,
                timeout_s: float | None = TimeoutQ) -> dict[str, Any]:
    """Reset the station or one EVSE (Immediate or OnIdle)."""
    payload: dict[str, Any] = {"type": body.type}
    if body.evse_id is not None:
        payload["evseId"] = body.evse_id
    return await _call(request, station_id, "Reset", payload, timeout_s)


def _evse(evse_id: int | None, connector_id: int | None) -> dict[str, Any] | None:
    if evse_id is None:
        return None
    evse: dict[str, Any] = {"id": evse_id}
    if connector_id is not None:
        evse["connectorId"] = connector_id
    return evse


@actions.post("/stations/{station_id}/availability", tags=["actions"], response_model=ActionResult,
          summary="ChangeAvailability")
async def change_availability(request: Request, station_id: StationIdPath, body: AvailabilityIn,
                              timeout_s: float | None = TimeoutQ) -> dict[str, Any]:
    """Make the station, an EVSE or a connector Operative or Inoperative."""
    payload: dict[str, Any] = {"operationalStatus": body.operational_status}
    evse = _evse(body.evse_id, body.connector_id)
    if evse:
        payload["evse"] = evse
    return await _call(request, station_id, "ChangeAvailability", payload, timeout_s)


@actions.post("/stations/{station_id}/trigger", tags=["actions"], response_model=ActionResult,
          summary="TriggerMessage")
async def trigger_message(request: Request, station_id: StationIdPath, body: TriggerIn,
                          timeout_s: float | None = TimeoutQ) -> dict[str, Any]:
    """Ask the station to send a message now (StatusNotification, MeterValues, ...)."""
    payload: dict[str, Any] = {"requestedMessage": body.requested_message}
    evse = _evse(body.evse_id, body.connector_id)
    if evse:
        payload["evse"] = evse
    return await _call(request, station_id, "TriggerMessage", payload, timeout_s)


@actions.post("/stations/{station_id}/charging-profiles", tags=["actions"], response_model=ActionResult,
          summary="SetChargingProfile")
async def set_charging_profile(request: Request, station_id: StationIdPath, body: SetProfileIn,
                               timeout_s: float | None = TimeoutQ) -> dict[str, Any]:
    """Send a charging profile to an EVSE (0 = station-wide)."""
    return await _call(request, station_id, "SetChargingProfile",
                       {"evseId": body.evse_id, "chargingProfile": body.charging_profile.to_ocpp()},
                       timeout_s)


@actions.delete("/stations/{station_id}/charging-profiles", tags=["actions"], response_model=ActionResult,
            summary="ClearChargingProfile")
async def clear_charging_profile(
        request: Request, station_id: StationIdPath,
        profile_id: int | None = Query(None, ge=0, description="clear this profile id"),
        evse_id: int | None = Query(None, ge=0),
        purpose: Literal["ChargingStationExternalConstraints", "ChargingStationMaxProfile",
                         "TxDefaultProfile", "TxProfile"] | None = None,
        stack_level: int | None = Query(None, ge=0),
        timeout_s: float | None = TimeoutQ) -> dict[str, Any]:
    """Clear profiles by id or by criteria (EVSE, purpose, stack level); at least one is needed."""
    payload: dict[str, Any] = {}
    if profile_id is not None:
        payload["chargingProfileId"] = profile_id
    criteria = {k: v for k, v in (("evseId", evse_id), ("chargingProfilePurpose", purpose),
                                  ("stackLevel", stack_level)) if v is not None}
    if criteria:
        payload["chargingProfileCriteria"] = criteria
    if not payload:
        raise InvalidInput("give profile_id or at least one of evse_id, purpose, stack_level")
    return await _call(request, station_id, "ClearChargingProfile", payload, timeout_s)


@actions.post("/stations/{station_id}/unlock", tags=["actions"], response_model=ActionResult,
              summary="UnlockConnector")
async def unlock_connector(request: Request, station_id: StationIdPath, body: UnlockIn,
                           timeout_s: float | None = TimeoutQ) -> dict[str, Any]:
    """Unlock a connector (`accepted` when the station answers `Unlocked`)."""
    return await _call(request, station_id, "UnlockConnector",
                       {"evseId": body.evse_id, "connectorId": body.connector_id}, timeout_s)


@actions.get("/stations/{station_id}/charging-profiles", tags=["actions"], response_model=ProfileReport,
             summary="GetChargingProfiles and the reports that answer it")
async def get_charging_profiles(
        request: Request, station_id: StationIdPath,
        evse_id: int | None = Query(None, ge=0, le=1000, description="only this EVSE (0: station-wide)"),
        purpose: ProfilePurposeQ | None = None,
        stack_level: int | None = Query(None, ge=0, le=1000),
        profile_id: int | None = Query(None, ge=0, le=2**31 - 1, description="only this profile id"),
        wait_s: float = Query(5.0, gt=0, le=60, description="seconds to wait for the reports"),
        timeout_s: float | None = TimeoutQ) -> dict[str, Any]:
    """Ask the station for its installed profiles (K09): the answer's `status` (Accepted or
    NoProfiles), then the ReportChargingProfiles it sends, collected from the event stream until
    the last one (`tbc` false) or `wait_s` (`complete` false)."""
    deps = deps_of(request)
    criteria: dict[str, Any] = {k: v for k, v in (("chargingProfilePurpose", purpose),
                                                  ("stackLevel", stack_level)) if v is not None}
    if profile_id is not None:
        criteria["chargingProfileId"] = [profile_id]
    request_id = secrets.randbelow(2**31 - 1) + 1
    payload: dict[str, Any] = {"requestId": request_id, "chargingProfile": criteria}
    if evse_id is not None:
        payload["evseId"] = evse_id
    # reports come after the answer, on the station's stream
    since = await stream_tail_id(deps.redis, deps.keys.station_events(station_id))
    result = await _call(request, station_id, "GetChargingProfiles", payload, timeout_s)
    profiles: list[dict[str, Any]] = []
    complete = result["status"] != "Accepted"
    if not complete:
        complete = await _collect_reports(deps, station_id, request_id, since, wait_s, profiles)
    return {**result, "ocpp_request_id": request_id, "profiles": profiles, "complete": complete}


async def _collect_reports(deps: ApiDeps, station_id: str, request_id: int, since: str, wait_s: float,
                           out: list[dict[str, Any]]) -> bool:
    """Append the station's `profile.reported` events for `request_id` to `out`; True once the last
    report (tbc false) is in, False when `wait_s` ran out first."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while (left := deadline - loop.time()) > 0:
        since, events = await read_new_events(deps.redis, deps.keys.station_events(station_id), since,
                                              max(1, int(left * 1000)))
        for _, ev in events:
            if (ev.type != EventType.PROFILE_REPORTED or ev.station_id != station_id
                    or ev.data.get("request_id") != request_id):
                continue
            out.append({"evse_id": ev.evse_id, "charging_limit_source": ev.data.get("charging_limit_source"),
                        "charging_profiles": ev.data.get("charging_profile") or []})
            if not ev.data.get("tbc"):
                return True
    return False
