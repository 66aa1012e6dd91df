"""Grid signals for the optimizer: a site's power limit and its price series.

Both the HTTP API and the MQTT subscriber validate with the same models and write with
`SiteInputWriter`: the site hash / prices key and a `site.limit` / `site.prices` event on
the stream, in one MULTI, so the optimizer worker sees the new input and re-plans.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from evfleet.clock import Clock
from evfleet.events import Event, EventType
from evfleet.keys import Keys
from evfleet.store.multi import SlotMulti

SITE_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}\Z")
STREAM_MAXLEN = 100_000
MAX_PRICE_STEPS = 2016  # two weeks of 10-minute steps


class SiteLimitInput(BaseModel):
    """A new site power limit."""

    model_config = ConfigDict(extra="forbid")

    limit_kw: float = Field(..., gt=0, le=1_000_000, description="site import limit in kW")
    name: str | None = Field(None, max_length=200, description="optional display name of the site")


class PriceSeriesInput(BaseModel):
    """A price series: equal steps from `start`, import (and optional export) price per kWh."""

    model_config = ConfigDict(extra="forbid")

    start: datetime = Field(..., description="ISO 8601 start of the first step, with timezone")
    step_minutes: int = Field(..., ge=1, le=1440)
    import_price: list[float] = Field(..., min_length=1, max_length=MAX_PRICE_STEPS,
                                      description="price per kWh of each step")
    export_price: list[float] | None = Field(None, max_length=MAX_PRICE_STEPS)

    @field_validator("start")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("start must carry a timezone (e.g. 2026-01-01T00:00:00Z)")
        return value

    @field_validator("import_price", "export_price")
    @classmethod
    def _finite(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and any(v != v or v in (float("inf"), float("-inf")) for v in value):
            raise ValueError("prices must be finite numbers")
        return value

    @model_validator(mode="after")
    def _same_length(self) -> PriceSeriesInput:
        if self.export_price is not None and len(self.export_price) != len(self.import_price):
            raise ValueError("export_price must have as many steps as import_price")
        return self

    def to_document(self) -> dict[str, Any]:
        """The JSON stored under `site:{id}:prices`."""
        return {"start": self.start.isoformat(), "step_minutes": self.step_minutes,
                "import_price": self.import_price,
                "export_price": self.export_price if self.export_price is not None else
                [0.0] * len(self.import_price)}


class InvalidSiteId(ValueError):
    """A site id with characters that cannot be used in keys and topics."""


def check_site_id(site_id: str) -> str:
    """The site id if valid (letters, digits, `_.-`, up to 64), else InvalidSiteId."""
    if not SITE_ID_RE.match(site_id):
        raise InvalidSiteId(f"invalid site id {site_id!r}: use letters, digits, '_', '.', '-' (max 64)")
    return site_id


class SiteInputWriter:
    """Writes site limits and prices plus their stream events (the optimizer's input)."""

    def __init__(self, redis: Any, keys: Keys, clock: Clock) -> None:
        self._redis = redis
        self._keys = keys
        self._clock = clock

    async def set_limit(self, site_id: str, value: SiteLimitInput, source: str) -> dict[str, Any]:
        """Store the limit and append `site.limit` (`csms.store.provisioning.set_site_limit`)."""
        from csms.store.provisioning import set_site_limit

        check_site_id(site_id)
        return await set_site_limit(self._redis, self._keys, site_id, float(value.limit_kw),
                                    name=value.name, now=self._clock.now(), source=source)

    async def set_prices(self, site_id: str, value: PriceSeriesInput, source: str) -> dict[str, Any]:
        """Store the price series and append `site.prices`; returns the stored document."""
        check_site_id(site_id)
        now = self._clock.now()
        doc = value.to_document()
        event = Event(type=EventType.SITE_PRICES, site_id=site_id, ts=now,
                      data={"start": doc["start"], "step_minutes": doc["step_minutes"],
                            "steps": len(doc["import_price"]), "source": source})
        multi, stream = SlotMulti(self._redis), self._keys.site_events(site_id)
        multi.on(stream).set(self._keys.site_prices(site_id), json.dumps(doc, separators=(",", ":")))
        multi.on(stream).xadd(stream, event.to_fields(), maxlen=STREAM_MAXLEN, approximate=True)
        multi.on(self._keys.sites()).sadd(self._keys.sites(), site_id)
        await multi.execute()
        return doc
