"""A small OCPP 2.0.1 device model for simulated stations (GetVariables / SetVariables / GetBaseReport).

Pure: a table of (component, evse, variable) -> `Variable`, answers shaped like the
GetVariableResult / SetVariableResult / ReportData objects of the spec (camelCase dicts).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

VarKey = tuple[str, int | None, str]  # (component name, evse id or None, variable name)


@dataclass(slots=True)
class Variable:
    """One variable with its Actual value, mutability and type."""

    value: str
    mutability: str = "ReadOnly"  # ReadOnly | ReadWrite | WriteOnly
    data_type: str = "string"  # string | integer | decimal | boolean | OptionList ...
    unit: str | None = None
    validate: Callable[[str], bool] | None = None
    max_limit: float | None = None

    def accepts(self, value: str) -> bool:
        """True if `value` is valid for this variable's type and rule."""
        try:
            if self.data_type == "integer":
                int(value)
            elif self.data_type == "decimal":
                float(value)
            elif self.data_type == "boolean" and value not in ("true", "false"):
                return False
        except ValueError:
            return False
        return self.validate is None or self.validate(value)


def _positive_int(value: str) -> bool:
    return int(value) >= 0


class DeviceModel:
    """Variables of one station; `on_change` is told about accepted writes."""

    __slots__ = ("_vars", "on_change")

    def __init__(self, variables: dict[VarKey, Variable]) -> None:
        self._vars = variables
        self.on_change: Callable[[VarKey, str], None] | None = None

    @classmethod
    def default(
        cls,
        station_id: str,
        evse_max_w: list[float],
        evse_phases: list[int],
        security_profile: int,
        heartbeat_s: int,
        tx_updated_s: int,
        aligned_s: int,
    ) -> DeviceModel:
        """The variables a simulated station exposes."""
        v: dict[VarKey, Variable] = {
            ("OCPPCommCtrlr", None, "HeartbeatInterval"): Variable(
                str(heartbeat_s), "ReadWrite", "integer", "s", _positive_int
            ),
            ("OCPPCommCtrlr", None, "OfflineThreshold"): Variable(
                "60", "ReadWrite", "integer", "s", _positive_int
            ),
            ("SampledDataCtrlr", None, "TxUpdatedInterval"): Variable(
                str(tx_updated_s), "ReadWrite", "integer", "s", _positive_int
            ),
            ("SampledDataCtrlr", None, "TxUpdatedMeasurands"): Variable(
                "Energy.Active.Import.Register,Power.Active.Import,Current.Import,SoC",
                "ReadOnly",
                "MemberList",
            ),
            ("AlignedDataCtrlr", None, "Interval"): Variable(
                str(aligned_s), "ReadWrite", "integer", "s", _positive_int
            ),
            ("AlignedDataCtrlr", None, "Measurands"): Variable(
                "Energy.Active.Import.Register,Power.Active.Import", "ReadOnly", "MemberList"
            ),
            ("SmartChargingCtrlr", None, "Enabled"): Variable("true", "ReadOnly", "boolean"),
            ("SmartChargingCtrlr", None, "RateUnit"): Variable("A,W", "ReadOnly", "MemberList"),
            ("SmartChargingCtrlr", None, "PeriodsPerSchedule"): Variable("1024", "ReadOnly", "integer"),
            ("SmartChargingCtrlr", None, "ProfileStackLevel"): Variable("100", "ReadOnly", "integer"),
            ("SmartChargingCtrlr", None, "ChargingProfileMaxStackLevel"): Variable(
                "100", "ReadOnly", "integer"
            ),
            ("TxCtrlr", None, "TxStartPoint"): Variable("EVConnected", "ReadOnly", "MemberList"),
            ("TxCtrlr", None, "TxStopPoint"): Variable("EVConnected", "ReadOnly", "MemberList"),
            ("TxCtrlr", None, "StopTxOnInvalidId"): Variable("true", "ReadOnly", "boolean"),
            ("SecurityCtrlr", None, "SecurityProfile"): Variable(
                str(security_profile), "ReadOnly", "integer"
            ),
            ("SecurityCtrlr", None, "Identity"): Variable(station_id, "ReadOnly"),
            ("DeviceDataCtrlr", None, "ItemsPerMessage"): Variable("50", "ReadOnly", "integer"),
            ("ChargingStation", None, "AvailabilityState"): Variable("Available", "ReadOnly", "OptionList"),
            ("ChargingStation", None, "Model"): Variable("SimStation", "ReadOnly"),
            ("ISO15118Ctrlr", None, "Enabled"): Variable("true", "ReadOnly", "boolean"),
        }
        for i, (max_w, phases) in enumerate(zip(evse_max_w, evse_phases, strict=True), start=1):
            v[("EVSE", i, "Power")] = Variable("0", "ReadOnly", "decimal", "W", max_limit=max_w)
            v[("EVSE", i, "SupplyPhases")] = Variable(str(phases), "ReadOnly", "integer")
            v[("EVSE", i, "AvailabilityState")] = Variable("Available", "ReadOnly", "OptionList")
        return cls(v)

    def get(self, component: str, variable: str, evse_id: int | None = None) -> str:
        """Actual value of a known variable (KeyError if unknown)."""
        return self._vars[(component, evse_id, variable)].value

    def put(self, component: str, variable: str, value: str, evse_id: int | None = None) -> None:
        """Set a value from inside the station (no mutability check)."""
        self._vars[(component, evse_id, variable)].value = value

    def _lookup(self, component: dict[str, Any], variable: dict[str, Any]) -> tuple[str, Variable | None]:
        name = component.get("name", "")
        evse = component.get("evse") or {}
        key = (name, evse.get("id"), variable.get("name", ""))
        if not any(k[0] == name and k[1] == key[1] for k in self._vars):
            return "UnknownComponent", None
        var = self._vars.get(key)
        return ("Accepted", var) if var is not None else ("UnknownVariable", None)

    def get_variables(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """GetVariableResult list for GetVariableData requests (snake_case in, camelCase out)."""
        results = []
        for req in requests:
            attr = req.get("attribute_type", "Actual")
            status, var = self._lookup(req["component"], req["variable"])
            out: dict[str, Any] = {
                "attributeStatus": status,
                "attributeType": attr,
                "component": _camel(req["component"]),
                "variable": _camel(req["variable"]),
            }
            if var is not None:
                if attr != "Actual":
                    out["attributeStatus"] = "NotSupportedAttributeType"
                elif var.mutability == "WriteOnly":
                    out["attributeStatus"] = "Rejected"
                else:
                    out["attributeValue"] = var.value
            results.append(out)
        return results

    def set_variables(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """SetVariableResult list; a write applies only if the variable exists, is writable and valid."""
        results = []
        for req in requests:
            attr = req.get("attribute_type", "Actual")
            status, var = self._lookup(req["component"], req["variable"])
            if var is not None:
                value = str(req["attribute_value"])
                if attr != "Actual":
                    status = "NotSupportedAttributeType"
                elif var.mutability == "ReadOnly" or not var.accepts(value):
                    status = "Rejected"
                else:
                    var.value = value
                    evse = (req["component"].get("evse") or {}).get("id")
                    if self.on_change is not None:
                        self.on_change((req["component"]["name"], evse, req["variable"]["name"]), value)
            results.append(
                {
                    "attributeStatus": status,
                    "attributeType": attr,
                    "component": _camel(req["component"]),
                    "variable": _camel(req["variable"]),
                }
            )
        return results

    def report(self, base: str) -> list[dict[str, Any]]:
        """ReportData entries for GetBaseReport (ConfigurationInventory = writable ones only)."""
        out = []
        for (component, evse, name), var in sorted(
            self._vars.items(), key=lambda kv: (kv[0][0], kv[0][1] or 0, kv[0][2])
        ):
            if base == "ConfigurationInventory" and var.mutability == "ReadOnly":
                continue
            comp: dict[str, Any] = {"name": component}
            if evse is not None:
                comp["evse"] = {"id": evse}
            attrs: dict[str, Any] = {"type": "Actual", "mutability": var.mutability}
            if var.mutability != "WriteOnly":
                attrs["value"] = var.value
            chars: dict[str, Any] = {"dataType": var.data_type, "supportsMonitoring": False}
            if var.unit:
                chars["unit"] = var.unit
            if var.max_limit is not None:
                chars["maxLimit"] = var.max_limit
            out.append(
                {
                    "component": comp,
                    "variable": {"name": name},
                    "variableAttribute": [attrs],
                    "variableCharacteristics": chars,
                }
            )
        return out


def _camel(obj: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in obj.items():
        parts = k.split("_")
        key = parts[0] + "".join(p[:1].upper() + p[1:] for p in parts[1:])
        out[key] = _camel(v) if isinstance(v, dict) else v
    return out
