"""OCPP 1.6J payloads -> the shapes the store keeps for every station, pure.

Public names: `boot_info`, `connector_status`, `charging_state`, `id_tag_status`,
`meter_values_201`, `start_digest`, `start_event`, `stop_event`, `status_event`, `START_SEQ_NO`,
`STOP_SEQ_NO`.

Connectors are EVSEs: 1.6 connector N is EVSE N, connector 1 (connector 0, the charge point
itself, has no EVSE). A 1.6 transaction is stored as a 2.0.1 one: StartTransaction is its
`Started` event (seqNo 0), StopTransaction its `Ended` event (seqNo `STOP_SEQ_NO`), so a
replayed Start or Stop is the same (transaction, seqNo) and is not applied twice; MeterValues
in between go to the EVSE's transaction like 2.0.1 MeterValues; a StatusNotification while it
runs is an `Updated` event carrying the charging state (SuspendedEV tells the optimizer that a
car without ISO 15118 is full).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from csms.core.metering import MeterSample, latest_sample
from csms.core.timeutil import parse_ts
from csms.core.transactions import TxEvent, TxState

START_SEQ_NO = 0
STOP_SEQ_NO = 2**31 - 1

# 1.6 ChargePointStatus -> 2.0.1 ConnectorStatusEnum
_CONNECTOR_STATUS: dict[str, str] = {
    "Available": "Available", "Preparing": "Occupied", "Charging": "Occupied", "SuspendedEVSE": "Occupied",
    "SuspendedEV": "Occupied", "Finishing": "Occupied", "Reserved": "Reserved", "Unavailable": "Unavailable",
    "Faulted": "Faulted",
}
# 1.6 ChargePointStatus -> 2.0.1 ChargingStateEnum (while a transaction runs)
_CHARGING_STATE: dict[str, str] = {
    "Charging": "Charging", "SuspendedEV": "SuspendedEV", "SuspendedEVSE": "SuspendedEVSE",
    "Preparing": "EVConnected", "Finishing": "EVConnected",
}
_ID_TAG_STATUS = {"Accepted", "Blocked", "Expired", "Invalid", "ConcurrentTx"}


def boot_info(payload: Mapping[str, Any]) -> dict[str, str]:
    """Station facts of a 1.6 BootNotification, under the names 2.0.1 boots use (absent ones left out)."""
    facts = {"vendor": payload.get("chargePointVendor"), "model": payload.get("chargePointModel"),
            "serial_number": payload.get("chargePointSerialNumber") or payload.get("chargeBoxSerialNumber"),
            "firmware_version": payload.get("firmwareVersion"), "iccid": payload.get("iccid"),
            "imsi": payload.get("imsi"), "meter_type": payload.get("meterType"),
            "meter_serial_number": payload.get("meterSerialNumber")}
    return {k: str(v) for k, v in facts.items() if v is not None}


def connector_status(status16: str) -> str:
    """The 2.0.1 connector status of a 1.6 one (Preparing..Finishing are Occupied)."""
    return _CONNECTOR_STATUS.get(status16, "Unavailable")


def charging_state(status16: str) -> str | None:
    """The 2.0.1 charging state a 1.6 connector status implies (None: none)."""
    return _CHARGING_STATE.get(status16)


def id_tag_status(status: str) -> str:
    """A stored authorization status as 1.6 AuthorizationStatus (2.0.1-only ones are Invalid)."""
    return status if status in _ID_TAG_STATUS else "Invalid"


def _sampled_value_201(sv: Mapping[str, Any]) -> dict[str, Any] | None:
    """A 1.6 SampledValue (value is a string) as 2.0.1 (number + unitOfMeasure); None: not numeric."""
    if sv.get("format") == "SignedData":
        return None
    try:
        value = float(str(sv.get("value")))
    except ValueError:
        return None
    if value != value or value in (float("inf"), float("-inf")):
        return None
    out: dict[str, Any] = {"value": value}
    for name in ("context", "measurand", "phase", "location"):
        if sv.get(name):
            out[name] = sv[name]
    if sv.get("unit"):
        out["unitOfMeasure"] = {"unit": "Percent" if sv["unit"] == "Percent" else sv["unit"]}
    return out


def meter_values_201(meter_values: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """1.6 MeterValue list -> 2.0.1 shape (non-numeric and signed values dropped)."""
    out = []
    for mv in meter_values:
        svs = [s for s in (_sampled_value_201(sv) for sv in mv.get("sampledValue") or []) if s is not None]
        if svs:
            out.append({"timestamp": mv.get("timestamp"), "sampledValue": svs})
    return out


def status_event(transaction_id: str, connector_id: int, status16: str, timestamp: str) -> TxEvent | None:
    """The `Updated` TxEvent a StatusNotification means for the connector's running transaction
    (its charging state: Charging, SuspendedEV, SuspendedEVSE, EVConnected), None if none.

    1.6 has no seqNo: the event's is derived from the notification's time in ms (a resent
    notification is a replay; never 0 or `STOP_SEQ_NO`)."""
    state = charging_state(status16)
    if state is None:
        return None
    ts = parse_ts(timestamp)
    seq = 1 + int(ts.timestamp() * 1000) % (STOP_SEQ_NO - 2)
    return TxEvent(transaction_id=transaction_id, event_type=TxState.UPDATED, seq_no=seq, timestamp=ts,
                   trigger_reason="ChargingStateChanged", charging_state=state, evse_id=connector_id,
                   connector_id=1)


def start_digest(payload: Mapping[str, Any]) -> str:
    """What makes a StartTransaction the same one when the station resends it."""
    key = {k: payload.get(k) for k in ("connectorId", "idTag", "timestamp", "meterStart", "reservationId")}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]


def start_event(transaction_id: int, payload: Mapping[str, Any]) -> TxEvent:
    """The `Started` TxEvent of a StartTransaction (meterStart as the first energy reading)."""
    ts = str(payload["timestamp"])
    return TxEvent(
        transaction_id=str(transaction_id), event_type=TxState.STARTED, seq_no=START_SEQ_NO,
        timestamp=parse_ts(ts), trigger_reason="Authorized", id_token=str(payload["idTag"]),
        evse_id=int(payload["connectorId"]) or None, connector_id=1 if payload["connectorId"] else None,
        charging_state="EVConnected", sample=MeterSample(ts=ts, energy_wh=float(payload["meterStart"])))


def stop_event(payload: Mapping[str, Any]) -> TxEvent:
    """The `Ended` TxEvent of a StopTransaction (meterStop and the newest transactionData reading)."""
    ts = str(payload["timestamp"])
    data = latest_sample(meter_values_201(payload.get("transactionData") or []))
    soc = data.soc if data is not None else None
    return TxEvent(
        transaction_id=str(payload["transactionId"]), event_type=TxState.ENDED, seq_no=STOP_SEQ_NO,
        timestamp=parse_ts(ts), trigger_reason="StopAuthorized" if payload.get("idTag") else "Local",
        stopped_reason=str(payload.get("reason") or "Local"), id_token=payload.get("idTag"),
        charging_state="Idle", sample=MeterSample(ts=ts, energy_wh=float(payload["meterStop"]), soc=soc))
