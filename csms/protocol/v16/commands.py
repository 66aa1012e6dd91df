"""Commands to a 1.6J station through the shared command protocol, pure.

Public names: `command_error_16`, `translate`, `Translated`, `TRANSLATED_ACTIONS`.

A request to a 1.6 station is sent as it is when it is a valid OCPP 1.6 request (any
CSMS-to-charge-point action: RemoteStartTransaction, GetConfiguration, ReserveNow ...). A
valid OCPP 2.0.1 request of an action in `TRANSLATED_ACTIONS` is translated (that is how the
smart-charging service's SetChargingProfile reaches 1.6 stations) and the station's answer
translated back into the 2.0.1 answer shape; a 1.6 SetChargingProfile answer `NotSupported`
becomes a CALLERROR `NotSupported` (the station cannot be steered: budgeted at its maximum).
Everything else is refused before sending.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from csms.protocol.framing import schema_violation
from csms.protocol.station import CallOutcome
from csms.protocol.v16.schemas import CSMS_ACTIONS_16, check_schema_16, wire_code_16
from csms.protocol.v16.smart_charging import Facts16, TranslationError, composite_201, profile_16

Answer = Callable[[CallOutcome], CallOutcome]


@dataclass(frozen=True)
class Translated:
    """The 1.6 CALL to send and how to turn its answer into the caller's shape."""

    action: str
    payload: dict[str, Any]
    answer: Answer | None = None


def _same(out: CallOutcome) -> CallOutcome:
    return out


def _map_result(fn: Callable[[dict[str, Any]], dict[str, Any]]) -> Answer:
    def answer(out: CallOutcome) -> CallOutcome:
        if out.outcome != "result" or out.payload is None:
            return out
        return CallOutcome("result", payload=fn(out.payload))
    return answer


def _profile_answer(out: CallOutcome) -> CallOutcome:
    if out.outcome == "result" and (out.payload or {}).get("status") == "NotSupported":
        return CallOutcome("call_error", payload=out.payload, error_code="NotSupported",
                           error_description="OCPP 1.6 station answered SetChargingProfile NotSupported")
    return out


def _set_profile(p: Mapping[str, Any], station: Mapping[str, str]) -> Translated:
    return Translated("SetChargingProfile", profile_16(p, Facts16.from_station(station)), _profile_answer)


def _clear_profile(p: Mapping[str, Any], station: Mapping[str, str]) -> Translated:
    crit = p.get("chargingProfileCriteria") or {}
    out: dict[str, Any] = {}
    if p.get("chargingProfileId") is not None:
        out["id"] = int(p["chargingProfileId"])
    if crit.get("evseId") is not None:
        out["connectorId"] = int(crit["evseId"])
    if crit.get("chargingProfilePurpose"):
        purpose = {"ChargingStationMaxProfile": "ChargePointMaxProfile"}.get(crit["chargingProfilePurpose"],
                                                                              crit["chargingProfilePurpose"])
        if purpose not in ("ChargePointMaxProfile", "TxDefaultProfile", "TxProfile"):
            raise TranslationError(f"purpose {purpose} has no OCPP 1.6 equivalent")
        out["chargingProfilePurpose"] = purpose
    if crit.get("stackLevel") is not None:
        out["stackLevel"] = int(crit["stackLevel"])
    return Translated("ClearChargingProfile", out, _same)


def _composite(p: Mapping[str, Any], station: Mapping[str, str]) -> Translated:
    out: dict[str, Any] = {"connectorId": int(p["evseId"]), "duration": int(p["duration"])}
    if p.get("chargingRateUnit"):
        out["chargingRateUnit"] = p["chargingRateUnit"]
    duration_s = int(p["duration"])
    return Translated("GetCompositeSchedule", out, _map_result(lambda a: composite_201(a, duration_s)))


def _start(p: Mapping[str, Any], station: Mapping[str, str]) -> Translated:
    out: dict[str, Any] = {"idTag": str(p["idToken"]["idToken"])[:20]}
    if p.get("evseId") is not None:
        out["connectorId"] = int(p["evseId"])
    if p.get("chargingProfile") is not None:  # a TxProfile for the transaction about to start
        wrapped = {"evseId": int(p.get("evseId") or 0), "chargingProfile": p["chargingProfile"]}
        profile = profile_16(wrapped, Facts16.from_station(station))["csChargingProfiles"]
        profile.pop("transactionId", None)
        out["chargingProfile"] = profile
    return Translated("RemoteStartTransaction", out, _same)


def _stop(p: Mapping[str, Any], station: Mapping[str, str]) -> Translated:
    txid = str(p["transactionId"])
    if not txid.lstrip("-").isdigit():
        raise TranslationError(f"transactionId {txid!r} is not an OCPP 1.6 (integer) id")
    return Translated("RemoteStopTransaction", {"transactionId": int(txid)}, _same)


def _reset(p: Mapping[str, Any], station: Mapping[str, str]) -> Translated:
    if p.get("evseId") is not None:
        raise TranslationError("OCPP 1.6 resets the whole charge point only (no evseId)")
    return Translated("Reset", {"type": "Hard" if p["type"] == "Immediate" else "Soft"}, _same)


_TRIGGER_16 = {"BootNotification": "BootNotification", "Heartbeat": "Heartbeat", "MeterValues": "MeterValues",
               "StatusNotification": "StatusNotification",
               "FirmwareStatusNotification": "FirmwareStatusNotification",
               "LogStatusNotification": "DiagnosticsStatusNotification", "TransactionEvent": "MeterValues"}


def _trigger(p: Mapping[str, Any], station: Mapping[str, str]) -> Translated:
    message = _TRIGGER_16.get(str(p["requestedMessage"]))
    if message is None:
        raise TranslationError(f"OCPP 1.6 cannot trigger {p['requestedMessage']}")
    out: dict[str, Any] = {"requestedMessage": message}
    if (p.get("evse") or {}).get("id") is not None:
        out["connectorId"] = int(p["evse"]["id"])
    return Translated("TriggerMessage", out, _same)


def _availability(p: Mapping[str, Any], station: Mapping[str, str]) -> Translated:
    evse = p.get("evse") or {}
    return Translated("ChangeAvailability", {"connectorId": int(evse.get("id", 0)),
                                             "type": p["operationalStatus"]}, _same)


def _unlock(p: Mapping[str, Any], station: Mapping[str, str]) -> Translated:
    return Translated("UnlockConnector", {"connectorId": int(p["evseId"])},
                      _map_result(lambda a: {"status": {"Unlocked": "Unlocked"}.get(a.get("status", ""),
                                                                                     "UnlockFailed")}))


TRANSLATORS: dict[str, Callable[[Mapping[str, Any], Mapping[str, str]], Translated]] = {
    "SetChargingProfile": _set_profile, "ClearChargingProfile": _clear_profile,
    "GetCompositeSchedule": _composite, "RequestStartTransaction": _start, "RequestStopTransaction": _stop,
    "Reset": _reset, "ChangeAvailability": _availability, "UnlockConnector": _unlock,
    "TriggerMessage": _trigger,
}
TRANSLATED_ACTIONS = frozenset(TRANSLATORS)


def command_error_16(action: str, payload: dict[str, Any]) -> dict[str, str] | None:
    """Why a request cannot go to a 1.6 station ({code, description}), None if it can."""
    native = check_schema_16(action, payload) if action in CSMS_ACTIONS_16 else None
    if action in CSMS_ACTIONS_16 and native is None:
        return None
    if action in TRANSLATORS and schema_violation(action, payload) is None:
        try:  # station facts only choose units and period counts: the request translates or not
            TRANSLATORS[action](payload, {})
        except (TranslationError, KeyError, ValueError, TypeError) as err:
            return {"code": "NotSupported", "description": f"{action} has no OCPP 1.6 equivalent: {err}"}
        return None
    if native is not None:
        return {"code": wire_code_16(native.code), "description": f"OCPP 1.6 {action}: {native.description}"}
    return {"code": "NotImplemented",
            "description": f"{action!r} is not an OCPP 1.6 CSMS-to-charge-point action"}


def translate(action: str, payload: dict[str, Any], station: Mapping[str, str]) -> Translated:
    """The CALL to send to a 1.6 station (raises TranslationError when there is none)."""
    if action in CSMS_ACTIONS_16 and check_schema_16(action, payload) is None:
        return Translated(action, payload, None)
    return TRANSLATORS[action](payload, station)
