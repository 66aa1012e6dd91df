"""flags > environment > `--config` TOML file > defaults, for every long-running command, through the
one mechanism they share (`evfleet.config.load`, pydantic-settings with its TOML source)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from csms.settings import CsmsSettings
from evfleet.app.cli import app
from evfleet.app.demo.config import DemoSettings
from evfleet.config import CommandSettings, load
from evse_sim.settings import SimSettings
from optimizer.settings import OptimizeSettings, WorkerSettings

# (settings class, its table, a field, file / env / flag values, the field's environment variable,
#  required fields)
CASES: list[tuple[type[CommandSettings], str, str, tuple[Any, Any, Any], str, dict[str, Any]]] = [
    (CsmsSettings, "csms", "port", (1111, 2222, 3333), "EVFLEET_PORT", {}),
    (WorkerSettings, "optimizer", "horizon_steps", (10, 20, 30), "EVFLEET_OPTIMIZER_HORIZON_STEPS", {}),
    (SimSettings, "sim", "tick", (0.1, 0.2, 0.3), "EVFLEET_SIM_TICK", {"csms": "ws://x/ocpp"}),
    (OptimizeSettings, "optimize", "runs", (5, 6, 7), "EVFLEET_OPTIMIZE_RUNS", {"input": "i.json"}),
    (DemoSettings, "demo", "stations", (11, 12, 13), "EVFLEET_DEMO_STATIONS", {}),
]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in [n for n in os.environ if n.startswith("EVFLEET_")]:
        monkeypatch.delenv(name)
    return monkeypatch


@pytest.mark.parametrize("case", CASES, ids=lambda c: c[1])
def test_flag_beats_env_beats_file_beats_default(case: Any, tmp_path: Path,
                                                 clean_env: pytest.MonkeyPatch) -> None:
    cls, table, field, (in_file, in_env, in_flag), env_name, required = case
    default = cls.model_fields[field].default
    assert cls.env_name(field) == env_name
    path = tmp_path / "evfleet.toml"
    other = "sim" if table == "csms" else "csms"  # another command's table is left alone
    path.write_text(f"[{table}]\n{field} = {in_file!r}\n[{other}]\nignored = 1\n")
    assert getattr(load(cls, None, **required), field) == default
    assert getattr(load(cls, path, **required), field) == in_file
    clean_env.setenv(env_name, str(in_env))
    assert getattr(load(cls, path, **required), field) == in_env
    assert getattr(load(cls, path, **required, **{field: in_flag}), field) == in_flag
    assert getattr(load(cls, path, **required, **{field: None}), field) == in_env  # None = flag not given


def test_log_settings_are_shared_by_every_command(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("EVFLEET_LOG_JSON", "true")
    clean_env.setenv("EVFLEET_LOG_LEVEL", "error")  # any case
    for cls, _table, _field, _values, _env, required in CASES:
        settings = load(cls, None, **required)
        assert settings.log_json is True and settings.log_level == "ERROR", cls.__name__  # type: ignore[attr-defined]


def test_top_level_keys_serve_a_command_without_its_table(tmp_path: Path) -> None:
    path = tmp_path / "evfleet.toml"
    path.write_text('log_level = "DEBUG"\n[optimizer]\nstrategy = "edf"\n')
    assert load(SimSettings, path, csms="ws://x").log_level == "DEBUG"  # top level, [optimizer] left out
    assert load(WorkerSettings, path).strategy == "edf"


def test_cli_reads_env_and_file_and_the_flag_wins(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> None:
    """Real invocations that stop at validation: the file's value, then the environment's, then the flag's
    reaches the command (each named in the one-line error)."""
    path = tmp_path / "evfleet.toml"
    path.write_text('[sim]\ncsms = "http://from-file"\n[optimizer]\nstrategy = "from-file"\n')
    runner = CliRunner()
    res = runner.invoke(app, ["sim", "--config", str(path)])
    assert res.exit_code == 2 and "EVFLEET_SIM_CSMS): must start with ws://" in res.output
    res = runner.invoke(app, ["optimizer", "--config", str(path), "--redis-url", "redis://127.0.0.1:1/0"])
    assert res.exit_code == 2 and "unknown strategy 'from-file'" in res.output
    res = runner.invoke(app, ["optimizer", "--config", str(path), "--redis-url", "redis://127.0.0.1:1/0"],
                        env={"EVFLEET_OPTIMIZER_STRATEGY": "from-env"})
    assert res.exit_code == 2 and "unknown strategy 'from-env'" in res.output
    res = runner.invoke(app, ["optimizer", "--config", str(path), "--redis-url", "redis://127.0.0.1:1/0",
                              "--strategy", "from-flag"], env={"EVFLEET_OPTIMIZER_STRATEGY": "from-env"})
    assert res.exit_code == 2 and "unknown strategy 'from-flag'" in res.output
    res = runner.invoke(app, ["optimize", "--config", str(path), "-i", "x.json"],
                        env={"EVFLEET_OPTIMIZE_RUNS": "0"})
    assert res.exit_code == 2 and "EVFLEET_OPTIMIZE_RUNS" in res.output
    res = runner.invoke(app, ["demo", "--config", str(path)], env={"EVFLEET_DEMO_SPEED": "0.5"})
    assert res.exit_code == 2 and "EVFLEET_DEMO_SPEED" in res.output
    res = runner.invoke(app, ["csms", "--config", str(tmp_path / "missing.toml")])
    assert res.exit_code == 2 and "config file not found" in res.output
