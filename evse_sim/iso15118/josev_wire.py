"""The Josev side's wire helpers: the JSON-lines bridge client and the schedule conversions.

Like `josev_runner.py` (its only user), this runs under `.iso15118-venv/bin/python` and imports
only the standard library and `iso15118`: the runner is started as a plain script, so it finds
this module next to it on `sys.path[0]`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from typing import Any

log = logging.getLogger("evfleet.josev")
BRIDGE_TIMEOUT_S = 5.0


# --- bridge client ----------------------------------------------------------------------
class BridgeClient:
    """JSON-lines client to the evfleet bridge; request/response plus pushed notifications."""

    def __init__(self, path: str, role: str, name: str) -> None:
        self.path, self.role, self.name = path, role, name
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._next_id = 0
        self._pending: dict[int, asyncio.Future] = {}
        self.on_push: Any = None

    async def connect(self) -> None:
        """Connect and say hello."""
        self._reader, self._writer = await asyncio.open_unix_connection(self.path)
        asyncio.get_running_loop().create_task(self._read_loop())
        self.notify("hello", role=self.role, name=self.name, pid=os.getpid())

    def notify(self, op: str, **data: Any) -> None:
        """Send a one-way message."""
        assert self._writer is not None
        self._writer.write((json.dumps({"op": op, **data}) + "\n").encode())

    async def request(self, op: str, timeout_s: float, **data: Any) -> Any:
        """Send a request and wait for its result (raises asyncio.TimeoutError)."""
        assert self._writer is not None
        self._next_id += 1
        rid = self._next_id
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        self._writer.write((json.dumps({"id": rid, "op": op, **data}) + "\n").encode())
        try:
            return await asyncio.wait_for(fut, timeout_s)
        finally:
            self._pending.pop(rid, None)

    async def _read_loop(self) -> None:
        assert self._reader is not None
        while True:
            line = await self._reader.readline()
            if not line:
                log.error("bridge closed the connection; exiting")
                os._exit(3)
            msg = json.loads(line)
            if "id" in msg and msg["id"] in self._pending:
                fut = self._pending[msg["id"]]
                if not fut.done():
                    fut.set_result(msg.get("result"))
            elif self.on_push is not None:
                self.on_push(msg)


# --- value conversions (Josev pydantic-1 models <-> plain JSON) ------------------------
def pv(cls: Any, value: float, unit: str) -> Any:
    """A Josev PhysicalValue with the finest multiplier in [-3, 3] that fits a 16-bit value."""
    for multiplier in range(-3, 4):
        scaled = round(value / 10 ** multiplier)
        if abs(scaled) <= 32767:
            return cls(multiplier=multiplier, value=int(scaled), unit=unit)
    raise ValueError(f"{value} {unit} does not fit an ISO 15118-2 physical value")


def tuples_to_josev(data: list[dict]) -> list[Any]:
    """Bridge JSON tuples -> Josev SAScheduleTuple models.

    SalesTariff entries carry price levels only: Josev 0.31.2's SECC EXI-encodes the SalesTariff
    on its own to sign it, and that fails for any ConsumptionCost (Java codec: `JSONObject
    ["Multiplier"] is not a string`), which ends the session in ChargeParameterDiscovery.
    """
    from iso15118.shared.messages.datatypes import PVPMax
    from iso15118.shared.messages.enums import UnitSymbol
    from iso15118.shared.messages.iso15118_2.datatypes import (
        PMaxSchedule,
        PMaxScheduleEntry,
        RelativeTimeInterval,
        SalesTariff,
        SalesTariffEntry,
        SAScheduleTuple,
    )

    out = []
    for t in data:
        entries = [PMaxScheduleEntry(p_max=pv(PVPMax, w, UnitSymbol.WATT),
                                     time_interval=RelativeTimeInterval(
                                         start=int(s), duration=None if d is None else min(int(d), 86400)))
                   for s, w, d in t["pmax"]]
        tariff = None
        if t.get("tariff"):
            tr = t["tariff"]
            tariff_entries = [SalesTariffEntry(
                e_price_level=level if level is not None else 1,
                time_interval=RelativeTimeInterval(start=int(s),
                                                   duration=None if d is None else min(int(d), 86400)))
                for s, level, d, _price in tr["entries"]]
            levels = max([tr.get("levels") or 0] + [e.e_price_level for e in tariff_entries])
            tariff = SalesTariff(id="id1", sales_tariff_id=tr["id"], num_e_price_levels=levels,
                                 sales_tariff_entry=tariff_entries)
        out.append(SAScheduleTuple(sa_schedule_tuple_id=t["id"], sales_tariff=tariff,
                                   p_max_schedule=PMaxSchedule(schedule_entries=entries)))
    return out


def tuples_from_josev(tuples: list[Any]) -> list[dict]:
    """Josev SAScheduleTuple models -> bridge JSON tuples."""
    out = []
    for t in tuples:
        pmax = [[e.time_interval.start, e.p_max.get_decimal_value(), e.time_interval.duration]
                for e in t.p_max_schedule.schedule_entries]
        tariff = None
        if t.sales_tariff is not None:
            entries = []
            for e in t.sales_tariff.sales_tariff_entry:
                price = None
                if e.consumption_cost and e.consumption_cost[0].cost:
                    c = e.consumption_cost[0].cost[0]
                    price = c.amount * 10 ** (c.amount_multiplier or 0)
                entries.append([e.time_interval.start, e.e_price_level, e.time_interval.duration, price])
            tariff = {"id": t.sales_tariff.sales_tariff_id, "levels": t.sales_tariff.num_e_price_levels,
                      "entries": entries}
        out.append({"id": t.sa_schedule_tuple_id, "pmax": pmax, "tariff": tariff})
    return out


def needs_from_context(ev_data_context: Any, departure_time: int, max_schedule_entries: Any) -> dict:
    """The EV's charging needs, as Josev's SECC holds them, in the bridge's JSON form."""
    mode = str(getattr(ev_data_context.selected_energy_mode, "value", "AC_three_phase"))
    if mode.startswith("DC"):
        dc = ev_data_context.rated_limits.dc_limits
        return {
            "departure_time_s": departure_time or None,
            "e_amount_wh": ev_data_context.target_energy_request,
            "ev_max_current_a": dc.max_charge_current,
            "ev_min_current_a": 0,
            "ev_max_voltage_v": dc.max_voltage,
            "energy_mode": mode,
            "max_entries": max_schedule_entries,
            "dc": {"max_power_w": dc.max_charge_power, "soc": ev_data_context.present_soc,
                   "capacity_wh": ev_data_context.total_battery_capacity,
                   "full_soc": ev_data_context.max_soc, "bulk_soc": ev_data_context.bulk_soc},
        }
    limits = ev_data_context.rated_limits.ac_limits
    return {
        "departure_time_s": departure_time or None,
        "e_amount_wh": ev_data_context.target_energy_request,
        "ev_max_current_a": getattr(limits, "max_charge_current", None),
        "ev_min_current_a": getattr(limits, "min_charge_current", None),
        "ev_max_voltage_v": getattr(limits, "max_voltage", None),
        "energy_mode": str(getattr(ev_data_context.selected_energy_mode, "value", "AC_three_phase")),
        "max_entries": max_schedule_entries,
    }


def default_schedule(evse_max_power_w: float, departure_time: int) -> list[Any]:
    """The SECC's own SAScheduleList: the EVSE maximum until departure (at most 24 h)."""
    from iso15118.shared.messages.datatypes import PVPMax
    from iso15118.shared.messages.enums import UnitSymbol
    from iso15118.shared.messages.iso15118_2.datatypes import (
        PMaxSchedule,
        PMaxScheduleEntry,
        RelativeTimeInterval,
        SAScheduleTuple,
    )

    horizon = min(departure_time or 86400, 86400)
    entry = PMaxScheduleEntry(p_max=pv(PVPMax, evse_max_power_w, UnitSymbol.WATT),
                              time_interval=RelativeTimeInterval(start=0, duration=horizon))
    schedule = PMaxSchedule(schedule_entries=[entry])
    return [SAScheduleTuple(sa_schedule_tuple_id=1, p_max_schedule=schedule)]


def encode_v2(data: list[dict]) -> dict:
    """EXI-encode bridge JSON tuples as Josev's ISO 15118-2 SECC does (each SalesTariff on its own for
    the signature, then the ChargeParameterDiscoveryRes) and decode them back (`josev_runner.py
    encode`); the codec must be set (`EXI().set_exi_codec`)."""
    from iso15118.shared.exi_codec import EXI
    from iso15118.shared.messages.datatypes import EVSENotification, PVEVSEMaxCurrent, PVEVSENominalVoltage
    from iso15118.shared.messages.enums import EVSEProcessing, Namespace, UnitSymbol
    from iso15118.shared.messages.iso15118_2.body import Body, ChargeParameterDiscoveryRes
    from iso15118.shared.messages.iso15118_2.datatypes import (
        ACEVSEChargeParameter,
        ACEVSEStatus,
        ResponseCode,
        SAScheduleList,
    )
    from iso15118.shared.messages.iso15118_2.header import MessageHeader
    from iso15118.shared.messages.iso15118_2.msgdef import V2GMessage

    tuples = tuples_to_josev(data)
    size = 0
    for t in tuples:
        if t.sales_tariff is not None:
            size += len(EXI().to_exi(t.sales_tariff, Namespace.ISO_V2_MSG_DEF))
    status = ACEVSEStatus(notification_max_delay=0, evse_notification=EVSENotification.NONE, rcd=False)
    ac = ACEVSEChargeParameter(ac_evse_status=status,
                               evse_nominal_voltage=pv(PVEVSENominalVoltage, 230, UnitSymbol.VOLTAGE),
                               evse_max_current=pv(PVEVSEMaxCurrent, 16, UnitSymbol.AMPERE))
    res = ChargeParameterDiscoveryRes(response_code=ResponseCode.OK, evse_processing=EVSEProcessing.FINISHED,
                                      sa_schedule_list=SAScheduleList(schedule_tuples=tuples),
                                      ac_charge_parameter=ac)
    msg = V2GMessage(header=MessageHeader(session_id="00AB12CD34EF5678"),
                     body=Body(charge_parameter_discovery_res=res))
    exi = EXI().to_exi(msg, Namespace.ISO_V2_MSG_DEF)
    back = EXI().from_exi(exi, Namespace.ISO_V2_MSG_DEF)
    decoded = tuples_from_josev(back.body.charge_parameter_discovery_res.sa_schedule_list.schedule_tuples)
    return {"ok": True, "bytes": size + len(exi), "decoded": decoded}
