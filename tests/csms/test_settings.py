"""Configuration precedence (flags > EVFLEET_* environment > TOML > defaults) and the
`evfleet csms` flags that feed it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from csms.settings import CsmsSettings, load_settings
from evfleet.app.cli import app

TOML = """
[csms]
port = 1111
api_port = 2222
api_host = "10.0.0.1"
mqtt_url = "mqtt://toml:1883"
log_level = "WARNING"
"""


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "evfleet.toml"
    path.write_text(TOML)
    return path


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """No EVFLEET_* variables; the root logger restored afterwards (the CLI configures it)."""
    import os

    for name in list(os.environ):
        if name.startswith("EVFLEET_"):
            monkeypatch.delenv(name)
    loggers = [logging.getLogger(n) for n in ("", "ocpp", "websockets")]
    saved = [(lg, list(lg.handlers), lg.level) for lg in loggers]
    yield monkeypatch
    for lg, handlers, level in saved:
        lg.handlers[:] = handlers
        lg.setLevel(level)


def test_flag_beats_env_beats_toml_beats_default(config_file: Path, clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("EVFLEET_PORT", "3333")
    clean_env.setenv("EVFLEET_API_PORT", "4444")
    settings = load_settings(config_file, port=5555, api_auth=False, mqtt_url=None)
    assert settings.port == 5555                          # flag > env > TOML
    assert settings.api_port == 4444                      # env > TOML
    assert settings.api_host == "10.0.0.1"                # TOML > default
    assert settings.mqtt_url == "mqtt://toml:1883"        # an unset (None) flag does not override
    assert settings.log_level == "WARNING"
    assert settings.api_auth is False                     # a False flag is a value, not "unset"
    assert settings.heartbeat_interval_s == 300           # default
    assert load_settings(config_file).port == 3333        # env > TOML without a flag
    clean_env.delenv("EVFLEET_PORT")
    assert load_settings(config_file).port == 1111        # TOML > default


def _capture_cli_settings(monkeypatch: pytest.MonkeyPatch, args: list[str]) -> CsmsSettings:
    """Run `evfleet csms ARGS` with the node replaced by a recorder of its settings."""
    import csms.app

    seen: list[CsmsSettings] = []

    async def record(settings: CsmsSettings, clock: Any, stop: asyncio.Event) -> None:
        seen.append(settings)

    monkeypatch.setattr(csms.app, "run_csms", record)
    out = CliRunner().invoke(app, ["csms", *args])
    assert out.exit_code == 0, out.output
    assert len(seen) == 1
    return seen[0]


def test_csms_flags_reach_the_settings(config_file: Path, clean_env: pytest.MonkeyPatch,
                                       tmp_path: Path) -> None:
    clean_env.setenv("EVFLEET_API_HOST", "10.9.9.9")
    settings = _capture_cli_settings(clean_env, [
        "--config", str(config_file), "--host", "127.0.0.2", "--port", "9100",
        "--redis-url", "redis://127.0.0.1:1/0", "--mqtt-url", "mqtt://flag:1884",
        "--api-host", "127.0.0.3", "--api-port", "8181", "--no-api-auth", "--no-api",
        "--auto-register", "--log-json", "--log-level", "DEBUG", "--node-id", "n1",
        "--no-services", "--no-smart-charging", "--site-limit-kw", "42.5",
        "--data-dir", str(tmp_path / "d"),
    ])
    assert (settings.host, settings.port) == ("127.0.0.2", 9100)
    assert settings.redis_url == "redis://127.0.0.1:1/0"
    assert settings.mqtt_url == "mqtt://flag:1884"
    assert (settings.api_host, settings.api_port) == ("127.0.0.3", 8181)  # flag beats env and TOML
    assert settings.api_auth is False and settings.api_enabled is False
    assert settings.auto_register is True and settings.log_json is True and settings.log_level == "DEBUG"
    assert settings.node_id == "n1" and settings.run_services is False and settings.smart_charging is False
    assert settings.default_site_limit_kw == 42.5 and settings.data_dir == tmp_path / "d"


def test_csms_without_flags_uses_env_then_toml(config_file: Path, clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("EVFLEET_API_HOST", "10.9.9.9")
    clean_env.setenv("EVFLEET_REDIS_URL", "redis://127.0.0.1:1/0")
    settings = _capture_cli_settings(clean_env, ["--config", str(config_file)])
    assert settings.api_host == "10.9.9.9" and settings.port == 1111 and settings.api_auth is True
    assert settings.mqtt_url == "mqtt://toml:1883"


def test_csms_bad_config_is_a_message(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("port = 'x'\n")
    out = CliRunner().invoke(app, ["csms", "--config", str(bad)])
    assert out.exit_code == 2 and "invalid configuration" in out.output and "port" in out.output
    assert "Traceback" not in out.output
    out = CliRunner().invoke(app, ["csms", "--config", str(tmp_path / "missing.toml")])
    assert out.exit_code == 2 and "config file not found" in out.output
