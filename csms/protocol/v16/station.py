"""`StationHandler16`: one connected OCPP 1.6J charge point = the 1.6 block mixins + the shared
connection (receive loop, framing, rate limit, outbound CALLs) of `csms.protocol.station`.

Public names: `StationHandler16`.
"""

from __future__ import annotations

from typing import Any

from ocpp.v16 import ChargePoint

from csms.protocol.framing import ErrorCode, FrameError
from csms.protocol.station import CallOutcome, StationConnection
from csms.protocol.v16.availability import AvailabilityBlock16
from csms.protocol.v16.commands import translate
from csms.protocol.v16.diagnostics import DiagnosticsBlock16
from csms.protocol.v16.meter_values import MeterValuesBlock16
from csms.protocol.v16.provisioning import ProvisioningBlock16
from csms.protocol.v16.schemas import ALL_ACTIONS_16, STATION_ACTIONS_16, check_schema_16, wire_code_16
from csms.protocol.v16.smart_charging import TranslationError
from csms.protocol.v16.transactions import TransactionsBlock16


class StationHandler16(ProvisioningBlock16, TransactionsBlock16, AvailabilityBlock16, MeterValuesBlock16,
                       DiagnosticsBlock16, StationConnection, ChargePoint):
    """The csms side of one OCPP 1.6J connection."""

    ocpp_version = "1.6"
    known_actions = ALL_ACTIONS_16
    station_actions = STATION_ACTIONS_16

    def check_schema(self, action: str, payload: dict[str, Any], request: bool = True) -> FrameError | None:
        """Violation of the OCPP 1.6 schema."""
        return check_schema_16(action, payload, request=request)

    def wire_code(self, code: ErrorCode) -> str:
        """1.6 spelling (FormationViolation, OccurenceConstraintViolation)."""
        return wire_code_16(code)

    async def send_command(self, action: str, payload: dict[str, Any], timeout_s: float) -> CallOutcome:
        """Send a 1.6 request as it is, a 2.0.1 one translated (`csms.protocol.v16.commands`)."""
        try:
            tr = translate(action, payload, await self.env.store.station_info(self.id))
        except (TranslationError, KeyError, ValueError, TypeError) as err:  # refused, nothing sent
            return CallOutcome("invalid", error_code="NotSupported",
                               error_description=f"{action} has no OCPP 1.6 equivalent: {err}")
        out = await self.call_raw(tr.action, tr.payload, timeout_s)
        return tr.answer(out) if tr.answer is not None else out
