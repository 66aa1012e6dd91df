"""CSMS configuration: flags > environment (`EVFLEET_*`) > TOML file > defaults.

The only place the environment is read. Build once with `load_settings()` and pass the
frozen object down.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from evfleet.config import CommandSettings, ConfigFileError, load, redis_url_scheme

__all__ = ["ConfigFileError", "CsmsSettings", "default_data_dir", "load_settings"]

from evfleet.store.sites import DEFAULT_SITE_LIMIT_KW


class CsmsSettings(CommandSettings):
    """Every setting of a csms node (env var = `EVFLEET_` + upper-case field name; `[csms]` table)."""

    TABLE: ClassVar[str] = "csms"
    FLAGS: ClassVar[dict[str, str]] = {"api_enabled": "--api", "run_services": "--services",
                                       "default_site_limit_kw": "--site-limit-kw"}

    # --- state store -------------------------------------------------------------------
    redis_url: str | None = Field(
        None, description="Redis URL; unset = start an embedded redis-server on a private port")
    redis_prefix: str = Field("evfleet", description="prefix of every Redis key")
    redis_shards: int | None = Field(
        None, ge=0, le=16384,
        description="key layout: 0 = unsharded names (one Redis server), N >= 1 = Redis Cluster layout "
                    "with N shards; unset = the layout recorded in Redis, else 16 on a redis+cluster:// "
                    "URL and 0 otherwise")
    node_id: str | None = Field(None, description="csms node id; unset = hostname-pid")
    data_dir: Path | None = Field(
        None, description="embedded Redis data dir (persistent); unset = `evfleet csms` uses "
                          "$XDG_DATA_HOME/evfleet, library use a temporary dir")

    # --- OCPP server -------------------------------------------------------------------
    host: str = "0.0.0.0"
    port: int = Field(9000, ge=0, le=65535, description="OCPP WebSocket port")
    tls_cert: Path | None = Field(None, description="server certificate (PEM) for security profile 2")
    tls_key: Path | None = Field(None, description="private key (PEM) for security profile 2")
    tls_client_ca: Path | None = Field(
        None, description="CA bundle (PEM) that signs station client certificates: enables security "
                          "profile 3 (certificate CN = station id) on the TLS listener")
    auto_register: bool = Field(False, description="development: accept unknown stations")
    accept_all_tokens: bool = Field(False, description="Authorize accepts any id token")
    heartbeat_interval_s: int = Field(300, ge=1)
    handshake_timeout_s: float = Field(
        60.0, gt=0, description="time a station's WebSocket handshake (incl. password check) may take")
    handshake_queue_size: int = Field(
        10_000, ge=1, description="handshakes waiting for their credential check; beyond it a "
                                  "station gets HTTP 503 with Retry-After at once (no timeout)")
    handshake_max_wait_s: float = Field(
        10.0, gt=0, description="a handshake that would wait longer than this in the queue (at the "
                               "node's current admission rate) gets HTTP 503 with Retry-After at once")
    boot_timeout_s: float = Field(
        120.0, gt=0, description="close a connection of a station that never booted (no accepted "
                                 "BootNotification, ever) if it sends none within this time")
    ocpp_max_connections: int = Field(
        10_000, ge=1, description="OCPP connections (incl. handshakes) this node holds; beyond: HTTP 503")
    login_failure_delay_s: float = Field(
        1.0, ge=0, description="a wrong password or unknown station is answered after this time "
                               "(the same for both: ids cannot be probed)")
    login_free_failures: int = Field(
        3, ge=0, description="failed logins per station id or IP before the backoff grows")
    login_backoff_max_s: float = Field(60.0, ge=0, description="longest delay of a failed login's answer")
    login_max_pending_per_ip: int = Field(
        20, ge=1, description="delayed failed logins one IP may have waiting; beyond: HTTP 429")
    ws_ping_interval_s: float | None = Field(
        60.0, gt=0, description="WebSocket ping to each station this often (dead-connection check; "
                                "unset = none). Every ping is a frame each way: at 20 s it was more "
                                "traffic than a fleet's OCPP messages")
    ws_ping_timeout_s: float = Field(
        30.0, gt=0, description="a station whose WebSocket pong does not come within this is closed")
    max_frame_bytes: int = Field(65536, ge=1024, description="largest accepted WebSocket frame")
    rate_limit_per_s: float = Field(50.0, gt=0, description="sustained messages per second per station")
    rate_limit_burst: int = Field(200, ge=1, description="messages allowed in a burst")
    flood_disconnect_after: int = Field(
        100, ge=1, description="throttled messages after which a flooding station is disconnected")
    call_timeout_s: float = Field(30.0, gt=0, description="timeout of a CALL to a station")
    station_event_quota_per_hour: int = Field(
        3600, ge=1, description="station-generated events (DataTransfer, security, reports, log/firmware "
                                "status, protocol errors) stored per station and hour; more are counted, "
                                "not stored")
    station_event_max_bytes: int = Field(
        16384, ge=256, description="larger data of such an event is stored as a note with its size")
    fetch_device_model_on_boot: bool = Field(
        True, description="after a BootNotification is accepted, ask the station for its device model "
                          "(GetBaseReport FullInventory) so EVSE max power / phases are known")
    run_services: bool = Field(
        True, description="run the API, telemetry and smart-charging services in this process "
                          "(off: an OCPP-only node)")
    gc_thresholds: tuple[int, int, int] | None = Field(
        (50_000, 20, 100), description="garbage-collector thresholds (gc.set_threshold; unset = CPython's "
                                       "700,10,10): rarer collections, fewer event-loop stalls")
    gc_freeze: bool = Field(
        True, description="after start-up, move every live object to the permanent generation "
                          "(gc.freeze): full collections no longer walk modules, schemas and settings")
    gc_refreeze: bool = Field(
        True, description="with gc_freeze: move the survivors of every young collection to the permanent "
                          "generation too, so the objects made after start-up (connections, transactions) "
                          "are not walked again by generation-1 collections; a full collection ('thaw') "
                          "frees the frozen garbage (csms.refreeze)")
    gc_thaw_after_closed: int = Field(
        1000, ge=1, description="with gc_refreeze: thaw once this many station connections closed since the "
                                "last full collection and the closes paused for 5 s, or 4 x this many (a "
                                "closed connection is a frozen cycle until then)")
    gc_thaw_growth: float = Field(
        2.0, gt=0, description="with gc_refreeze: thaw once the frozen objects grew by this x the live "
                               "objects of the last full collection, at least 1.5 million (bounds any other "
                               "frozen garbage); doubled after each growth thaw that freed little, up to "
                               "16 x")
    gc_freeze_young_s: float = Field(
        1.0, ge=0, description="with gc_refreeze: every this many seconds, move the objects made since the "
                               "last freeze to the permanent generation without a young collection (which "
                               "walks them all: an event-loop stall); cyclic garbage among them waits for a "
                               "thaw (0 = off)")
    gc_profile_ms: float = Field(
        0.0, ge=0, description="log what each garbage collection that used this much CPU walked (object "
                               "types, dict keys) and the stack that started it, and what each gc_refreeze "
                               "thaw freed, by type (0 = off; a debugging aid)")
    gc_log_ms: float = Field(
        0.0, ge=0, description="log every garbage collection that took this long (wall), with its CPU time "
                               "and objects collected; any event loop (0 = off; slow_callback_ms sets it "
                               "too)")
    gc_census: int = Field(
        0, ge=0, description="log a census of the next N young garbage collections after start-up: what "
                             "each walked, freed (cyclic garbage) and kept, by type, with the allocating "
                             "lines under PYTHONTRACEMALLOC (0 = off; a debugging aid, csms.gccensus)")
    gc_census_after_s: float = Field(
        0.0, ge=0, description="with gc_census: start the census this many seconds after start-up")
    slow_callback_ms: float = Field(
        0.0, ge=0, description="log every event-loop callback that runs longer than this, with the stack "
                               "sampled while it ran (0 = off; the standard event loop only)")
    event_loop: Literal["auto", "asyncio", "uvloop"] = Field(
        "auto", description="event loop of `evfleet csms`: auto = uvloop when it is installed (a dependency "
                            "except on Windows) and slow_callback_ms is 0 (the callback watch needs the "
                            "standard loop), else asyncio")
    clock_speed: float = Field(
        1.0, gt=0, description="1 = real time; another value runs this deployment on a simulated clock "
                               "that many times faster (what-if studies), shared through Redis")
    clock_start: datetime | None = Field(
        None, description="simulated time at which a new simulated clock starts (default: now)")
    default_site: str = "default"
    default_site_limit_kw: float = Field(
        DEFAULT_SITE_LIMIT_KW, gt=0, allow_inf_nan=False,
        description="limit of a site without one of its own; published in Redis at start-up, so the "
                    "smart-charging budget, the optimizer and the API all use it (docs/smart-charging.md)")

    # --- operator API, dashboard, metrics ----------------------------------------------
    api_enabled: bool = True
    api_host: str = "127.0.0.1"
    api_port: int = Field(8080, ge=0, le=65535)
    api_auth: bool = Field(True, description="require bearer tokens on /api")
    api_header_timeout_s: float = Field(
        10.0, gt=0, description="a request's line and headers must arrive within this (slowloris)")
    api_keepalive_timeout_s: float = Field(
        5.0, gt=0, description="an idle keep-alive API connection is closed after this")
    api_max_connections: int = Field(
        200, ge=1, description="concurrent API/dashboard connections; beyond: HTTP 503 (its own budget, "
                               "apart from the stations' ocpp_max_connections)")

    # --- MQTT telemetry ---------------------------------------------------------------
    mqtt_url: str | None = Field(None, description="mqtt://host:port; unset = MQTT off")
    mqtt_topic_prefix: str = "evfleet"
    service_lease_ttl_s: float = Field(
        10.0, gt=0, description="lease of once-per-deployment services (the MQTT bridge): a dead "
                                "holder is replaced by another node within about 1.3 x this")

    # --- smart charging ----------------------------------------------------------------
    smart_charging: bool = True
    smart_charging_alive_ttl_s: float = Field(
        10.0, ge=2.0, description="TTL of a node's smart-charging liveness key: a dead node's sites are "
                                  "taken over within about this + 0.3 s of its death, and a node whose "
                                  "event loop stalls longer than this - 0.25 s loses its sites to another "
                                  "(csms/smart_charging/leases.py). 10 s keeps the stall tolerance of the "
                                  "15 s site lease; 4.5 s takes over within 5 s on nodes that never stall "
                                  "4 s (gc thaws at 20,000 stations on a loaded machine took 7.5-7.8 s)")
    smart_charging_balance_s: float = Field(
        0.5, ge=0, description="how often a node compares its share of the site leases with the other "
                               "live nodes' and, holding more than ceil(sites / nodes) + "
                               "smart_charging_lease_slack, hands one site to the least loaded node "
                               "(csms/smart_charging/balance.py); 0 = never (the first node to start "
                               "keeps every site it took)")
    smart_charging_lease_slack: int = Field(
        1, ge=0, description="sites a node may hold above its fair share before it hands one over")
    interim_profile_after_s: float = Field(
        5.0, gt=0, description="send a safe interim profile if no plan arrives within this time")
    optimizer_silent_after_s: float = Field(
        15.0, gt=0, description="a site with a late session and no plan for this long (real s) counts "
                                "the optimizer as silent: every session re-shares the headroom fairly "
                                "(before: only the sessions without a plan share what the plan leaves)")
    replan_threshold_kw: float = Field(
        0.5, ge=0, description="K16: re-send a TxProfile only when a limit moves by more")
    fallback_limit_kw: float | None = Field(
        None, description="safe per-EVSE limit when the optimizer is silent (unset = fair share)")
    reserve_kw_per_evse: float = Field(
        0.0, ge=0, le=1_000_000,
        description="TxDefaultProfile of every EVSE: what a plug-in may draw before its session is "
                    "admitted (capped at site limit / EVSEs); idle EVSEs are counted at it. "
                    "0 = zero until admitted")
    site_margin_kw: float = Field(
        0.0, ge=0, le=1_000_000, allow_inf_nan=False,
        description="headroom of every site that is never handed out (published in Redis: the csms "
                    "budget and the optimizer plan with limit - margin); it absorbs a draw nobody "
                    "allowed (a station ignoring its limits) until the watchdog finds it. 0 = off; "
                    "the largest EVSE of a site keeps it within its limit if any one station "
                    "misbehaves (N-1) (docs/smart-charging.md)")
    refusal_backoff_s: float = Field(
        30.0, gt=0, description="first wait before a station that refused a profile is tried again "
                                "(doubles per refusal, at most 1 h; a reboot retries at once)")
    default_timeout_backoff_s: float = Field(
        15.0, gt=0, description="a TxDefaultProfile call that timed out is sent again after a wait drawn "
                                "up to this (doubling per timeout in a row, full jitter, at least 2 s); "
                                "any answer or a reboot starts again")
    default_timeout_backoff_max_s: float = Field(
        300.0, gt=0, description="the longest wait before a timed-out TxDefaultProfile is sent again")
    noncompliant_after_s: float = Field(
        10.0, gt=0, description="metered power above the accepted limit for longer marks an EVSE "
                                "non-compliant (budgeted at what it draws)")
    noncompliance_tolerance_w: float = Field(
        500.0, ge=0, description="metered power may exceed the accepted limit by this (or 5 %)")
    over_limit_after_s: float = Field(
        5.0, gt=0, description="metered site power above the limit for longer raises the alarm")
    watchdog_interval_s: float = Field(
        1.0, gt=0, description="how often the metered power of each site is checked")

    # --- logging -----------------------------------------------------------------------
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_json: bool = False

    @field_validator("clock_start")
    @classmethod
    def _aware_start(cls, value: datetime | None) -> datetime | None:
        """A naive --clock-start is UTC."""
        return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value

    _redis_scheme = field_validator("redis_url")(redis_url_scheme)

    @field_validator("redis_prefix")
    @classmethod
    def _prefix_has_no_colon(cls, value: str) -> str:
        if not value or ":" in value:
            raise ValueError("redis_prefix must be non-empty and contain no ':'")
        return value


def default_data_dir() -> Path:
    """$XDG_DATA_HOME/evfleet (default ~/.local/share/evfleet): the CLI's embedded Redis home."""
    import os

    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "evfleet"


def load_settings(config_file: Path | None = None, **flags: Any) -> CsmsSettings:
    """Settings with precedence flags > environment > TOML file > defaults (see `evfleet.config`).

    `flags` whose value is None are ignored (an unset CLI option).
    """
    return load(CsmsSettings, config_file, **flags)
