"""Request bodies of the operator API (validated; unknown fields are refused)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

IdTokenType = Literal["Central", "eMAID", "ISO14443", "ISO15693", "KeyCode", "Local", "MacAddress",
                      "NoAuthorization"]
IdTokenStatus = Literal["Accepted", "Blocked", "ConcurrentTx", "Expired", "Invalid", "NoCredit",
                        "NotAllowedTypeEVSE", "NotAtThisLocation", "NotAtThisTime", "Unknown"]
MessageTrigger = Literal["BootNotification", "LogStatusNotification", "FirmwareStatusNotification",
                         "Heartbeat",
                         "MeterValues", "SignChargingStationCertificate", "SignV2GCertificate",
                         "StatusNotification", "TransactionEvent", "SignCombinedCertificate",
                         "PublishFirmwareStatusNotification"]
ProfilePurpose = Literal["ChargingStationExternalConstraints", "ChargingStationMaxProfile",
                         "TxDefaultProfile", "TxProfile"]


class Strict(BaseModel):
    """Base: unknown fields are an error."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class IdTokenIn(Strict):
    """An id token's authorization record."""

    type: IdTokenType = "ISO14443"
    status: IdTokenStatus = "Accepted"
    group_id: str | None = Field(None, max_length=36)


class IdTokenCreate(IdTokenIn):
    """A new id token."""

    id_token: str = Field(..., min_length=1, max_length=36, pattern=r"^[^\s:]+$")


class RemoteStartIn(Strict):
    """RequestStartTransaction."""

    id_token: str = Field(..., min_length=1, max_length=36)
    id_token_type: IdTokenType = "Central"
    evse_id: int | None = Field(None, ge=1)
    remote_start_id: int | None = Field(None, ge=0, le=2**31 - 1)
    charging_profile: ChargingProfileIn | None = None


class RemoteStopIn(Strict):
    """RequestStopTransaction."""

    transaction_id: str = Field(..., min_length=1, max_length=36)


class ResetIn(Strict):
    """Reset the station (or one EVSE)."""

    type: Literal["Immediate", "OnIdle"] = "OnIdle"
    evse_id: int | None = Field(None, ge=1)


class AvailabilityIn(Strict):
    """ChangeAvailability of the station, an EVSE or a connector."""

    operational_status: Literal["Operative", "Inoperative"]
    evse_id: int | None = Field(None, ge=1)
    connector_id: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _connector_needs_evse(self) -> AvailabilityIn:
        if self.connector_id is not None and self.evse_id is None:
            raise ValueError("connector_id needs evse_id")
        return self


class TriggerIn(Strict):
    """TriggerMessage."""

    requested_message: MessageTrigger
    evse_id: int | None = Field(None, ge=1)
    connector_id: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _connector_needs_evse(self) -> TriggerIn:
        if self.connector_id is not None and self.evse_id is None:
            raise ValueError("connector_id needs evse_id")
        return self


class UnlockIn(Strict):
    """UnlockConnector."""

    evse_id: int = Field(..., ge=1, le=1000)
    connector_id: int = Field(1, ge=1, le=1000)


class SchedulePeriodIn(Strict):
    """One period of a charging schedule (OCPP field names)."""

    startPeriod: int = Field(..., ge=0)
    limit: float = Field(..., ge=0)
    numberPhases: int | None = Field(None, ge=1, le=3)
    phaseToUse: int | None = Field(None, ge=1, le=3)


class ScheduleIn(Strict):
    """A charging schedule (OCPP ChargingScheduleType)."""

    id: int = Field(..., ge=0)
    chargingRateUnit: Literal["A", "W"]
    chargingSchedulePeriod: list[SchedulePeriodIn] = Field(..., min_length=1, max_length=1024)
    startSchedule: datetime | None = None
    duration: int | None = Field(None, ge=0)
    minChargingRate: float | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _periods_ordered(self) -> ScheduleIn:
        starts = [p.startPeriod for p in self.chargingSchedulePeriod]
        if starts[0] != 0:
            raise ValueError("the first chargingSchedulePeriod must have startPeriod 0")
        if any(b <= a for a, b in zip(starts, starts[1:], strict=False)):
            raise ValueError("startPeriod values must increase")
        return self


class ChargingProfileIn(Strict):
    """An OCPP 2.0.1 ChargingProfile (camelCase, as sent to the station)."""

    id: int = Field(..., ge=0)
    stackLevel: int = Field(..., ge=0)
    chargingProfilePurpose: ProfilePurpose
    chargingProfileKind: Literal["Absolute", "Recurring", "Relative"]
    recurrencyKind: Literal["Daily", "Weekly"] | None = None
    validFrom: datetime | None = None
    validTo: datetime | None = None
    transactionId: str | None = Field(None, max_length=36)
    chargingSchedule: list[ScheduleIn] = Field(..., min_length=1, max_length=3)

    @model_validator(mode="after")
    def _tx_profile_has_tx(self) -> ChargingProfileIn:
        if self.chargingProfilePurpose == "TxProfile" and not self.transactionId:
            raise ValueError("a TxProfile needs transactionId")
        if self.chargingProfileKind == "Recurring" and self.recurrencyKind is None:
            raise ValueError("a Recurring profile needs recurrencyKind")
        return self

    def to_ocpp(self) -> dict[str, Any]:
        """camelCase JSON as sent on the wire."""
        return self.model_dump(mode="json", exclude_none=True)


class SetProfileIn(Strict):
    """SetChargingProfile: an EVSE (0 = the whole station) and the profile."""

    evse_id: int = Field(..., ge=0)
    charging_profile: ChargingProfileIn


RemoteStartIn.model_rebuild()
