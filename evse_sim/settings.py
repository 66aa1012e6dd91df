"""Settings of `evfleet sim`: flags > `EVFLEET_SIM_*` environment > `[sim]` TOML table > defaults.

`log_level` and `log_json` are shared with every command (`EVFLEET_LOG_LEVEL`, `EVFLEET_LOG_JSON`).
Built once by `evfleet sim` with `evfleet.config.load` (pure: no I/O besides reading the file).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from evfleet.config import CommandSettings

HLC_MODES = ("basic", "modelled", "josev", "none")
ISO15118_VERSIONS = ("2", "20")  # of --hlc josev (evse_sim.iso15118.v20.PROTOCOLS)
JOSEV_MAX_STATIONS = 10  # each AC EVSE runs a Josev SECC JVM, each HLC visit a Josev EVCC JVM


class SimSettings(CommandSettings):
    """Every option of `evfleet sim` (env var = `EVFLEET_SIM_` + upper-case name; `[sim]` table)."""

    model_config = SettingsConfigDict(env_prefix="EVFLEET_SIM_", frozen=True, extra="forbid")
    TABLE: ClassVar[str] = "sim"
    SHARED_ENV: ClassVar[frozenset[str]] = frozenset({"log_level", "log_json"})

    csms: str = Field(description="CSMS base URL, e.g. ws://127.0.0.1:9000/ocpp (required)")
    stations: int | None = Field(None, ge=1, description="fleet size (default: the scenario's)")
    scenario: str = Field("seed001", description="seed001 | seed003 | seed004 | random | path to a "
                                                 "scenario JSON")
    seed: int | None = Field(None, description="seed of the scenario and the stations (transaction "
                                               "ids); default: a fresh one per run")
    speed: float | None = Field(
        None, ge=0.001, description="simulated seconds per real second (default 1, or the speed of the "
        "clock joined with --clock-redis); the csms must run on the same clock (see docs/simulator.md)")
    duration: str | None = Field(None, description="simulated time to run (90m, 24h...); default: the "
                                                   "scenario horizon")
    start: str = Field("scenario", description="'scenario' (its own start), 'now', or ISO time")
    password: str | None = Field(None, description="Basic-auth password (security profile 1/2)")
    password_file: Path | None = Field(None, description="shared or per-station passwords")
    tls_ca: Path | None = Field(None, description="CA certificate for wss:// (security profile 2)")
    client_certs: Path | None = Field(
        None, description="directory with {station_id}.pem and .key: client certificates (security "
                          "profile 3)")
    ramp_per_s: float = Field(50.0, ge=0.0, description="stations started per second (0 = all)")
    tick: float = Field(0.5, ge=0.01, description="real seconds between simulation steps")
    meter_interval: int = Field(60, ge=0, description="TxUpdatedInterval [clock s]")
    aligned_interval: int = Field(300, ge=0, description="MeterValues interval [clock s], 0 = off")
    hlc: str = Field(
        "basic", description="ISO 15118 link of HLC EVs: basic (announce needs, follow the limit), "
        "modelled (the modelled ISO 15118-2 session: SAScheduleList, EV's own plan), josev (real ISO "
        f"15118-2 AC and DC sessions with Josev over veth pairs; at most {JOSEV_MAX_STATIONS} stations; "
        "`evfleet iso15118 check`) or none (no HLC EVs)")
    iso15118: str = Field(
        "2", description="ISO 15118 version of --hlc josev: 2 (ISO 15118-2, AC and DC) or 20 (ISO "
        "15118-20 AC in scheduled control mode for AC EVSEs; DC EVSEs stay on -2; docs/iso15118.md)")
    no_hlc: bool = Field(False, description="same as --hlc none")
    authorize: bool = Field(False, description="send Authorize for EV id tokens; charge once Accepted")
    ocpp: str = Field("2.0.1", description="OCPP version of the stations: 2.0.1, 1.6 (OCPP 1.6J) or "
                                           "mixed (every second station 1.6J)")
    drop_rate: float = Field(0.0, ge=0.0, description="fault injection: link drops per station per "
                                                      "simulated hour")
    drop_seconds: float = Field(10.0, ge=0.0, description="real seconds a dropped station stays offline")
    clock_redis: str | None = Field(
        None, description="run on the deployment's clock in this csms Redis: join the live simulated "
                          "clock (`evfleet csms --clock-speed`), or start one there")
    provision_redis: str | None = Field(None, description="first provision the stations in this csms Redis")
    site: str = Field(
        "default", description="csms site the stations are provisioned on (with --provision-redis; "
        "default: the csms's default site, whose limit `evfleet sites set default` sets)")
    report: Path | None = Field(None, description="write a JSON summary (stats + visits)")
    quiet: bool = Field(False, description="no live display; print the summary only")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "WARNING", description="DEBUG, INFO, WARNING, ERROR")
    log_json: bool = Field(False, description="JSON log lines")

    @field_validator("csms")
    @classmethod
    def _websocket_url(cls, value: str) -> str:
        if not re.match(r"^wss?://", value):
            raise ValueError("must start with ws:// or wss://")
        return value

    @field_validator("ocpp")
    @classmethod
    def _ocpp_version(cls, value: str) -> str:
        from evse_sim.fleet import OCPP_CHOICES

        if value not in OCPP_CHOICES:
            raise ValueError(f"{value!r} is not one of {', '.join(OCPP_CHOICES)}")
        return value

    @field_validator("hlc")
    @classmethod
    def _hlc_mode(cls, value: str) -> str:
        mode = value.strip().lower()
        if mode not in HLC_MODES:
            raise ValueError(f"{value!r} is not one of {', '.join(HLC_MODES)}")
        return mode

    @field_validator("iso15118")
    @classmethod
    def _iso15118_version(cls, value: str) -> str:
        version = value.strip().removeprefix("-")
        if version not in ISO15118_VERSIONS:
            raise ValueError(f"{value!r} is not one of {', '.join(ISO15118_VERSIONS)}")
        return version

    @field_validator("tls_ca")
    @classmethod
    def _ca_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.exists():
            raise ValueError(f"{value} does not exist")
        return value

    @field_validator("client_certs")
    @classmethod
    def _certs_dir(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_dir():
            raise ValueError(f"{value} is not a directory")
        return value

    def hlc_mode(self) -> str:
        """The effective HLC mode (`--no-hlc` = none); raises ValueError on a contradiction."""
        if not self.no_hlc:
            return self.hlc
        if self.hlc not in ("basic", "none"):
            raise ValueError(f"--no-hlc contradicts --hlc {self.hlc}")
        return "none"

    def check_iso15118(self) -> None:
        """--iso15118 20 applies to real Josev sessions only; raises ValueError otherwise."""
        if self.iso15118 != "2" and self.hlc_mode() != "josev":
            raise ValueError(f"--iso15118 {self.iso15118} needs --hlc josev "
                             "(the modelled HLC is ISO 15118-2)")
