"""Parsing grid signals received over MQTT (pure): the same models as the HTTP API."""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import ValidationError

from csms.api.site_inputs import InvalidSiteId, PriceSeriesInput, SiteLimitInput, check_site_id
from evfleet.jsonsafe import MAX_JSON_DEPTH, depth_exceeds, loads_finite

MAX_PAYLOAD_BYTES = 256_000


class InboundError(ValueError):
    """An inbound payload was refused (the message says why)."""


@dataclass(frozen=True)
class SiteInput:
    """A validated inbound site input."""

    site_id: str
    kind: str  # limit | prices
    value: SiteLimitInput | PriceSeriesInput


def parse_site_input(site_id: str, kind: str, payload: bytes) -> SiteInput:
    """Validate a `limit/set` or `prices/set` payload; InboundError with a reason otherwise.

    `limit`: `{"limit_kw": 42.5}` or a bare number `42.5`. `prices`: the JSON body of
    `PUT /api/v1/sites/{site}/prices`.
    """
    try:
        check_site_id(site_id)
    except InvalidSiteId as err:
        raise InboundError(str(err)) from err
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise InboundError(f"payload too large ({len(payload)} bytes, max {MAX_PAYLOAD_BYTES})")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as err:
        raise InboundError(f"payload is not JSON: {err}") from err
    if depth_exceeds(text):
        raise InboundError(f"payload nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        data, non_finite = loads_finite(text)
    except (ValueError, RecursionError) as err:
        raise InboundError(f"payload is not JSON: {err}") from err
    if non_finite:
        raise InboundError("payload is not JSON: NaN, Infinity or a number out of range")
    try:
        if kind == "limit":
            if isinstance(data, bool):
                raise InboundError("limit must be a number or {\"limit_kw\": number}")
            if isinstance(data, int | float):
                data = {"limit_kw": data}
            return SiteInput(site_id, kind, SiteLimitInput.model_validate(data))
        if kind == "prices":
            return SiteInput(site_id, kind, PriceSeriesInput.model_validate(data))
    except ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(p) for p in first.get("loc", ())) or "payload"
        raise InboundError(f"invalid {kind}: {loc}: {first.get('msg')}") from err
    raise InboundError(f"unknown input kind {kind!r}")
