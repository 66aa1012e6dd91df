"""The bridge's wire format (pure): schedule tuples and the EV's needs as the Josev runners send them.

The station side (`bridge.py`) and the Josev side (`josev_wire.py`, `josev_v20.py`) exchange
SAScheduleTuples as JSON: `{"id", "pmax": [[start_s, W, duration_s]], "tariff": {"id", "levels",
"entries": [[start_s, level, duration_s, price]]}}`; ISO 15118-2 needs as `needs_from_josev` reads
them (ISO 15118-20 needs: `v20.needs_from_v20`).
"""

from __future__ import annotations

from typing import Any

from evse_sim.iso15118.messages import (
    AcEvChargeParameter,
    ChargeParameterDiscoveryReq,
    DcEvChargeParameter,
    EnergyTransferMode,
    PMaxScheduleEntry,
    SalesTariff,
    SalesTariffEntry,
    SAScheduleTuple,
)


def tuples_to_json(tuples: tuple[SAScheduleTuple, ...]) -> list[dict[str, Any]]:
    """SAScheduleTuples -> bridge JSON."""
    out: list[dict[str, Any]] = []
    for t in tuples:
        tariff = None
        if t.sales_tariff is not None:
            tariff = {"id": t.sales_tariff.sales_tariff_id, "levels": t.sales_tariff.num_e_price_levels,
                      "entries": [[e.start_s, e.e_price_level, e.duration_s, e.price_per_kwh]
                                  for e in t.sales_tariff.entries]}
        out.append({"id": t.sa_schedule_tuple_id,
                    "pmax": [[e.start_s, e.pmax_w, e.duration_s] for e in t.pmax_schedule], "tariff": tariff})
    return out


def tuples_from_json(data: list[dict[str, Any]]) -> tuple[SAScheduleTuple, ...]:
    """Bridge JSON -> SAScheduleTuples."""
    out = []
    for t in data:
        tariff = None
        if t.get("tariff"):
            tr = t["tariff"]
            tariff = SalesTariff(tr["id"], tuple(SalesTariffEntry(int(s), lvl, d, price)
                                                 for s, lvl, d, price in tr["entries"]), tr.get("levels"))
        out.append(SAScheduleTuple(int(t["id"]), tuple(PMaxScheduleEntry(int(s), float(w), d)
                                                       for s, w, d in t["pmax"]), tariff))
    return tuple(out)


def needs_from_josev(data: dict[str, Any], phases: int) -> ChargeParameterDiscoveryReq:
    """The SECC runner's view of the EV's ChargeParameterDiscoveryReq -> our message."""
    mode = str(data.get("energy_mode") or "AC_three_phase").removesuffix("_core")
    if mode.startswith("DC"):
        dc = data.get("dc") or {}

        def num(value: Any) -> float | None:
            return None if value is None else float(value)

        def pct(value: Any) -> int | None:
            return None if value is None else int(value)

        return ChargeParameterDiscoveryReq(
            EnergyTransferMode.DC,
            DcEvChargeParameter(
                data.get("departure_time_s"), float(data.get("e_amount_wh") or 0),
                float(data.get("ev_max_voltage_v") or 0), float(data.get("ev_max_current_a") or 0), 0.0,
                num(dc.get("max_power_w")), pct(dc.get("soc")), num(dc.get("capacity_wh")),
                pct(dc.get("full_soc")), pct(dc.get("bulk_soc"))),
            data.get("max_entries"))
    return ChargeParameterDiscoveryReq(
        EnergyTransferMode(mode) if mode in EnergyTransferMode._value2member_map_ else
        (EnergyTransferMode.AC_SINGLE_PHASE if phases == 1 else EnergyTransferMode.AC_THREE_PHASE),
        AcEvChargeParameter(data.get("departure_time_s"), float(data.get("e_amount_wh") or 0),
                            float(data.get("ev_max_voltage_v") or 400),
                            float(data.get("ev_max_current_a") or 0),
                            float(data.get("ev_min_current_a") or 0)),
        data.get("max_entries"))
