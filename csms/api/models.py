"""Response bodies of the operator API, so /openapi.json describes every answer.

Field names are those of `csms.api.views` (the dashboard reads them). Numbers are numbers and
unknown values null. The document models allow extra fields: a field added to a view later
reaches clients before it is described here, rather than being dropped silently.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from csms.api.views import to_float

T = TypeVar("T")


class Doc(BaseModel):
    """Base of the documents: described fields, and extra ones passed through."""

    model_config = ConfigDict(extra="allow")


class Page(BaseModel, Generic[T]):
    """The page envelope of every list."""

    items: list[T]
    total: int = Field(description="matching items (all pages)")
    limit: int
    offset: int


class Whoami(Doc):
    """The calling token."""

    name: str
    role: str = Field(description="viewer or operator")
    auth: bool = Field(description="false when the API runs without authentication")


class Connector(Doc):
    """A connector's last reported status."""

    connector_id: int
    status: str
    updated_at: str | None


class Evse(Doc):
    """An EVSE: its limits, rate unit, running transaction and connectors."""

    evse_id: int
    transaction_id: str | None
    tx_ref: str | None
    max_power_w: float | None
    phases: int | None
    voltage_v: float | None
    rate_unit: str | None
    applied_limit_w: float | None = Field(description="the limit the csms applied last")
    steerable: bool = Field(description="false: the station does not obey profiles (budgeted at max)")
    noncompliant_w: float | None = None
    default_limit_w: float | None = None
    power_kw: float | None = None
    connectors: list[Connector]


class Station(Doc):
    """A station: identity, firmware, connection, EVSEs and overall status."""

    station_id: str
    site_id: str
    status: str = Field(description="Offline, Faulted, Charging, Occupied, Reserved, Unavailable, "
                                    "Available or Unknown")
    online: bool
    node: str | None
    vendor: str | None
    model: str | None
    serial_number: str | None
    firmware_version: str | None
    boot_reason: str | None
    registered_at: str | None
    last_boot: str | None
    last_seen: str | None
    connected_at: str | None
    heartbeat_interval_s: int | None
    ocpp_version: str | None
    power_kw: float
    evses: list[Evse]


class SessionLoop(Doc):
    """What the K15-K17 loop did for a session."""

    needs_received: int
    schedules_sent: int
    interim_sent: int
    renegotiations: int
    replans_skipped: int
    ev_plans_received: int
    k17_violations: int
    k17_resent: int
    ev_plan_within_limits: bool | None
    needs_received_at: str | None
    last_schedule_sent_at: str | None
    last_schedule_status: str | None
    last_plan_id: str | None
    ev_plan_received_at: str | None


class SessionBase(Doc):
    """A transaction as the operator sees it (without the nested documents)."""

    station_id: str | None
    transaction_id: str
    generation: int
    tx_ref: str
    evse_id: int | None
    connector_id: int | None
    site_id: str
    id_token: str | None
    live: bool
    state: str | None
    charging_state: str | None
    started_at: str | None
    updated_at: str | None
    ended_at: str | None
    stopped_reason: str | None
    energy_kwh: float | None
    power_kw: float | None
    current_a: float | None
    soc: float | None
    energy_needed_kwh: float | None
    departure_time: str | None
    progress: float | None = Field(description="energy delivered / energy needed (0-1)")
    loop: SessionLoop | None = None


class SessionSummary(SessionBase):
    """A session in lists and live deltas: the applied limit and statuses instead of documents."""

    applied_limit_kw: float | None
    profile_status: str | None
    plan_status: str | None
    resumes_at: str | None = Field(None, description="held at 0 kW (`applied_limit_kw` 0): when the plan "
                                                     "next gives the session power (null: not planned)")


class Session(SessionBase):
    """One session with the EV's needs, the plan, the applied profile, the EV's schedule and meter."""

    charging_needs: dict[str, Any] | None
    planned_schedule: dict[str, Any] | None
    applied_profile: dict[str, Any] | None
    ev_schedule: dict[str, Any] | None
    meter: list[dict[str, Any]] = Field(description="meter samples, oldest first")


class StationDetail(Station):
    """A station with its live sessions."""

    sessions: list[SessionSummary]


class StationPage(Page[Station]):
    """A page of stations plus counts per overall status."""

    counts: dict[str, int] = Field(description="stations per status over the site/search filter")


class TransactionRecord(Doc):
    """The stored transaction hash, numbers as numbers."""

    station_id: str | None = None
    transaction_id: str | None = None
    generation: int | None = None
    evse_id: int | None = None
    connector_id: int | None = None
    id_token: str | None = None
    state: str | None = None
    charging_state: str | None = None
    started_at: str | None = None
    updated_at: str | None = None
    ended_at: str | None = None
    stopped_reason: str | None = None
    energy_wh: float | None = None
    power_w: float | None = None
    current_a: float | None = None
    soc: float | None = None
    last_seq_no: int | None = None
    offline_events: int | None = None

    @model_validator(mode="before")
    @classmethod
    def _numbers(cls, raw: Any) -> Any:
        """Redis hash strings to numbers ("" and unparsable values to null)."""
        if not isinstance(raw, dict):
            return raw
        out = {k: (v or None) if isinstance(v, str) else v for k, v in raw.items()}
        for name in _RECORD_INTS | _RECORD_FLOATS:
            value = out.get(name)
            if isinstance(value, str):
                number = to_float(value)
                out[name] = number if number is None or name in _RECORD_FLOATS else int(number)
        return out


_RECORD_INTS = frozenset({"generation", "evse_id", "connector_id", "last_seq_no", "offline_events"})
_RECORD_FLOATS = frozenset({"energy_wh", "power_w", "current_a", "soc"})


class TransactionDetail(Doc):
    """A transaction record with every stored TransactionEvent payload in arrival order."""

    station_id: str | None
    transaction_id: str
    generation: int
    tx_ref: str
    generations: int = Field(description="how many transactions of the station used this id")
    live: bool
    record: TransactionRecord
    events: list[Any]


class SiteOptimizer(Doc):
    """The optimizer's latest plan run for a site."""

    plan_id: str | None
    strategy: str | None
    status: str | None
    objective: float | None
    solve_s: float | None
    computed_at: str | None


class SitePlan(Doc):
    """The planned site load series."""

    start: str | None
    step_s: float | None
    planned_kw: list[float | None] | None
    limit_kw: float | None


class PriceSeries(Doc):
    """A site's price series: equal steps from `start`."""

    start: str
    step_minutes: int
    import_price: list[float]
    export_price: list[float] | None = None


class Site(Doc):
    """A site: limit, load, planned load and optimizer state."""

    site_id: str
    name: str
    limit_kw: float | None = Field(description="the limit in force: the site's own, else the default "
                                               "(`default_site_limit_kw`) the csms budgets and plans with")
    limit_set: bool = Field(description="false: no limit is set for the site; `limit_kw` is the default")
    default_limit_kw: float | None = Field(description="the default limit of sites without one")
    limit_note: str = Field(description="the limit as the dashboard shows it, e.g. "
                                        "`no limit set (planned with default 100 kW)`")
    limit_updated_at: str | None
    power_kw: float
    headroom_kw: float | None
    active_sessions: int
    stations: int
    over_limit: bool
    over_limit_metered_kw: float | None
    over_limit_changed_at: str | None
    planned_kw_now: float | None
    optimizer: SiteOptimizer | None
    plan: SitePlan | None
    prices: PriceSeries | None


class PowerSampleDoc(BaseModel):
    """One site power sample (csms clock time)."""

    ts: str
    power_kw: float | None = Field(description="sum of the live sessions' power")
    limit_kw: float | None = Field(description="the site limit in force (the default when none is set)")
    planned_kw: float | None = Field(description="the optimizer's planned site load for that step")


class SiteHistory(Doc):
    """Site power samples from the store, oldest first."""

    site_id: str
    samples: list[PowerSampleDoc]
    interval_s: float = Field(description="csms clock seconds between two samples of the recorder "
                                          "(at most one per real second)")


class SitePrices(Doc):
    """A site's stored price series."""

    site_id: str
    prices: PriceSeries


class IdToken(Doc):
    """An id token's authorization record."""

    id_token: str
    type: str | None
    status: str | None
    group_id: str | None


class EventItem(Doc):
    """One event of the stream."""

    id: str = Field(description="stream id (a cursor for `after`/`before`)")
    type: str
    station_id: str | None
    evse_id: int | None
    transaction_id: str | None
    tx_ref: str | None
    site_id: str | None
    ts: str
    data: dict[str, Any]


class EventPage(Page[EventItem]):
    """Events and the cursors to page on."""

    next: str = Field(description="pass as `after` for the events after this answer")
    older: str | None = Field(description="pass as `before` for the page before (null at the start)")


class ActionResult(Doc):
    """A station's answer to an operator action."""

    request_id: str
    station_id: str
    action: str
    outcome: str = Field(description="`result` (errors are HTTP errors)")
    payload: dict[str, Any] | None
    error: Any = None
    status: str | None = Field(description="the payload's `status`, if any")
    accepted: bool = Field(description="status is Accepted or Scheduled (or the answer has none)")


class ReportedProfiles(BaseModel):
    """One ReportChargingProfiles of a station: the profiles installed on one EVSE."""

    evse_id: int | None
    charging_limit_source: str | None
    charging_profiles: list[dict[str, Any]] = Field(description="OCPP ChargingProfile objects as reported")


class ProfileReport(ActionResult):
    """GetChargingProfiles: the station's answer and the reports it sent for the request."""

    ocpp_request_id: int = Field(description="the requestId sent to the station")
    profiles: list[ReportedProfiles]
    complete: bool = Field(description="false: the wait ended before the last report (tbc false) came")


class Health(Doc):
    """Liveness."""

    ok: bool
