"""OCPP 1.6J Core: MeterValues (as block J for 2.0.1).

Public names: `MeterValuesBlock16`.
"""

from __future__ import annotations

import logging
from typing import Any

from ocpp.routing import on
from ocpp.v16 import call_result
from ocpp.v16.enums import Action

from csms.core.metering import MeterValueError, latest_sample
from csms.core.timeutil import TimestampError
from csms.protocol.base import BlockBase
from csms.protocol.v16.mapping import meter_values_201

log = logging.getLogger(__name__)


class MeterValuesBlock16(BlockBase):
    """MeterValues: the newest reading goes to the connector's EVSE and its transaction."""

    @on(Action.meter_values)
    async def on_meter_values(self, connector_id: int, meter_value: list[Any],
                              **_: Any) -> call_result.MeterValues:
        """Normalise (string values, units) and store the newest reading."""
        try:
            sample = latest_sample(meter_values_201(self.payload.get("meterValue") or []))
        except (MeterValueError, TimestampError) as err:
            log.warning("MeterValues not stored: %s", err)
            return call_result.MeterValues()
        if sample is not None:
            await self.env.store.meter_values(self.id, self.site_id, int(connector_id), sample)
        return call_result.MeterValues()
