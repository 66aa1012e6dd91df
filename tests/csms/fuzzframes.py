"""Hostile OCPP-J frames for the fuzz test, each one invalid by construction, with what the csms
must do with it. Pure and seeded: the same seed gives the same frames."""

from __future__ import annotations

import copy
import json
import random
import string
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

TS = "2026-03-02T17:00:00Z"
MAX_FRAME_BYTES = 65536

# valid payloads (the test checks them against the schema) and their mutable leaves
BASES: dict[str, dict[str, Any]] = {
    "Heartbeat": {},
    "BootNotification": {"reason": "PowerUp", "chargingStation": {"model": "M", "vendorName": "V"}},
    "StatusNotification": {"timestamp": TS, "connectorStatus": "Available", "evseId": 1, "connectorId": 1},
    "TransactionEvent": {"eventType": "Started", "timestamp": TS, "triggerReason": "Authorized", "seqNo": 0,
                         "transactionInfo": {"transactionId": "FUZZ-TX"}, "evse": {"id": 1, "connectorId": 1},
                         "idToken": {"idToken": "FUZZ-TOKEN", "type": "ISO14443"},
                         "meterValue": [{"timestamp": TS, "sampledValue": [
                             {"value": 1000.0, "measurand": "Power.Active.Import"}]}]},
    "MeterValues": {"evseId": 1, "meterValue": [{"timestamp": TS, "sampledValue": [{"value": 5.0}]}]},
    "DataTransfer": {"vendorId": "fuzz", "messageId": "m", "data": {"a": [1, 2]}},
    "Authorize": {"idToken": {"idToken": "FUZZ-TOKEN", "type": "ISO14443"}},
    "NotifyEVChargingNeeds": {"evseId": 1, "chargingNeeds": {
        "requestedEnergyTransfer": "AC_three_phase",
        "acChargingParameters": {"energyAmount": 20000, "evMinCurrent": 6, "evMaxCurrent": 32,
                                 "evMaxVoltage": 400}}},
    "SecurityEventNotification": {"type": "FuzzEvent", "timestamp": TS},
    "NotifyEvent": {"generatedAt": TS, "seqNo": 0, "eventData": [{
        "eventId": 1, "timestamp": TS, "trigger": "Alerting", "actualValue": "1",
        "eventNotificationType": "HardWiredNotification", "component": {"name": "C"},
        "variable": {"name": "V"}}]},
}
INT_PATHS: dict[str, list[tuple[Any, ...]]] = {
    "TransactionEvent": [("seqNo",), ("evse", "id"), ("evse", "connectorId")],
    "StatusNotification": [("evseId",), ("connectorId",)],
    "MeterValues": [("evseId",)],
    "NotifyEVChargingNeeds": [("evseId",), ("chargingNeeds", "acChargingParameters", "energyAmount")],
    "NotifyEvent": [("seqNo",), ("eventData", 0, "eventId")],
}
NUMBER_PATHS: dict[str, list[tuple[Any, ...]]] = {
    "TransactionEvent": [("meterValue", 0, "sampledValue", 0, "value")],
    "MeterValues": [("meterValue", 0, "sampledValue", 0, "value")],
    **{k: v for k, v in INT_PATHS.items() if k != "TransactionEvent"},
}
DATE_PATHS: dict[str, list[tuple[Any, ...]]] = {
    "TransactionEvent": [("timestamp",), ("meterValue", 0, "timestamp")],
    "StatusNotification": [("timestamp",)],
    "MeterValues": [("meterValue", 0, "timestamp")],
    "SecurityEventNotification": [("timestamp",)],
    "NotifyEvent": [("generatedAt",), ("eventData", 0, "timestamp")],
}
STRING_PATHS: dict[str, list[tuple[Any, ...]]] = {
    "BootNotification": [("reason",), ("chargingStation", "model"), ("chargingStation", "vendorName")],
    "StatusNotification": [("connectorStatus",)],
    "TransactionEvent": [("eventType",), ("triggerReason",), ("transactionInfo", "transactionId")],
    "DataTransfer": [("vendorId",)],
    "Authorize": [("idToken", "idToken"), ("idToken", "type")],
    "SecurityEventNotification": [("type",)],
}
REQUIRED: dict[str, list[tuple[Any, ...]]] = {
    "BootNotification": [("reason",), ("chargingStation",), ("chargingStation", "model")],
    "StatusNotification": [("timestamp",), ("connectorStatus",), ("evseId",), ("connectorId",)],
    "TransactionEvent": [("eventType",), ("timestamp",), ("triggerReason",), ("seqNo",),
                         ("transactionInfo",)],
    "MeterValues": [("evseId",), ("meterValue",)],
    "DataTransfer": [("vendorId",)],
    "Authorize": [("idToken",)],
    "SecurityEventNotification": [("type",), ("timestamp",)],
    "NotifyEvent": [("generatedAt",), ("seqNo",), ("eventData",)],
}
NON_DATES = ["yesterday", "2026-02-30T00:00:00Z", "2026-13-01T00:00:00Z", "2026-01-01", "", "0",
             "2026-01-01T25:00:00Z", "2026-01-01T00:00:00Z\n", "9999-99-99T99:99:99Z", "now",
             "2026-01-01T00:00:00+99:00", "T00:00:00Z", "1700000000"]
NON_FINITE = ["NaN", "Infinity", "-Infinity", "1e400", "-1e999"]
BAD_INTS: list[Any] = [2**31, -(2**31) - 1, 10**20, 10**300, 1e308, 2.5, -1.5e10]
CSMS_ONLY = ["Reset", "SetChargingProfile", "RequestStartTransaction", "GetVariables", "ClearCache"]
JUNK = ["[]", "{}", "null", "42", '"text"', "[9, \"j\"]", "[2]", "[2, \"j-1\"]",
        "[2, \"j-2\", \"Heartbeat\"]",
        "[2, 5, \"Heartbeat\", {}]", "[2, null, \"Heartbeat\", {}]", "[2, \"j-3\", 7, {}]",
        "[2, \"j-4\", \"Heartbeat\", []]", "[2, \"j-5\", \"Heartbeat\", \"x\"]",
        "[\"2\", \"j-6\", \"Heartbeat\", {}]",
        "[2.0, \"j-7\", \"Heartbeat\", {}]", "[true, \"j-8\", \"Heartbeat\", {}]",
        "[2, \"" + "x" * 37 + "\", \"Heartbeat\", {}]", "[2, \"\", \"Heartbeat\", {}]",
        "[2, \"a\\u0000b\", \"Heartbeat\", {}]", "[2, \"j-9\", \"Heartbeat\", {}, {}]"]
SILENT = ["[3, \"nobody-asked\", {}]", "[4, \"nobody-asked\", \"GenericError\", \"x\", {}]", "[3, \"x\"]",
          "[4, \"x\"]", "[3]", "[4]", "[3, 5, {}]"]


@dataclass(frozen=True)
class Hostile:
    """One frame and the expected reaction: `error` (a CALLERROR; `uid` must match unless it is
    None), `silent` (no answer) or `close` (the connection is closed with 1009)."""

    kind: str
    frame: str | bytes
    expect: str = "error"
    uid: str | None = None
    code: str | None = None


def _set(doc: Any, path: tuple[Any, ...], value: Any) -> None:
    for step in path[:-1]:
        doc = doc[step]
    doc[path[-1]] = value


def _delete(doc: Any, path: tuple[Any, ...]) -> None:
    for step in path[:-1]:
        doc = doc[step]
    del doc[path[-1]]


def _call(uid: str, action: str, payload: Any) -> str:
    return json.dumps([2, uid, action, payload])


def _placeholder(rng: random.Random, uid: str, action: str, path: tuple[Any, ...], token: str) -> str:
    """A CALL whose value at `path` is the raw JSON text `token` (NaN, escapes...)."""
    payload = copy.deepcopy(BASES[action])
    _set(payload, path, "__FUZZ_TOKEN__")
    return _call(uid, action, payload).replace('"__FUZZ_TOKEN__"', token)


def _nest(depth: int, rng: random.Random) -> str:
    if rng.random() < 0.5:
        return "[" * depth + "1" + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


def hostile_frames(n: int, seed: int = 11, oversized_every: int = 500) -> Iterator[Hostile]:
    """`n` hostile frames of every kind, mixed."""
    rng = random.Random(seed)
    kinds = ["nonfinite", "bigint", "nondate", "deep", "nonjson", "wrongtype", "unknown_action",
             "csms_only", "missing", "extra", "junk", "silent", "surrogate", "enum", "toolong", "notobject"]
    for i in range(n):
        uid = f"fz-{i}"
        if oversized_every and i % oversized_every == oversized_every - 1:
            payload = {"vendorId": "v", "data": "x" * MAX_FRAME_BYTES}
            yield Hostile("oversized", _call(uid, "DataTransfer", payload), expect="close")
            continue
        kind = rng.choice(kinds)
        if kind == "nonfinite":
            action = rng.choice(list(NUMBER_PATHS))
            path = rng.choice(NUMBER_PATHS[action])
            yield Hostile(kind, _placeholder(rng, uid, action, path, rng.choice(NON_FINITE)), uid=uid,
                          code="FormatViolation")
        elif kind == "bigint":
            action = rng.choice(list(INT_PATHS))
            payload = copy.deepcopy(BASES[action])
            _set(payload, rng.choice(INT_PATHS[action]), rng.choice(BAD_INTS))
            yield Hostile(kind, _call(uid, action, payload), uid=uid)
        elif kind == "nondate":
            action = rng.choice(list(DATE_PATHS))
            payload = copy.deepcopy(BASES[action])
            _set(payload, rng.choice(DATE_PATHS[action]), rng.choice(NON_DATES))
            yield Hostile(kind, _call(uid, action, payload), uid=uid, code="PropertyConstraintViolation")
        elif kind == "deep":
            depth = rng.choice([33, 40, 100, 990, 5000, 20000])
            if rng.random() < 0.8:
                frame = f'[2, "{uid}", "DataTransfer", {{"vendorId": "v", "data": {_nest(depth, rng)}}}]'
                hostile = Hostile(kind, frame, uid=uid, code="FormatViolation")
            else:
                hostile = Hostile(kind, _nest(depth, rng), code="FormatViolation")
            too_big = len(hostile.frame) > MAX_FRAME_BYTES
            yield Hostile(kind, hostile.frame, expect="close") if too_big else hostile
        elif kind == "nonjson":
            style = rng.randrange(5)
            if style == 0:
                frame: str | bytes = b"\xff" + rng.randbytes(rng.randrange(1, 200))
            elif style == 1:
                frame = "x" + "".join(rng.choices(string.printable, k=rng.randrange(0, 200)))
            elif style == 2:
                full = _call(uid, "Heartbeat", {})
                frame = full[:rng.randrange(1, len(full) - 1)]
            elif style == 3:
                frame = _call(uid, "Heartbeat", {}) + " trailing"
            else:
                frame = "[2, 'single', 'Heartbeat', {}]"
            yield Hostile(kind, frame, code="RpcFrameworkError")
        elif kind == "wrongtype":
            action = rng.choice(list(STRING_PATHS))
            payload = copy.deepcopy(BASES[action])
            _set(payload, rng.choice(STRING_PATHS[action]), rng.choice([5, 1.5, True, None, [], {"x": 1}]))
            yield Hostile(kind, _call(uid, action, payload), uid=uid)
        elif kind == "unknown_action":
            action = "Fuzz" + "".join(rng.choices(string.ascii_letters, k=rng.randrange(1, 30)))
            yield Hostile(kind, _call(uid, action, {}), uid=uid, code="NotImplemented")
        elif kind == "csms_only":
            yield Hostile(kind, _call(uid, rng.choice(CSMS_ONLY), {"type": "Immediate"}), uid=uid,
                          code="NotSupported")
        elif kind == "missing":
            action = rng.choice(list(REQUIRED))
            payload = copy.deepcopy(BASES[action])
            _delete(payload, rng.choice(REQUIRED[action]))
            yield Hostile(kind, _call(uid, action, payload), uid=uid, code="OccurrenceConstraintViolation")
        elif kind == "extra":
            action = rng.choice(list(BASES))
            payload = {**copy.deepcopy(BASES[action]), "zzzFuzz": rng.choice([1, "x", None, [1]])}
            yield Hostile(kind, _call(uid, action, payload), uid=uid, code="FormatViolation")
        elif kind == "junk":
            yield Hostile(kind, rng.choice(JUNK))
        elif kind == "silent":
            yield Hostile(kind, rng.choice(SILENT), expect="silent")
        elif kind == "surrogate":
            action = rng.choice(list(STRING_PATHS))
            path = rng.choice(STRING_PATHS[action])
            yield Hostile(kind, _placeholder(rng, uid, action, path, '"\\ud800x"'), uid=uid,
                          code="FormatViolation")
        elif kind == "enum":
            payload = copy.deepcopy(BASES["StatusNotification"])
            payload["connectorStatus"] = rng.choice(["Exploded", "available", "", "Available "])
            yield Hostile(kind, _call(uid, "StatusNotification", payload), uid=uid,
                          code="PropertyConstraintViolation")
        elif kind == "toolong":
            payload = copy.deepcopy(BASES["DataTransfer"])
            payload["vendorId"] = "v" * rng.randrange(256, 5000)
            yield Hostile(kind, _call(uid, "DataTransfer", payload), uid=uid,
                          code="PropertyConstraintViolation")
        else:  # notobject
            yield Hostile(kind, json.dumps([2, uid, rng.choice(list(BASES)), rng.choice(["x", 1, [], None])]),
                          uid=uid, code="FormatViolation")
