"""Every `evfleet` command's --help: plain text (no markup lost), and help on every option."""

from __future__ import annotations

from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from evfleet.app.cli import app


def _commands(command: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    subs = getattr(command, "commands", None)
    if subs is None:
        return [(path, command)]
    found: list[tuple[tuple[str, ...], Any]] = [(path, command)]
    for name, sub in sorted(subs.items()):
        found += _commands(sub, (*path, name))
    return found


COMMANDS = _commands(typer.main.get_command(app))


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=lambda p: " ".join(p) or "evfleet")
def test_help_is_plain_and_complete(path: tuple[str, ...]) -> None:
    res = CliRunner().invoke(app, [*path, "--help"])
    assert res.exit_code == 0, res.output
    assert "Usage: evfleet" in res.output and "Traceback" not in res.output
    assert "<bool>" not in res.output and "╭" not in res.output  # plain text, no box drawing
    command = dict(COMMANDS)[path]
    assert command.help, f"{' '.join(path)} has no description"
    for param in command.params:
        if getattr(param, "param_type_name", "") == "option" and "--help" not in param.opts:
            assert param.help, f"evfleet {' '.join(path)} {param.opts[0]} has no help"


def test_brackets_in_help_survive() -> None:  # Rich markup used to eat "[csms]"
    res = CliRunner().invoke(app, ["csms", "--help"])
    assert "[csms] table" in res.output
