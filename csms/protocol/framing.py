"""OCPP-J framing and schema checks, pure: raw text -> typed frame or the CALLERROR it deserves.

Public names: `CallFrame`, `ResultFrame`, `ErrorFrame`, `FrameError`, `parse_frame`,
`schema_violation`, `warm_up`, `call_error_json`, `call_result_json`, `call_json`, `ErrorCode`,
`STATION_ACTIONS`, `CSMS_ACTIONS`.

Error codes (OCPP-J 2.0.1, Part 4 §4.2.3 table "Valid Error Codes"; 2.0.1 names it
`FormatViolation`, OCPP 1.6 called it `FormationViolation`):
- frame is not JSON, not an array, or its message id cannot be read -> `RpcFrameworkError`,
  message id "-1" when unreadable;
- JSON nested deeper than `MAX_JSON_DEPTH` -> `FormatViolation` (checked before parsing, so
  deep input never reaches a recursive parser or validator);
- `NaN`, `Infinity`, `-Infinity` or a number that overflows to infinity (`1e400`): not JSON
  (RFC 8259 §6) -> `FormatViolation`; a string with an unpaired surrogate (`"\ud800"`, RFC 8259
  §8.2, cannot be stored as UTF-8) -> `FormatViolation`;
- message type number other than 2/3/4 -> `MessageTypeNotSupported`;
- CALL with missing elements -> `RpcFrameworkError`; payload not an object -> `FormatViolation`;
- action unknown to OCPP 2.0.1 -> `NotImplemented`; known but not accepted from a station
  -> `NotSupported`;
- schema: missing required field or too few/many items -> `OccurrenceConstraintViolation`;
  wrong JSON type -> `TypeConstraintViolation`; bad value (enum, length, range, pattern)
  -> `PropertyConstraintViolation`; unknown property -> `FormatViolation`.
- the schema's intent, beyond what the JSON files spell out: an `integer` is a 32-bit signed
  integer (OCPP 2.0.1 Part 2 §2.1.1 "Primitive datatypes"), a `number` stays within
  +-`MAX_DECIMAL`, and a `date-time` must be an RFC 3339 date-time (a missing offset is read
  as UTC) -> `PropertyConstraintViolation`; a fractional value for an `integer` ->
  `TypeConstraintViolation`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import fastjsonschema
from jsonschema import Draft4Validator, FormatChecker
from jsonschema.exceptions import ValidationError as SchemaError
from jsonschema.exceptions import best_match
from ocpp.messages import get_validator
from ocpp.v201.enums import Action

from evfleet.isotime import parse_iso_or_none
from evfleet.jsonsafe import MAX_JSON_DEPTH, depth_exceeds, dumps_compact, has_lone_surrogate, loads_finite

OCPP_VERSION = "2.0.1"
MAX_MESSAGE_ID_CHARS = 36
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
MAX_DECIMAL = 1e15  # |decimal| bound: far above any power, energy or current a site can see


class ErrorCode(StrEnum):
    """OCPP-J 2.0.1 CALLERROR codes."""

    FORMAT_VIOLATION = "FormatViolation"
    GENERIC_ERROR = "GenericError"
    INTERNAL_ERROR = "InternalError"
    MESSAGE_TYPE_NOT_SUPPORTED = "MessageTypeNotSupported"
    NOT_IMPLEMENTED = "NotImplemented"
    NOT_SUPPORTED = "NotSupported"
    OCCURRENCE_CONSTRAINT_VIOLATION = "OccurrenceConstraintViolation"
    PROPERTY_CONSTRAINT_VIOLATION = "PropertyConstraintViolation"
    PROTOCOL_ERROR = "ProtocolError"
    RPC_FRAMEWORK_ERROR = "RpcFrameworkError"
    SECURITY_ERROR = "SecurityError"
    TYPE_CONSTRAINT_VIOLATION = "TypeConstraintViolation"


# Messages a Charging Station sends (the csms answers them).
STATION_ACTIONS: frozenset[str] = frozenset({
    "Authorize", "BootNotification", "ClearedChargingLimit", "DataTransfer", "FirmwareStatusNotification",
    "Get15118EVCertificate", "GetCertificateStatus", "Heartbeat", "LogStatusNotification", "MeterValues",
    "NotifyChargingLimit", "NotifyCustomerInformation", "NotifyDisplayMessages", "NotifyEVChargingNeeds",
    "NotifyEVChargingSchedule", "NotifyEvent", "NotifyMonitoringReport", "NotifyReport",
    "PublishFirmwareStatusNotification", "ReportChargingProfiles", "ReservationStatusUpdate",
    "SecurityEventNotification", "SignCertificate", "StatusNotification", "TransactionEvent",
})
# Messages the csms sends to a station (allowed through the command protocol).
CSMS_ACTIONS: frozenset[str] = frozenset(a.value for a in Action) - (STATION_ACTIONS - {"DataTransfer"})


@dataclass(frozen=True)
class CallFrame:
    """[2, id, action, payload]."""

    unique_id: str
    action: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class ResultFrame:
    """[3, id, payload]."""

    unique_id: str
    payload: dict[str, Any]


@dataclass(frozen=True)
class ErrorFrame:
    """[4, id, code, description, details]."""

    unique_id: str
    code: str
    description: str
    details: dict[str, Any]


@dataclass(frozen=True)
class FrameError:
    """A frame that must be refused; `reply` False means log only (no CALLERROR is due)."""

    unique_id: str
    code: ErrorCode
    description: str
    reply: bool = True
    action: str = ""


Frame = CallFrame | ResultFrame | ErrorFrame


_HEAD = re.compile(r'\s*\[\s*(-?\d+)\s*,\s*"([^"\\]{1,36})"')


def _too_deep(text: str) -> FrameError:
    """The error for an over-deep frame; its message id is read without parsing the frame."""
    head = _HEAD.match(text)
    description = f"JSON nested deeper than {MAX_JSON_DEPTH} levels"
    if head is None:
        return FrameError("-1", ErrorCode.FORMAT_VIOLATION, description)
    return FrameError(head.group(2), ErrorCode.FORMAT_VIOLATION, description, reply=head.group(1) == "2")


def parse_frame(raw: str | bytes) -> Frame | FrameError:
    """Parse one WebSocket message into a frame, or the error to answer."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes | bytearray) else raw
        if depth_exceeds(text):
            return _too_deep(text)
        msg, non_finite = loads_finite(text)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return FrameError("-1", ErrorCode.RPC_FRAMEWORK_ERROR, "message is not valid JSON")
    if not isinstance(msg, list) or not msg:
        return FrameError("-1", ErrorCode.RPC_FRAMEWORK_ERROR, "message is not a non-empty JSON array")
    uid = msg[1] if len(msg) > 1 and isinstance(msg[1], str) and 0 < len(msg[1]) <= MAX_MESSAGE_ID_CHARS \
        and msg[1].isprintable() else None
    mtype = msg[0]
    if type(mtype) is not int or mtype not in (2, 3, 4):
        if uid is None:
            return FrameError("-1", ErrorCode.RPC_FRAMEWORK_ERROR, "message type and id cannot be read")
        return FrameError(uid, ErrorCode.MESSAGE_TYPE_NOT_SUPPORTED,
                          f"message type {mtype!r} is not supported")
    if uid is None:
        return FrameError("-1", ErrorCode.RPC_FRAMEWORK_ERROR,
                          "message id is missing, not a printable string or longer than 36 characters",
                          reply=mtype == 2)
    action = msg[2] if mtype == 2 and len(msg) > 2 and isinstance(msg[2], str) else ""
    if non_finite:
        return FrameError(uid, ErrorCode.FORMAT_VIOLATION,
                          "NaN, Infinity or a number out of range is not valid JSON", reply=mtype == 2,
                          action=action)
    if has_lone_surrogate(text, msg):
        return FrameError(uid, ErrorCode.FORMAT_VIOLATION, "string with an unpaired UTF-16 surrogate",
                          reply=mtype == 2, action=action)
    if mtype == 2:
        if len(msg) != 4 or not isinstance(msg[2], str):
            return FrameError(uid, ErrorCode.RPC_FRAMEWORK_ERROR,
                              "CALL must be [2, messageId, action, payload]")
        if not isinstance(msg[3], dict):
            return FrameError(uid, ErrorCode.FORMAT_VIOLATION, "CALL payload must be a JSON object",
                              action=msg[2])
        return CallFrame(uid, msg[2], msg[3])
    if mtype == 3:
        if len(msg) != 3 or not isinstance(msg[2], dict):
            return FrameError(uid, ErrorCode.RPC_FRAMEWORK_ERROR, "CALLRESULT must be [3, messageId, {}]",
                              reply=False)
        return ResultFrame(uid, msg[2])
    if len(msg) < 4 or not isinstance(msg[2], str):
        return FrameError(uid, ErrorCode.RPC_FRAMEWORK_ERROR, "CALLERROR must be [4, id, code, desc, {}]",
                          reply=False)
    details = msg[4] if len(msg) > 4 and isinstance(msg[4], dict) else {}
    return ErrorFrame(uid, msg[2], str(msg[3]), details)


_OCCURRENCE = {"required", "minItems", "maxItems", "minProperties", "maxProperties"}
_TYPE = {"type"}
_PROPERTY = {"enum", "maxLength", "minLength", "maximum", "minimum", "exclusiveMaximum", "exclusiveMinimum",
             "pattern", "format", "multipleOf", "const"}


def _code_for(error: SchemaError) -> ErrorCode:
    if error.validator in _OCCURRENCE:
        return ErrorCode.OCCURRENCE_CONSTRAINT_VIOLATION
    if error.validator in _TYPE:
        return ErrorCode.TYPE_CONSTRAINT_VIOLATION
    if error.validator in _PROPERTY:
        return ErrorCode.PROPERTY_CONSTRAINT_VIOLATION
    return ErrorCode.FORMAT_VIOLATION


def _inline_refs(node: Any, definitions: dict[str, Any], depth: int = 0) -> Any:
    """Replace `{"$ref": "#/definitions/X"}` by X (OCPP 2.0.1 schemas are not recursive)."""
    if depth > 50:
        raise ValueError("schema $ref nesting too deep")
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/definitions/"):
            target = definitions[ref.removeprefix("#/definitions/")]
            merged = {**{k: v for k, v in node.items() if k != "$ref"}, **target}
            return _inline_refs(merged, definitions, depth + 1)
        return {k: _inline_refs(v, definitions, depth + 1) for k, v in node.items() if k != "definitions"}
    if isinstance(node, list):
        return [_inline_refs(v, definitions, depth + 1) for v in node]
    return node


_RFC3339 = re.compile(r"\d{4}-\d\d-\d\d[Tt ]\d\d:\d\d:\d\d(\.\d{1,9})?([Zz]|[+-]\d\d:\d\d)?\Z")


def is_date_time(value: object) -> bool:
    """RFC 3339 date-time (offset optional, read as UTC) that is a real calendar moment."""
    if not isinstance(value, str):
        return True  # the type keyword judges non-strings
    if _RFC3339.match(value) is None:
        return False
    return parse_iso_or_none(value) is not None  # evfleet.isotime: the one parser


_FORMATS = FormatChecker(formats=())
_FORMATS.checks("date-time")(is_date_time)


_TYPE_BOUNDS: dict[str, tuple[float, float]] = {"integer": (INT32_MIN, INT32_MAX),
                                               "number": (-MAX_DECIMAL, MAX_DECIMAL)}


def _bounded(node: Any) -> Any:
    """Add the implicit bounds of OCPP primitive types: int32 for `integer`, +-MAX_DECIMAL for
    `number` (explicit schema bounds are kept when tighter)."""
    if isinstance(node, list):
        return [_bounded(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _bounded(v) for k, v in node.items()}
    bounds = _TYPE_BOUNDS.get(str(node.get("type")))
    if bounds is not None:
        out["minimum"] = max(bounds[0], out.get("minimum", bounds[0]))
        out["maximum"] = min(bounds[1], out.get("maximum", bounds[1]))
    return out


@functools.lru_cache(maxsize=256)
def _validator(action: str, request: bool) -> Draft4Validator:
    """The ocpp library's schema for `action`, with $refs inlined (ref resolution dominated the
    validation time) and the implicit type bounds added, as a cached Draft 4 validator that
    checks `date-time`."""
    schema = get_validator(2 if request else 3, action, OCPP_VERSION).schema
    inlined = _bounded(_inline_refs(schema, dict(schema.get("definitions", {}))))
    return Draft4Validator(inlined, format_checker=_FORMATS)


@functools.lru_cache(maxsize=256)
def _fast_check(action: str, request: bool) -> Callable[[Any], Any]:
    """The same schema compiled to Python by fastjsonschema (about 30x faster than jsonschema on
    TransactionEvent); used to accept valid payloads quickly, jsonschema names the error."""
    return fastjsonschema.compile(_validator(action, request).schema, use_default=False,
                                  use_formats=True, formats={"date-time": is_date_time})


WARM_CALLS = ("SetChargingProfile", "ClearChargingProfile", "GetBaseReport", "GetChargingProfiles")
"""Calls a node makes on its own (profiles, the device model after boot): the command executor
checks each request against its schema, and the station's answer is checked too."""


def warm_up() -> int:
    """Compile the schemas of every request a station sends, and of the requests and answers of
    `WARM_CALLS`, ahead of the first message; returns how many. A schema is otherwise compiled on the first
    message of its action, 50-400 ms on the event loop (a stall of every station's message
    meanwhile); `evfleet csms` runs this in a thread at start-up, before `gc.freeze`. Answers
    to rarer operator commands are still compiled when first needed."""
    compiled = 0
    station = {(a, True) for a in STATION_ACTIONS}
    for action, request in sorted(station | {(a, r) for a in WARM_CALLS for r in (True, False)}):
        try:
            _fast_check(action, request)
            compiled += 1
        except (OSError, ValueError, KeyError):
            continue  # no schema: schema_violation answers NotImplemented, as before
    return compiled


def schema_violation(action: str, payload: dict[str, Any], request: bool = True) -> FrameError | None:
    """Validate a payload against the OCPP 2.0.1 schema of `action` (request or response)."""
    try:
        validator = _validator(action, request)
        fast = _fast_check(action, request)
    except (OSError, ValueError, KeyError):
        return FrameError("", ErrorCode.NOT_IMPLEMENTED, f"no schema for action {action!r}", action=action)
    try:
        fast(payload)
        return None
    except fastjsonschema.JsonSchemaException:
        pass  # name the error with jsonschema (also the judge if the two ever disagree)
    error = best_match(validator.iter_errors(payload))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "(payload)"
    message = error.message if len(error.message) <= 160 else \
        f"value violates {error.validator!r} {str(error.validator_value)[:60]}"
    return FrameError("", _code_for(error), f"{where}: {message}"[:255], action=action)


def call_error_json(unique_id: str, code: str, description: str,
                    details: dict[str, Any] | None = None) -> str:
    """Serialised CALLERROR frame."""
    return dumps_compact([4, unique_id, code, description[:255], details or {}], default=None)


def call_result_json(unique_id: str, payload: dict[str, Any]) -> str:
    """Serialised CALLRESULT frame."""
    return dumps_compact([3, unique_id, payload], default=None)


def call_json(unique_id: str, action: str, payload: dict[str, Any]) -> str:
    """Serialised CALL frame."""
    return dumps_compact([2, unique_id, action, payload], default=None)
