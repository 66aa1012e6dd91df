"""One logging setup for every command: with EVFLEET_LOG_JSON each process writes JSON lines whose
structured data are keys (node_id, station_id, transaction_id, site, extras), not text in `msg`."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from evfleet.config import load
from evfleet.logs import configure_logging, log_context
from tests.cli.test_settings_precedence import CASES


@pytest.fixture
def restore_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for name in [n for n in os.environ if n.startswith("EVFLEET_")]:
        monkeypatch.delenv(name)
    root = logging.getLogger()
    saved = list(root.handlers), root.level
    yield monkeypatch
    for handler in root.handlers:
        if handler not in saved[0]:
            handler.close()
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])


def _lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c[1])
def test_every_command_logs_json_with_fields_as_keys(case: Any, restore_logging: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    cls, _table, _field, _values, _env, required = case
    restore_logging.setenv("EVFLEET_LOG_JSON", "1")
    settings: Any = load(cls, None, **required)
    configure_logging("INFO", settings.log_json, node_id="node-7")
    log = logging.getLogger("evfleet.test")
    with log_context(station_id="CP-1", transaction_id="tx-42", site="depot"):
        log.info("plan applied for %d EVs", 3, extra={"plan_id": "p-9", "limits_w": {"CP-1/1": 7400.0}})
    log.warning("no context here", extra={"site": "yard"})
    first, second = _lines(capsys.readouterr().err)
    assert first["msg"] == "plan applied for 3 EVs"  # the message only: no dict text
    assert (first["node_id"], first["station_id"], first["transaction_id"], first["site"]) == (
        "node-7", "CP-1", "tx-42", "depot")
    assert first["plan_id"] == "p-9" and first["limits_w"] == {"CP-1/1": 7400.0}
    assert second["site"] == "yard" and "transaction_id" not in second and second["level"] == "WARNING"


def test_demo_log_file_is_json_too(restore_logging: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from evfleet.app.demo.cli import _setup_logging
    from evfleet.app.demo.config import DemoSettings

    restore_logging.setenv("EVFLEET_LOG_JSON", "true")
    path = _setup_logging(tmp_path, load(DemoSettings))
    logging.getLogger("evfleet.demo").info("started", extra={"site": "demo"})
    logging.getLogger().handlers[-1].flush()
    (line,) = _lines(path.read_text())
    assert line["msg"] == "started" and line["site"] == "demo"


def test_text_logs_keep_the_context(restore_logging: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", False)
    with log_context(station_id="CP-2"):
        logging.getLogger("evfleet.test").info("booted")
    assert "[CP-2 -] booted" in capsys.readouterr().err


def test_demo_log_keeps_every_line_after_the_api_starts(restore_logging: pytest.MonkeyPatch,
                                                        tmp_path: Path) -> None:
    """Building the node's uvicorn settings must not close the demo's log file (it used to: uvicorn's
    default log config ran dictConfig, which closes every handler, and demo.log stopped there)."""
    from csms.api.service import server_config
    from csms.settings import CsmsSettings
    from evfleet.app.demo.cli import _setup_logging
    from evfleet.app.demo.config import DemoSettings

    path = _setup_logging(tmp_path, load(DemoSettings))
    logging.getLogger("evfleet.demo").info("before the API")
    server_config(object(), load(CsmsSettings))
    logging.getLogger("evfleet.demo").info("after the API")
    logging.getLogger("uvicorn.error").warning("from uvicorn")
    logging.getLogger().handlers[-1].flush()
    text = path.read_text()
    assert "before the API" in text and "after the API" in text and "from uvicorn" in text
