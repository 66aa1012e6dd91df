"""A loop station (`harness.LoopStation`) that misbehaves when it gets SetChargingProfile.

`fault` (settable at any time, "" = behaves):

- `silent`: never answers (the CALL is read and dropped; the station keeps its last limit and
  goes on answering and sending everything else);
- `slow`: answers (and applies the profile) after `slow_s`;
- `callerror`: answers with a CALLERROR InternalError (applies nothing);
- `rejected`: answers Rejected (applies nothing);
- `drop`: closes its WebSocket when the call arrives (applies nothing; stays offline).

`publish_plan`: a plan and its event as the optimizer worker writes them (a test as the optimizer).
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from typing import Any

from ocpp.exceptions import InternalError
from ocpp.messages import Call, MessageType, unpack
from ocpp.routing import on
from ocpp.v201.enums import Action

from evfleet.events import EventType, event_fields
from evfleet.records import SitePlan
from tests.loop.harness import SITE, Loop, LoopStation

FAULTS = ("silent", "slow", "callerror", "rejected", "drop")


class FaultyStation(LoopStation):
    """A `LoopStation` with a settable SetChargingProfile fault (module doc)."""

    def __init__(self, station_id: str, connection: Any) -> None:
        super().__init__(station_id, connection)
        self.fault = ""
        self.slow_s = 3.0
        self.ignored = 0  # SetChargingProfile calls never answered (`silent`)
        self._late: set[asyncio.Task[None]] = set()

    async def route_message(self, raw_msg: Any) -> None:
        """Route as the library does, except SetChargingProfile under a fault."""
        msg = unpack(raw_msg)
        if not (self.fault and msg.message_type_id == MessageType.Call and isinstance(msg, Call)
                and msg.action == "SetChargingProfile"):
            await super().route_message(raw_msg)
            return
        if self.fault == "silent":
            self.ignored += 1
        elif self.fault == "slow":
            task = asyncio.create_task(self._later(raw_msg))
            self._late.add(task)
            task.add_done_callback(self._late.discard)
        elif self.fault == "drop":
            await self._connection.close()
        else:
            await super().route_message(raw_msg)

    async def _later(self, raw_msg: Any) -> None:
        await asyncio.sleep(self.slow_s)
        await super().route_message(raw_msg)

    @on(Action.set_charging_profile)
    async def on_set_charging_profile(self, evse_id: int, charging_profile: dict[str, Any],
                                      **kw: Any) -> Any:
        """CALLERROR or Rejected under those faults, else `LoopStation`'s."""
        if self.fault == "callerror":
            raise InternalError(description="profile store failed")
        if self.fault == "rejected":
            self.refuse_with = "Rejected"
        return await super().on_set_charging_profile(evse_id, charging_profile, **kw)


async def publish_plan(lp: Loop, limits_kw: dict[str, float], limit_kw: float = 40.0) -> None:
    """Write a plan (each station's limit for the next hour) and its `schedule.planned` event, as the
    optimizer worker does (optimizer/publish.py)."""
    now = datetime.now(UTC)
    refs = {sid: await lp.redis.hget(lp.keys.station_evse(sid, 1), "tx_ref") for sid in limits_kw}
    plan = SitePlan(plan_id=f"p-{time.time_ns()}", site_id=SITE, start=now, step_s=900,
                    planned_kw=[sum(limits_kw.values())] * 4, limit_kw=limit_kw, computed_at=now,
                    evses={f"{sid}/1": [kw] * 4 for sid, kw in limits_kw.items()},
                    transactions={f"{sid}/1": str(ref) for sid, ref in refs.items()})
    await lp.redis.set(lp.keys.site_plan(SITE), json.dumps(plan.encode()))
    await lp.redis.xadd(lp.keys.site_events(SITE), event_fields(  # type: ignore[arg-type]
        EventType.SCHEDULE_PLANNED, now, site_id=SITE, data={"plan_id": plan.plan_id, "status": "optimal"}))
