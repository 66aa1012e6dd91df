"""The `evfleet` command line, the composition root: one Typer app; each package registers its
own commands, and this module wires the three products together (the only place besides the demo
that imports more than one of them).

- `csms/cli_commands.py`: `evfleet csms`, `evfleet stations ...`
- `csms/api/cli.py`: `evfleet tokens ...`
- `evse_sim/cli.py`: `evfleet sim` (`--provision-redis` writes stations with the csms's
  `provision_station`, injected here)
- `optimizer/cli.py`: `evfleet optimize`
- `optimizer/worker_cli.py`: `evfleet optimizer` (the worker)
- `evse_sim/iso15118/cli.py`: `evfleet iso15118 ...` (Josev environment, bridge)
- `evfleet/app/demo/cli.py`: `evfleet demo`

Modules import heavy dependencies (Pyomo, FastAPI, ...) inside command bodies so that
`evfleet --help` stays fast.
"""

from __future__ import annotations

from typing import Any

import typer

app = typer.Typer(
    name="evfleet",
    help="evfleet: OCPP 2.0.1 CSMS, fleet schedule optimizer and EVSE simulator.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    add_completion=False,
)


async def _provision_station(*args: Any, **kwargs: Any) -> None:
    """The csms's `provision_station`, imported when `evfleet sim --provision-redis` runs."""
    from csms.store.provisioning import provision_station

    await provision_station(*args, **kwargs)


def _register_all() -> None:
    from csms.api.cli import register as register_tokens
    from csms.cli_commands import register as register_csms
    from evfleet.app.demo.cli import register as register_demo
    from evse_sim.cli import register as register_sim
    from evse_sim.iso15118.cli import register as register_iso15118
    from optimizer.cli import register as register_optimizer
    from optimizer.worker_cli import register as register_worker

    register_csms(app)
    register_tokens(app)
    register_sim(app, provision_station=_provision_station)
    register_optimizer(app)
    register_worker(app)
    register_iso15118(app)
    register_demo(app)


_register_all()


def main() -> None:
    """Entry point of the `evfleet` console script (exit codes: docs/csms.md, "Exit codes").

    Usage errors (bad flags or values) print one line and exit 2, like every error of ours.
    """
    import sys

    from typer.exceptions import TyperException

    try:
        code = app(standalone_mode=False)
    except TyperException as err:  # click's UsageError / ClickException (typer vendors click)
        if type(err).__name__ == "NoArgsIsHelpError":  # `evfleet` or a group alone: its help
            typer.echo(err.format_message(), err=True)
            sys.exit(2)
        ctx = getattr(err, "ctx", None)
        where = f"{ctx.command_path}: " if ctx is not None else ""
        hint = " (see --help)" if getattr(err, "exit_code", 1) == 2 else ""
        typer.echo(f"error: {where}{err.format_message()}{hint}", err=True)
        sys.exit(getattr(err, "exit_code", 1))
    except typer.Abort:
        typer.echo("aborted", err=True)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
