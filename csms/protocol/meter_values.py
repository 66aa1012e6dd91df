"""Block J (meter values): MeterValues outside TransactionEvent.

Public names: `MeterValuesBlock`.
"""

from __future__ import annotations

import logging
from typing import Any

from ocpp.routing import on
from ocpp.v201 import call_result
from ocpp.v201.enums import Action

from csms.core.metering import MeterValueError, latest_sample
from csms.core.timeutil import TimestampError
from csms.protocol.base import BlockBase

log = logging.getLogger(__name__)


class MeterValuesBlock(BlockBase):
    """J01."""

    @on(Action.meter_values)
    async def on_meter_values(self, evse_id: int, meter_value: list[Any],
                              **_: Any) -> call_result.MeterValues:
        """Normalise and store the newest reading (appended to the EVSE's transaction if any)."""
        try:
            sample = latest_sample(self.payload.get("meterValue") or [])
        except (MeterValueError, TimestampError) as err:
            log.warning("MeterValues not stored: %s", err)
            return call_result.MeterValues()
        if sample is not None:
            await self.env.store.meter_values(self.id, self.site_id, int(evse_id), sample)
        return call_result.MeterValues()
