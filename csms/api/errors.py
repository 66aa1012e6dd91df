"""Errors of the operator API and the one error body every 4xx/5xx response carries.

Exception tree::

    ApiError                 status + machine code + message + details
    ├── NotFound             404 not_found
    ├── Conflict             409 conflict
    ├── StationOffline       409 station_offline
    ├── Unauthorized         401 unauthorized
    ├── Forbidden            403 forbidden
    ├── (malformed JSON)     400 invalid_json (a body that is not JSON at all)
    ├── InvalidInput         422 validation_error
    ├── StationCallFailed    502 station_call_error (the station answered with a CALLERROR)
    └── StationTimeout       504 station_timeout

Body: ``{"error": {"code": str, "message": str, "details": object}}``.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error the API reports to the client with a status code and a stable code."""

    status_code = 400
    code = "bad_request"

    def __init__(self, message: str, details: Any = None, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details if details is not None else {}
        if code is not None:
            self.code = code


class NotFound(ApiError):
    """The addressed resource does not exist."""

    status_code = 404
    code = "not_found"


class Conflict(ApiError):
    """The request conflicts with the current state (e.g. the resource exists)."""

    status_code = 409
    code = "conflict"


class StationOffline(ApiError):
    """The station has no live connection to any csms node."""

    status_code = 409
    code = "station_offline"


class Unauthorized(ApiError):
    """Missing or unknown bearer token."""

    status_code = 401
    code = "unauthorized"


class Forbidden(ApiError):
    """The token's role may not do this."""

    status_code = 403
    code = "forbidden"


class InvalidInput(ApiError):
    """The request is well-formed JSON but not acceptable."""

    status_code = 422
    code = "validation_error"


class StationCallFailed(ApiError):
    """The station answered the call with a CALLERROR."""

    status_code = 502
    code = "station_call_error"


class StationTimeout(ApiError):
    """The station did not answer in time."""

    status_code = 504
    code = "station_timeout"


_STATUS_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 409: "conflict", 415: "unsupported_media_type",
    422: "validation_error", 429: "too_many_requests", 500: "internal_error", 502: "station_call_failed",
    504: "station_timeout",
}


class ErrorDetail(BaseModel):
    """The `error` member of every 4xx/5xx body."""

    code: str
    message: str
    details: Any = None


class ErrorResponse(BaseModel):
    """Every 4xx/5xx response body: `{"error": {"code", "message", "details"}}`."""

    error: ErrorDetail


def _documented(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorResponse, "description": _STATUS_CODES.get(code, "error").replace("_", " ")}
            for code in codes}


READ_ERRORS = _documented(400, 401, 403, 404, 422)
"""Documented error answers of read operations (viewer token)."""
ACT_ERRORS = _documented(400, 401, 403, 404, 409, 422, 502, 504)
"""Documented error answers of operations that change state or call a station (operator token)."""


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    """The single error body shape of the API."""
    return {"error": {"code": code, "message": message, "details": details if details is not None else {}}}


def _clean_validation_errors(errors: Any) -> list[dict[str, Any]]:
    """Pydantic errors reduced to JSON-safe {loc, msg, type}."""
    out = []
    for err in errors:
        out.append({"loc": [str(p) for p in err.get("loc", ())], "msg": str(err.get("msg", "")),
                    "type": str(err.get("type", ""))})
    return out


def install_error_handlers(app: FastAPI) -> None:
    """Map every error (ours, Starlette's, validation, unexpected) to the one error body."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
        return JSONResponse(error_body(exc.code, exc.message, exc.details), exc.status_code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _clean_validation_errors(exc.errors())
        bad_json = [e for e in errors if e["type"] == "json_invalid"]
        if bad_json:  # not JSON at all: a malformed request (400), not an unacceptable value (422)
            where = bad_json[0]["loc"][1] if len(bad_json[0]["loc"]) > 1 else "?"
            message = f"request body is not valid JSON (at byte {where}): {bad_json[0]['msg']}"
            return JSONResponse(error_body("invalid_json", message, {"errors": bad_json}), 400)
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        message = f"invalid request: {'.'.join(first['loc'])}: {first['msg']}"
        return JSONResponse(error_body("validation_error", message, {"errors": errors}), 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code, "http_error")
        return JSONResponse(error_body(code, str(exc.detail)), exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(error_body("internal_error", f"internal error: {type(exc).__name__}"), 500)
