"""OCPP 1.6J schema checks and CALLERROR spelling, pure.

Public names: `check_schema_16`, `wire_code_16`, `ALL_ACTIONS_16`, `STATION_ACTIONS_16`,
`CSMS_ACTIONS_16`, `SUBPROTOCOL_16`.

The codes are the 2.0.1 ones (`csms.protocol.framing.ErrorCode`) spelled as OCPP-J 1.6
§4.2.3 names them: `FormatViolation` -> `FormationViolation`, `OccurrenceConstraintViolation`
-> `OccurenceConstraintViolation` (sic), and the 2.0.1-only framing codes (`RpcFrameworkError`,
`MessageTypeNotSupported`) -> `FormationViolation` (the frame is not a well-formed PDU).

Schema errors: missing required field -> OccurenceConstraintViolation, wrong JSON type ->
TypeConstraintViolation, bad value (enum, length, range) -> PropertyConstraintViolation,
unknown property -> FormationViolation. As for 2.0.1 (`csms.protocol.framing`), an `integer`
is int32, a `number` within +-MAX_DECIMAL and a `date-time` a real RFC 3339 date-time
(PropertyConstraintViolation). `multipleOf` (0.1 on charging limits) is not checked: binary
floats make 16.1 fail it; the csms floors the limits it sends to 0.1 itself.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastjsonschema
import ocpp.v16
from jsonschema import Draft4Validator, FormatChecker
from jsonschema.exceptions import ValidationError as SchemaError
from jsonschema.exceptions import best_match
from ocpp.v16.enums import Action

from csms.protocol.framing import INT32_MAX, INT32_MIN, MAX_DECIMAL, ErrorCode, FrameError, is_date_time

SUBPROTOCOL_16 = "ocpp1.6"
_SCHEMAS = Path(ocpp.v16.__file__).parent / "schemas"

ALL_ACTIONS_16: frozenset[str] = frozenset(a.value for a in Action)
STATION_ACTIONS_16: frozenset[str] = frozenset({
    "Authorize", "BootNotification", "DataTransfer", "DiagnosticsStatusNotification",
    "FirmwareStatusNotification", "Heartbeat", "MeterValues", "StartTransaction", "StatusNotification",
    "StopTransaction", "LogStatusNotification", "SecurityEventNotification", "SignCertificate",
    "SignedFirmwareStatusNotification",
})
CSMS_ACTIONS_16: frozenset[str] = ALL_ACTIONS_16 - (STATION_ACTIONS_16 - {"DataTransfer"})

_WIRE: dict[ErrorCode, str] = {
    ErrorCode.FORMAT_VIOLATION: "FormationViolation",
    ErrorCode.OCCURRENCE_CONSTRAINT_VIOLATION: "OccurenceConstraintViolation",
    ErrorCode.RPC_FRAMEWORK_ERROR: "FormationViolation",
    ErrorCode.MESSAGE_TYPE_NOT_SUPPORTED: "FormationViolation",
}
_OCCURRENCE = {"required", "minItems", "maxItems", "minProperties", "maxProperties"}
_PROPERTY = {"enum", "maxLength", "minLength", "maximum", "minimum", "exclusiveMaximum", "exclusiveMinimum",
             "pattern", "format", "const"}


def wire_code_16(code: ErrorCode) -> str:
    """The OCPP 1.6 spelling of a CALLERROR code."""
    return _WIRE.get(code, code.value)


def _code_for(error: SchemaError) -> ErrorCode:
    if error.validator in _OCCURRENCE:
        return ErrorCode.OCCURRENCE_CONSTRAINT_VIOLATION
    if error.validator == "type":
        return ErrorCode.TYPE_CONSTRAINT_VIOLATION
    if error.validator in _PROPERTY:
        return ErrorCode.PROPERTY_CONSTRAINT_VIOLATION
    return ErrorCode.FORMAT_VIOLATION


_BOUNDS: dict[str, tuple[float, float]] = {"integer": (INT32_MIN, INT32_MAX),
                                           "number": (-MAX_DECIMAL, MAX_DECIMAL)}
_FORMATS = FormatChecker(formats=())
_FORMATS.checks("date-time")(is_date_time)


def _prepared(node: Any) -> Any:
    """The schema without `multipleOf`, with the implicit int32 / decimal bounds."""
    if isinstance(node, list):
        return [_prepared(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _prepared(v) for k, v in node.items() if k != "multipleOf"}
    bounds = _BOUNDS.get(str(node.get("type")))
    if bounds is not None:
        out["minimum"] = max(bounds[0], out.get("minimum", bounds[0]))
        out["maximum"] = min(bounds[1], out.get("maximum", bounds[1]))
    return out


@functools.lru_cache(maxsize=128)
def _validator(action: str, request: bool) -> Draft4Validator:
    """The `ocpp` library's 1.6 schema file, read here: its own cached `get_validator` keeps the
    first caller's float parser, and the library's 1.6 clients need Decimal in the same process."""
    if not action.isalnum():
        raise KeyError(action)
    path = _SCHEMAS / f"{action}{'' if request else 'Response'}.json"
    schema = json.loads(path.read_text(encoding="utf-8-sig"))
    return Draft4Validator(_prepared(schema), format_checker=_FORMATS)


@functools.lru_cache(maxsize=128)
def _fast_check(action: str, request: bool) -> Callable[[Any], Any]:
    return fastjsonschema.compile(_validator(action, request).schema, use_default=False, use_formats=True,
                                  formats={"date-time": is_date_time})


def check_schema_16(action: str, payload: dict[str, Any], request: bool = True) -> FrameError | None:
    """Validate a payload against the OCPP 1.6 schema of `action` (request or response)."""
    try:
        validator = _validator(action, request)
        fast = _fast_check(action, request)
    except (OSError, ValueError, KeyError):
        return FrameError("", ErrorCode.NOT_IMPLEMENTED, f"no OCPP 1.6 schema for {action!r}", action=action)
    try:
        fast(payload)
        return None
    except fastjsonschema.JsonSchemaException:
        pass
    error = best_match(validator.iter_errors(payload))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "(payload)"
    return FrameError("", _code_for(error), f"{where}: {error.message}"[:255], action=action)
